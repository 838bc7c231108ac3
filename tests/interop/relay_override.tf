# An override file (Terraform merges *_override.tf into the blocks of the
# same name): site-2 sits behind relay-1, so on NVFlare 2.9 the server's and
# every client's kit map its cell name relay-1.site-2 to its certificate
# (auth_identity_map), as `nvflare provision` does. Earlier lines ignore it.

resource "flare_startup_kit" "server" {
  relayed_clients = [flare_client.site2.descriptor]
}

resource "flare_clients" "site" {
  relayed_clients = [flare_client.site2.descriptor]
}

resource "flare_startup_kit" "site2" {
  relayed_clients = [flare_client.site2.descriptor]
}
