# The Dashboard to manage (NVFlare's own, or flare-dashboard), as its
# project admin; the password comes from FLARE_DASHBOARD_PASSWORD.
provider "flare" {
  dashboard = {
    url     = "https://dashboard.example.com:8443"
    email   = "admin@nvidia.com"
    ca_cert = "web-ca.pem"
  }
}

resource "flare_dashboard_project" "study" {
  short_name      = "study"
  server1         = "server1.example.com"
  title           = "Multi-site study"
  description     = "Sign up with your organization's email."
  nvflare_version = "2.9"
  fed_learn_port  = 8002
  admin_port      = 8003

  # Freezing makes the Dashboard's root CA and opens sign-up; it cannot be
  # undone, and a frozen project's fields cannot change.
  frozen = true
}
