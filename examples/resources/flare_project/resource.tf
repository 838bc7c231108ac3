resource "flare_project" "example" {
  name          = "example_project"
  description   = "Federated learning across three hospitals"
  validity_days = 3650

  # The NVIDIA FLARE release line the sites run: "2.7", "2.8" or "2.9"
  # (the default, the newest). Moving an applied project to a newer line
  # rewrites every kit and keeps every key and certificate.
  nvflare_version = "2.9"

  # The root key and every participant's key live here, mode 0600.
  # Keep the directory out of version control and back it up.
  ca = {
    backend = "local"
    dir     = ".flare-ca"
  }
}
