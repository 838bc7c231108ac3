# <name>@<project id>
terraform import flare_relay.edge 'relay-1@local:.flare-ca?nvflare=2.9'
