resource "flare_server" "server1" {
  project_id     = flare_project.example.id
  name           = "server1"
  org            = "nvidia"
  default_host   = "fl.example.com"
  host_names     = ["fl-backup.example.com"]
  fed_learn_port = 8002
  admin_port     = 8003
}
