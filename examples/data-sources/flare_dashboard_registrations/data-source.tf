# Sites approved on the Dashboard become clients of a Terraform-managed
# federation, with the capacity they declared.
data "flare_dashboard_registrations" "approved" {
  approved_only = true
}

resource "flare_clients" "dashboard_sites" {
  project_id = flare_project.p.id
  clients = {
    for c in data.flare_dashboard_registrations.approved.clients : c.name => {
      org                = c.organization
      num_gpus           = c.num_gpus
      mem_per_gpu_in_gib = c.mem_per_gpu_in_gib
    }
  }
}
