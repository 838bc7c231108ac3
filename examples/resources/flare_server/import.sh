# <name>@<project id>
terraform import flare_server.server1 'server1@local:.flare-ca?nvflare=2.9'
