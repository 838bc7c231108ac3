# "client:<site name>" or "user:<email>"
terraform import flare_dashboard_approval.lead user:lead@hospital-a.org
terraform import 'flare_dashboard_approval.sites["site-a1"]' client:site-a1
