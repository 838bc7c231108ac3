# A whole NVFlare federation: one server, an admin and a client per name in
# var.clients. `terraform apply` writes a startup kit per participant to
# ./kits/; the root CA and private keys stay in ./.flare-ca/ (mode 0600).

terraform {
  required_providers {
    flare = {
      source = "flarekit/flare"
    }
  }
}

provider "flare" {}

variable "nvflare_version" {
  description = "NVIDIA FLARE release line the sites run (2.7, 2.8 or 2.9); null means the provider's default, the newest."
  type        = string
  default     = null
}

variable "clients" {
  description = "Client (site) names; adding one issues one certificate and writes one kit."
  type        = list(string)
  default     = ["site-1", "site-2"]
}

variable "kits_dir" {
  description = "Where the startup kits are written."
  type        = string
  default     = "kits"
}

variable "server_host" {
  description = "Host name clients and admins dial to reach the server; null means the server's name."
  type        = string
  default     = null
}

variable "fed_learn_port" {
  description = "Server port for clients."
  type        = number
  default     = 8002
}

variable "admin_port" {
  description = "Server port for admin consoles."
  type        = number
  default     = 8003
}

variable "ca_dir" {
  description = "Where the root CA key and the participants' keys are kept."
  type        = string
  default     = ".flare-ca"
}

variable "ca_backend" {
  description = "local (root key in ca_dir) or vault_transit (root key in Vault Transit; set VAULT_ADDR and VAULT_TOKEN)."
  type        = string
  default     = "local"
}

variable "vault_key_name" {
  description = "Transit key that holds the root CA key when ca_backend is vault_transit."
  type        = string
  default     = "flare-quickstart-root"
}

resource "flare_project" "quickstart" {
  name            = "quickstart"
  description     = "NVFlare quickstart federation"
  nvflare_version = var.nvflare_version
  ca = {
    backend  = var.ca_backend
    dir      = var.ca_dir
    key_name = var.ca_backend == "vault_transit" ? var.vault_key_name : null
  }
}

resource "flare_server" "server1" {
  project_id     = flare_project.quickstart.id
  name           = "server1"
  org            = "nvidia"
  default_host   = var.server_host
  fed_learn_port = var.fed_learn_port
  admin_port     = var.admin_port
}

resource "flare_admin" "admin" {
  project_id = flare_project.quickstart.id
  name       = "admin@nvidia.com"
  org        = "nvidia"
  role       = "project_admin"
}

# All clients in one resource: keys are issued in parallel and adding a
# name to var.clients issues one certificate and writes one kit. (For a few
# clients, flare_client + flare_startup_kit per site work the same way.)
resource "flare_clients" "site" {
  project_id = flare_project.quickstart.id
  server     = flare_server.server1.descriptor
  output_dir = var.kits_dir
  clients    = { for name in var.clients : name => { org = "nvidia" } }
}

resource "flare_startup_kit" "server" {
  participant = flare_server.server1.descriptor
  output_dir  = var.kits_dir
}

resource "flare_startup_kit" "admin" {
  participant = flare_admin.admin.descriptor
  server      = flare_server.server1.descriptor
  output_dir  = var.kits_dir
}

output "kits" {
  description = "Startup kit directories by participant."
  value = merge(
    { (flare_server.server1.name) = flare_startup_kit.server.kit_dir },
    { (flare_admin.admin.name) = flare_startup_kit.admin.kit_dir },
    flare_clients.site.kit_dirs,
  )
}

output "root_ca_fingerprint" {
  description = "SHA-256 of the project's root certificate."
  value       = flare_project.quickstart.root_ca_fingerprint
}
