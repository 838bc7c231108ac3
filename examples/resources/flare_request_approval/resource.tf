# NVFlare 2.9 distributed provisioning with Terraform as the approver.
# The site runs `nvflare cert request --participant site.yaml` (its private
# key stays on the site) and sends <name>.request.zip; Terraform checks it at
# plan time and writes approved/<name>.signed.zip. The site then runs
#   nvflare package <name>.signed.zip --fingerprint <rootca_fingerprint_sha256>
# to make its startup kit. Packaged kits know the server by the host they
# dial, so the flare_server is named after its host.
resource "flare_request_approval" "hospital_b" {
  project_id  = flare_project.example.id
  server      = flare_server.fl.descriptor
  request_zip = "requests/hospital-b.request.zip"
  output_dir  = "approved"

  # Optional assertions: the plan fails if the request asks for anything else.
  participant_type = "client"
  org              = "hospital_b"
}

# An admin approved from a bare CSR: the CSR names the admin and the org;
# the type and role are the approver's.
resource "flare_request_approval" "carol" {
  project_id       = flare_project.example.id
  server           = flare_server.fl.descriptor
  csr_pem          = file("requests/carol@hospital-b.org.csr")
  participant_type = "admin"
  role             = "lead"
  output_dir       = "approved"
}

output "hospital_b_signed_zip" {
  value = flare_request_approval.hospital_b.signed_zip
}

# Give this to the site out of band, for `nvflare package --fingerprint`.
output "rootca_fingerprint" {
  value = flare_request_approval.hospital_b.rootca_fingerprint_sha256
}
