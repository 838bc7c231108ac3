# The launch digest an SEV-SNP guest must report, computed as sev-snp-measure does.
data "flare_snp_measurement" "server" {
  ovmf           = "/usr/share/ovmf/OVMF.amdsev.fd"
  kernel         = "/boot/vmlinuz-6.1.0-cloud-amd64"
  initrd         = "${path.module}/initrd.img"
  cmdline        = "console=ttyS0 root=/dev/vda"
  vcpus          = 4
  vcpu_type      = "EPYC-v4"
  guest_features = 1
}

output "expected_measurement" {
  value = data.flare_snp_measurement.server.measurement
}
