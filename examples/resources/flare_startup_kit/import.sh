# The kit directory. The next apply rewrites the kit from configuration.
terraform import flare_startup_kit.server kits/server1
