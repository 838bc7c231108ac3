# The server host's flare-agent serves with its own agent kit, never
# server1's startup kit (which goes only into the CVM kit).
resource "flare_agent_identity" "server1" {
  project_id = flare_project.p.id
  site       = flare_server.server1.name
  org        = "nvidia"
  output_dir = "${path.module}/agents/server1"
  listen     = ["server1.example.com"]
}

# Launch the server's CVM kit on the site's flare-agent and wait until the
# guest's SEV-SNP report verifies against the kit. The agent must present
# server1's agent certificate (CN "server1:flare-agent").
resource "flare_cvm_instance" "server" {
  agent_url    = "https://server1.example.com:8443"
  auth_kit_dir = flare_startup_kit.admin.kit_dir # a project_admin's kit
  kit_dir      = flare_cvm_kit.server.kit_dir
  kit_sha256   = flare_cvm_kit.server.kit_sha256
  # The agent runs on another host: upload the kit instead of naming a path there.
  archive       = flare_cvm_kit.server.archive_path
  minimum_tcb   = "0x1500000000000004"
  ready_timeout = "10m"
}

output "server_guest_key" {
  value = flare_cvm_instance.server.guest_key
}
