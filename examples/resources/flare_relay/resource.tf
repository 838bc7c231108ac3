resource "flare_relay" "edge" {
  project_id   = flare_project.example.id
  name         = "relay-1"
  org          = "nvidia"
  default_host = "relay1.example.com"
  port         = 8102
}

# A client that reaches the server through the relay.
resource "flare_client" "remote" {
  project_id = flare_project.example.id
  name       = "site-remote"
  org        = "hospital_b"
  connect_to = flare_relay.edge.name
}
