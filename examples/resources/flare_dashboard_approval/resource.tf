# Approve every site of one organization that registered on the Dashboard,
# and its lead.
data "flare_dashboard_registrations" "hospital_a" {
  organization = "hospital_a"
}

resource "flare_dashboard_approval" "sites" {
  for_each = toset([for c in data.flare_dashboard_registrations.hospital_a.clients : c.name])
  kind     = "client"
  name     = each.key
}

resource "flare_dashboard_approval" "lead" {
  kind = "user"
  name = "lead@hospital-a.org"
}

# Refuse a user (flare-dashboard then refuses their logins).
resource "flare_dashboard_approval" "intruder" {
  kind           = "user"
  name           = "someone@example.com"
  approval_state = -1
}
