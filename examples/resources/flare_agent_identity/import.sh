# <output_dir>@<project_id>: the agent kit folder and the project it belongs to.
terraform import flare_agent_identity.site_1 'agents/site-1@local:.flare-ca?nvflare=2.9'
