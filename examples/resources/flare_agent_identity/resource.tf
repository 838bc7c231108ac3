# flare-agent's own identity for site-1: a new key and a certificate that
# names site-1's agent (CN "site-1:flare-agent"), never the site's
# participant certificate. The site host runs flare-agent from this kit
# (agent.crt, agent.key, rootCA.pem, agent.yaml); the site's startup kit,
# with the participant's key, goes only into the CVM kit.
resource "flare_agent_identity" "site_1" {
  project_id = flare_project.p.id
  site       = flare_client.site["site-1"].name
  org        = "nvidia"
  output_dir = "${path.module}/agents/site-1"

  # How clients reach the agent (its URL's host): the certificate's names.
  listen = ["site-1.example.com"]
  port   = 8443
}

# On the site host:
#   cp -r agents/site-1 /etc/flare-agent/site-1
#   flare-agent serve --config /etc/flare-agent/site-1/agent.yaml
