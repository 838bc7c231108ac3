# The confidential VM a site launches for the FL server.
resource "flare_cvm_kit" "server" {
  project_id         = flare_project.example.id
  startup_kit_dir    = flare_startup_kit.server.kit_dir
  startup_kit_sha256 = flare_startup_kit.server.kit_sha256
  output_dir         = "cvm"

  compute_env            = "onprem_cvm"
  cc_cpu_mechanism       = "amd_sev_snp"
  role                   = "server"
  root_drive_size        = 16
  applog_drive_size      = 1
  user_config_drive_size = 1
  user_data_drive_size   = 8
  docker_archive         = "images/nvflare-server.tar.gz" # docker save nvflare/server | gzip
  user_config            = { "extra.conf" = "conf/extra.conf" }
  allowed_ports          = [8002, 8003]
  allowed_out_ports      = [443]
  hosts_entries          = { "server1" = "10.0.0.10" }
  cc_issuers = [{
    id               = "snp_authorizer"
    path             = "nvflare.app_opt.confidential_computing.snp_authorizer.SNPAuthorizer"
    token_expiration = 100
  }]
  check_frequency = 120

  vcpus      = 4
  vcpu_type  = "EPYC-Genoa"
  memory_mib = 8192
  firmware   = "/usr/share/ovmf/OVMF.amdsev.fd"
  # Debian's 6.12 cloud kernel (make guest-kernel): it has the sev-guest
  # driver; its modules come from build/guest-kernel/lib/modules/<version>.
  kernel    = "build/guest-kernel/boot/vmlinuz-6.12.117+deb12-cloud-amd64"
  host_data = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

  # No initrd: the kit gets its own, with flare-init (make flare-init) as
  # /init. It attests to the project admin's flare-kbs for the encrypted
  # root's key; Terraform writes the key and the rule for this kit's
  # measurement into the broker's Vault KV mount, never into state.
  guest_init = "build/bin/flare-init"
  key_release = {
    url         = "https://kbs.example.org:8999"
    ca_cert_pem = file("kbs-ca.pem")
    vault_mount = "kbs"
  }
}

output "server_measurement" {
  value = flare_cvm_kit.server.expected_measurement
}
