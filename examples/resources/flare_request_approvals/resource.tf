# NVFlare 2.9 distributed provisioning for many sites, as one resource.
# Each site runs `nvflare cert request --participant site.yaml` (its private
# key stays on the site) and sends <name>.request.zip; drop them into
# requests/. Every request is checked at plan time; apply approves the new
# ones in parallel and writes approved/<name>.signed.zip, leaving the other
# approvals untouched. A request removed from requests/ loses its approval.
# Each site then runs
#   nvflare package <name>.signed.zip --fingerprint <rootca_fingerprint_sha256>
# Packaged kits know the server by the host they dial, so the flare_server
# is named after its host.
resource "flare_request_approvals" "sites" {
  project_id   = flare_project.example.id
  server       = flare_server.fl.descriptor
  request_zips = [for f in fileset("${path.module}/requests", "*.request.zip") : "${path.module}/requests/${f}"]
  output_dir   = "approved"
}

# Participant name => the signed zip to return to that site.
output "signed_zips" {
  value = flare_request_approvals.sites.signed_zips
}

# Give this to the sites out of band, for `nvflare package --fingerprint`.
output "rootca_fingerprint" {
  value = flare_request_approvals.sites.rootca_fingerprint_sha256
}
