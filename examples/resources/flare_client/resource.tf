resource "flare_client" "site" {
  for_each   = toset(["site-1", "site-2"])
  project_id = flare_project.example.id
  name       = each.key
  org        = "hospital_a"

  num_gpus           = 2
  mem_per_gpu_in_gib = 16

  # Issue a new key and certificate 30 days before expiry.
  early_renewal_days = 30
}
