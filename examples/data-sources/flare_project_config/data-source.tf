# Move a project provisioned with `nvflare provision` to Terraform.
data "flare_project_config" "legacy" {
  path = "${path.module}/project.yml"
}

resource "flare_project" "migrated" {
  name        = data.flare_project_config.legacy.name
  description = data.flare_project_config.legacy.description
}

resource "flare_client" "site" {
  for_each           = data.flare_project_config.legacy.clients
  project_id         = flare_project.migrated.id
  name               = each.key
  org                = each.value.org
  num_gpus           = each.value.num_gpus
  mem_per_gpu_in_gib = each.value.mem_per_gpu_in_gib
}
