terraform {
  required_providers {
    flare = {
      source = "flarekit/flare"
    }
  }
}

# The provider needs no settings: the embedded local CA keeps its keys in
# the directory each flare_project names.
provider "flare" {}
