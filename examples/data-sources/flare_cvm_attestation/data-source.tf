# A fresh attestation of the server's CVM, verified by the provider against
# the kit Terraform built; the plan fails when it does not verify.
resource "random_id" "nonce" {
  byte_length = 32
}

data "flare_cvm_attestation" "server" {
  agent_url    = "https://server1.example.com:8443"
  auth_kit_dir = flare_startup_kit.admin.kit_dir
  kit_dir      = flare_cvm_kit.server.kit_dir
  cvm_id       = flare_cvm_instance.server.id
  nonce        = random_id.nonce.hex

  lifecycle {
    postcondition {
      condition     = self.verified && !self.simulated
      error_message = "server CVM does not attest: ${join("; ", self.reasons)}"
    }
  }
}

output "server_tcb" {
  value = data.flare_cvm_attestation.server.tcb.reported
}
