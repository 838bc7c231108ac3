# A Dashboard has one project.
terraform import flare_dashboard_project.study project
