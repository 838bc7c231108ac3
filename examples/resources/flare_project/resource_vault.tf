# The root CA key as a non-exportable Vault Transit key.
provider "flare" {
  vault = {
    address = "https://vault.example.com:8200"
    approle = {
      role_id   = var.vault_role_id
      secret_id = var.vault_secret_id
    }
  }
}

resource "flare_project" "vaulted" {
  name = "example_project"
  ca = {
    backend       = "vault_transit"
    dir           = ".flare-ca" # root certificate and participant keys
    transit_mount = "transit"
    key_name      = "flare-example-root"
    key_type      = "rsa-2048"
  }
}
