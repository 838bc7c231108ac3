package provider

import (
	"fmt"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
)

// TestAccValidation checks that each bad input fails at plan time with a
// diagnostic naming the attribute and the fix.
func TestAccValidation(t *testing.T) {
	dir := t.TempDir()
	project := fmt.Sprintf(`
resource "flare_project" "p" {
  name = "val"
  ca   = { dir = %q }
}
`, filepath.Join(dir, "ca"))
	kits := filepath.Join(dir, "kits")
	server := `
resource "flare_server" "s" {
  project_id = flare_project.p.id
  name       = "server1"
  org        = "nvidia"
}
`
	cases := []struct {
		name   string
		config string
		want   string
	}{
		{"project name", `resource "flare_project" "bad" { name = "has space" }`, `project name "has space" is not allowed`},
		{"project name too long", `resource "flare_project" "bad" { name = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }`, `longer than 63`},
		{"ca backend", `resource "flare_project" "bad" {
  name = "x"
  ca   = { backend = "hsm" }
}`, `ca.backend value must be one of`},
		{"client name with dot", project + `resource "flare_client" "c" {
  project_id = flare_project.p.id
  name       = "site.1"
  org        = "nvidia"
}`, `client name "site.1" is not allowed`},
		{"server name", project + `resource "flare_server" "bad" {
  project_id = flare_project.p.id
  name       = "server_1"
  org        = "nvidia"
}`, `"server_1" is not a valid host name`},
		{"admin email", project + `resource "flare_admin" "a" {
  project_id = flare_project.p.id
  name       = "admin"
  org        = "nvidia"
  role       = "project_admin"
}`, `must be an email address`},
		{"admin role", project + `resource "flare_admin" "a" {
  project_id = flare_project.p.id
  name       = "a@example.com"
  org        = "nvidia"
  role       = "superuser"
}`, `role value must be one of`},
		{"org", project + `resource "flare_client" "c" {
  project_id = flare_project.p.id
  name       = "site-1"
  org        = "nv-idia"
}`, `org "nv-idia" is not allowed`},
		{"port range", project + `resource "flare_server" "s" {
  project_id     = flare_project.p.id
  name           = "server1"
  org            = "nvidia"
  fed_learn_port = 70000
}`, `fed_learn_port value must be between 1 and 65535`},
		{"admin port range", project + `resource "flare_server" "s" {
  project_id = flare_project.p.id
  name       = "server1"
  org        = "nvidia"
  admin_port = 0
}`, `admin_port value must be between 1 and 65535`},
		{"host names", project + `resource "flare_server" "s" {
  project_id = flare_project.p.id
  name       = "server1"
  org        = "nvidia"
  host_names = ["ok.example.com", "not ok"]
}`, `"not ok" is not a valid host name`},
		{"negative gpus", project + `resource "flare_client" "c" {
  project_id = flare_project.p.id
  name       = "site-1"
  org        = "nvidia"
  num_gpus   = -1
}`, `num_gpus value must be at least 0`},
		{"relay name on client", project + `resource "flare_client" "c" {
  project_id = flare_project.p.id
  name       = "site-1"
  org        = "nvidia"
  connect_to = "relay 1"
}`, `connect_to`},
		{"project id", `resource "flare_client" "c" {
  project_id = "nope"
  name       = "site-1"
  org        = "nvidia"
}`, `project_id "nope" is not a flare_project id`},
		{"kit without server", project + server + fmt.Sprintf(`resource "flare_client" "c" {
  project_id = flare_project.p.id
  name       = "site-1"
  org        = "nvidia"
}
resource "flare_startup_kit" "k" {
  participant = flare_client.c.descriptor
  output_dir  = %q
}`, kits), `set server =\s+flare_server.<name>.descriptor`},
		{"kit archive", project + server + fmt.Sprintf(`resource "flare_startup_kit" "k" {
  participant = flare_server.s.descriptor
  output_dir  = %q
  archive     = "rar"
}`, kits), `archive value must be one of`},
		{"descriptor garbage", fmt.Sprintf(`resource "flare_startup_kit" "k" {
  participant = "not json"
  output_dir  = %q
}`, kits), `not a participant descriptor`},
		{"validity", project + `resource "flare_client" "c" {
  project_id    = flare_project.p.id
  name          = "site-1"
  org           = "nvidia"
  validity_days = 0
}`, `validity_days value must be between 1 and 36500`},
		{"project config both", `data "flare_project_config" "x" {
  path    = "a"
  content = "b"
}`, `Exactly one of these attributes must be configured`},
		{"project config yaml", `data "flare_project_config" "x" {
  content = "api_version: 2\nname: x\n"
}`, `only api_version 3 is supported`},
	}
	// These inputs are only known once their resources exist (descriptors
	// of new participants), so the error comes at apply, before anything
	// is written.
	atApply := map[string]bool{"kit without server": true}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resource.Test(t, resource.TestCase{
				ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
				Steps: []resource.TestStep{{
					Config:      tc.config,
					PlanOnly:    !atApply[tc.name],
					ExpectError: regexp.MustCompile(tc.want),
				}},
			})
		})
	}
}
