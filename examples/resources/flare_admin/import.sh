# <email>@<project id>
terraform import flare_admin.lead 'lead@hospital-a.org@local:.flare-ca?nvflare=2.9'
