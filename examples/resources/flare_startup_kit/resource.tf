resource "flare_startup_kit" "server" {
  participant = flare_server.server1.descriptor
  output_dir  = "kits"
}

resource "flare_startup_kit" "site" {
  for_each    = flare_client.site
  participant = each.value.descriptor
  server      = flare_server.server1.descriptor
  output_dir  = "kits"
  archive     = "tgz" # also writes kits/<name>.tgz to hand to the site
}

resource "flare_startup_kit" "remote" {
  participant = flare_client.remote.descriptor
  server      = flare_server.server1.descriptor
  relay       = flare_relay.edge.descriptor
  output_dir  = "kits"
}
