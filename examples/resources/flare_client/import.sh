# <name>@<project id>
terraform import 'flare_client.site["site-1"]' 'site-1@local:.flare-ca'
