# Import by "<signed zip path>@<project id>": the project id is flare_project.<name>.id, with its NVFlare line.
terraform import flare_request_approval.hospital_b 'approved/hospital-b.signed.zip@local:.flare-ca?nvflare=2.9'
