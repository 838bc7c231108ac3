# Clients behind a relay: on NVFlare 2.9 the server's and every client's
# kit name them (auth_identity_map), so each of those kits lists them.
locals {
  relayed_clients = [flare_client.remote.descriptor]
}

resource "flare_startup_kit" "server" {
  participant     = flare_server.server1.descriptor
  output_dir      = "kits"
  relayed_clients = local.relayed_clients
}

resource "flare_startup_kit" "site" {
  for_each        = flare_client.site
  participant     = each.value.descriptor
  server          = flare_server.server1.descriptor
  output_dir      = "kits"
  archive         = "tgz" # also writes kits/<name>.tgz to hand to the site
  relayed_clients = local.relayed_clients
}

resource "flare_startup_kit" "remote" {
  participant     = flare_client.remote.descriptor
  server          = flare_server.server1.descriptor
  relay           = flare_relay.edge.descriptor
  output_dir      = "kits"
  relayed_clients = local.relayed_clients
}
