# Import an existing CA directory made by this provider.
terraform import flare_project.example .flare-ca
