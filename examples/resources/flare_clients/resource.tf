# A thousand sites as one resource: keys are issued in parallel, and
# adding one name issues one certificate and writes one kit.
variable "sites" {
  type    = list(string)
  default = ["site-1", "site-2", "site-3"]
}

resource "flare_clients" "sites" {
  project_id = flare_project.example.id
  server     = flare_server.server1.descriptor
  output_dir = "kits"
  archive    = "tgz"
  clients = {
    for name in var.sites : name => {
      org                = "hospital_a"
      num_gpus           = 1
      mem_per_gpu_in_gib = 24
    }
  }
}

output "site_kits" {
  value = flare_clients.sites.kit_dirs
}
