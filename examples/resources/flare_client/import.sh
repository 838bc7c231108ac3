# Import by "<name>@<project id>": the project id is flare_project.<name>.id, with its NVFlare line.
terraform import 'flare_client.site["site-1"]' 'site-1@local:.flare-ca?nvflare=2.9'
