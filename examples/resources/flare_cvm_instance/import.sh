# <cvm id>,<agent_url>,<auth_kit_dir>,<kit_dir>: the agent, the credentials to
# read it and the kit the CVM runs (GET /v1/cvms on the agent lists the ids).
terraform import flare_cvm_instance.server '1a2b3c4d-9f8e7d,https://server1.example.com:8443,kits/admin@nvidia.com,cvm/server1/cvm_1a2b3c4d'
