package provider

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

const exampleProjectYML = `api_version: 3
name: example_project
description: NVIDIA FLARE sample project yaml file
participants:
  - name: server1
    type: server
    org: nvidia
    fed_learn_port: 8002
  - name: relay-1
    type: relay
    org: nvidia
    port: 8102
  - name: site-1
    type: client
    org: nvidia
    connect_to: relay-1
  - name: site-2
    type: client
    org: acme
  - name: admin@nvidia.com
    type: admin
    org: nvidia
    role: project_admin
builders:
  - path: nvflare.lighter.impl.workspace.WorkspaceBuilder
    args:
      template_file: master_template.yml
`

// TestAccProjectConfig migrates a project.yml: the data source parses it
// and for_each turns its clients into flare_client resources.
func TestAccProjectConfig(t *testing.T) {
	dir := t.TempDir()
	yml := filepath.Join(dir, "project.yml")
	if err := os.WriteFile(yml, []byte(exampleProjectYML), 0o644); err != nil {
		t.Fatal(err)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config: fmt.Sprintf(`
data "flare_project_config" "old" {
  path = %[1]q
}
resource "flare_project" "p" {
  name = data.flare_project_config.old.name
  ca   = { dir = %[2]q }
}
locals {
  # The test framework cannot address for_each instances; real
  # configurations would use for_each = data.flare_project_config.old.clients.
  sites = sort(keys(data.flare_project_config.old.clients))
}
resource "flare_client" "site" {
  count      = length(local.sites)
  project_id = flare_project.p.id
  name       = local.sites[count.index]
  org        = data.flare_project_config.old.clients[local.sites[count.index]].org
}
output "site_2_org" {
  value = flare_client.site[1].org
}
`, yml, filepath.Join(dir, "ca")),
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue("data.flare_project_config.old", tfjsonpath.New("name"), knownvalue.StringExact("example_project")),
				statecheck.ExpectKnownValue("data.flare_project_config.old", tfjsonpath.New("participants"), knownvalue.ListSizeExact(5)),
				// admin_port defaults to fed_learn_port, as NVFlare does.
				statecheck.ExpectKnownValue("data.flare_project_config.old", tfjsonpath.New("servers").AtMapKey("server1").AtMapKey("admin_port"), knownvalue.Int64Exact(8002)),
				statecheck.ExpectKnownValue("data.flare_project_config.old", tfjsonpath.New("clients").AtMapKey("site-1").AtMapKey("connect_to"), knownvalue.StringExact("relay-1")),
				statecheck.ExpectKnownValue("data.flare_project_config.old", tfjsonpath.New("admins").AtMapKey("admin@nvidia.com").AtMapKey("role"), knownvalue.StringExact("project_admin")),
				statecheck.ExpectKnownValue("data.flare_project_config.old", tfjsonpath.New("relays").AtMapKey("relay-1").AtMapKey("port"), knownvalue.Int64Exact(8102)),
				statecheck.ExpectKnownOutputValue("site_2_org", knownvalue.StringExact("acme")),
			},
		}},
	})
}
