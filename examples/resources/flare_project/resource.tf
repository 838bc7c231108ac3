resource "flare_project" "example" {
  name          = "example_project"
  description   = "Federated learning across three hospitals"
  validity_days = 3650

  # The root key and every participant's key live here, mode 0600.
  # Keep the directory out of version control and back it up.
  ca = {
    backend = "local"
    dir     = ".flare-ca"
  }
}
