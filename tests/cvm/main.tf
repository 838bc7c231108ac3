# The CVM end-to-end test's federation (tests/cvm/test_cvm_federation.py):
# a server that runs as a host process from its kit, an admin, and site-1,
# whose startup kit goes into a CVM kit with its own initrd (flare-init),
# an encrypted root made from a docker-save archive with Python and
# NVFlare, and its root key and the broker's rule in flare-kbs's store.
# With launch = true, flare_cvm_instance has site-1's flare-agent launch it.

terraform {
  required_providers {
    flare = { source = "flarekit/flare" }
  }
}

variable "ca_dir" { type = string }
variable "kits_dir" { type = string }
variable "cvm_dir" { type = string }
variable "agents_dir" { type = string }
variable "fed_learn_port" { type = number }
variable "admin_port" { type = number }
variable "docker_archive" { type = string }
variable "firmware" { type = string }
variable "kernel" { type = string }
variable "guest_init" { type = string }
variable "kbs_url" { type = string }
variable "kbs_ca_pem" { type = string }
variable "kbs_store_dir" { type = string }
variable "agent_port" { type = number }
variable "launch" {
  type    = bool
  default = false
}

# NVFlare's own CC checks (CCManager) in mock mode: there is no SEV
# hardware here, so the issuer is NVFlare's MockAuthorizer (namespace
# x-mock, named as such). With SEV-SNP it would be SNPAuthorizer.
locals {
  cc = {
    issuers = [{
      id               = "mock_authorizer"
      path             = "nvflare.app_opt.confidential_computing.mock_authorizer.MockAuthorizer"
      token_expiration = 100
    }]
    check_frequency = 120
    enabled_sites   = ["server1", "site-1"]
  }
}

resource "flare_project" "p" {
  name = "cvm-e2e"
  ca   = { dir = var.ca_dir }
}

resource "flare_server" "server1" {
  project_id     = flare_project.p.id
  name           = "server1"
  org            = "nvidia"
  fed_learn_port = var.fed_learn_port
  admin_port     = var.admin_port
}

resource "flare_admin" "admin" {
  project_id = flare_project.p.id
  name       = "admin@nvidia.com"
  org        = "nvidia"
  role       = "project_admin"
}

resource "flare_client" "site1" {
  project_id = flare_project.p.id
  name       = "site-1"
  org        = "nvidia"
}

resource "flare_startup_kit" "server" {
  participant = flare_server.server1.descriptor
  output_dir  = var.kits_dir
  cc          = local.cc
}

resource "flare_startup_kit" "admin" {
  participant = flare_admin.admin.descriptor
  server      = flare_server.server1.descriptor
  output_dir  = var.kits_dir
}

resource "flare_startup_kit" "site1" {
  participant = flare_client.site1.descriptor
  server      = flare_server.server1.descriptor
  output_dir  = var.kits_dir
  cc          = local.cc
}

resource "flare_cvm_kit" "site1" {
  project_id         = flare_project.p.id
  startup_kit_dir    = flare_startup_kit.site1.kit_dir
  startup_kit_sha256 = flare_startup_kit.site1.kit_sha256
  output_dir         = var.cvm_dir

  role                   = "client"
  root_drive_size        = 1
  applog_drive_size      = 1
  user_config_drive_size = 1
  user_data_drive_size   = 1
  docker_archive         = var.docker_archive
  # The server is a host process: QEMU's user network shows the host as 10.0.2.2.
  hosts_entries     = { "server1" = "10.0.2.2" }
  allowed_out_ports = [var.fed_learn_port, var.admin_port]

  vcpus          = 2
  memory_mib     = 2048
  firmware       = var.firmware
  kernel         = var.kernel
  guest_init     = var.guest_init
  kernel_cmdline = "console=ttyS0 panic=-1 loglevel=4"
  key_release = {
    url         = var.kbs_url
    ca_cert_pem = var.kbs_ca_pem
    store_dir   = var.kbs_store_dir
  }
}

resource "flare_agent_identity" "site1" {
  project_id = flare_project.p.id
  site       = flare_client.site1.name
  org        = "nvidia"
  output_dir = "${var.agents_dir}/site-1"
  listen     = ["127.0.0.1"]
  port       = var.agent_port
}

resource "flare_cvm_instance" "site1" {
  count           = var.launch ? 1 : 0
  agent_url       = "https://127.0.0.1:${var.agent_port}"
  auth_kit_dir    = flare_startup_kit.admin.kit_dir
  kit_dir         = flare_cvm_kit.site1.kit_dir
  kit_sha256      = flare_cvm_kit.site1.kit_sha256
  allow_simulated = true
  ready_timeout   = "10m"
}

output "kits" {
  value = {
    server1 = flare_startup_kit.server.kit_dir
    admin   = flare_startup_kit.admin.kit_dir
    site-1  = flare_startup_kit.site1.kit_dir
  }
}
output "cvm_kit" { value = flare_cvm_kit.site1.kit_dir }
output "measurement" { value = flare_cvm_kit.site1.expected_measurement }
output "agent_kit" { value = flare_agent_identity.site1.output_dir }
output "simulated" { value = var.launch ? flare_cvm_instance.site1[0].simulated : null }
