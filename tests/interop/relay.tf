# Added by `make interop` beside a copy of examples/quickstart/main.tf (the
# same Terraform directory, so it sees flare_project.quickstart and
# flare_server.server1): a relay, relay-1, and a client behind it, site-2.
# With -var 'clients=["site-1"]' the project is then
#
#   server1, admin@nvidia.com, site-1 (to the server), relay-1, site-2 (to relay-1)
#
# which tests/interop/test_kits.py also provisions with `nvflare provision`.

variable "relay_port" {
  description = "Port relay-1 listens on (a free port on 127.0.0.1)."
  type        = number
}

resource "flare_relay" "relay1" {
  project_id   = flare_project.quickstart.id
  name         = "relay-1"
  org          = "nvidia"
  default_host = "localhost"
  port         = var.relay_port
}

resource "flare_client" "site2" {
  project_id = flare_project.quickstart.id
  name       = "site-2"
  org        = "nvidia"
  connect_to = flare_relay.relay1.name
}

resource "flare_startup_kit" "relay1" {
  participant = flare_relay.relay1.descriptor
  server      = flare_server.server1.descriptor
  output_dir  = var.kits_dir
}

resource "flare_startup_kit" "site2" {
  participant = flare_client.site2.descriptor
  server      = flare_server.server1.descriptor
  relay       = flare_relay.relay1.descriptor
  output_dir  = var.kits_dir
}

output "relay_kits" {
  description = "The kits relay.tf adds, by participant (the quickstart's own are in output kits)."
  value = {
    (flare_relay.relay1.name) = flare_startup_kit.relay1.kit_dir
    (flare_client.site2.name) = flare_startup_kit.site2.kit_dir
  }
}

# site-2's flare-agent identity (flare_agent_identity): test_federation.py
# shows that NVFlare's server refuses it as a client and as an admin.
resource "flare_agent_identity" "site2" {
  project_id = flare_project.quickstart.id
  site       = flare_client.site2.name
  org        = "nvidia"
  output_dir = "${path.module}/agents/site-2"
}

output "agent_kits" {
  description = "Agent kits (flare_agent_identity), by site."
  value       = { (flare_client.site2.name) = flare_agent_identity.site2.kit_dir }
}

# The operator's copy of the root certificate, from state: a project whose
# keys live in Vault keeps no rootCA.pem on disk.
output "root_ca_pem" {
  value = flare_project.quickstart.root_ca_pem
}
