package provider

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/vault/api"
)

// TestAccVaultKeyStore: with the vault_transit backend nothing lands on
// the runner's disk but the kits: the participants' keys are in Vault KV
// (written once, create-only), the root certificate is in state with a
// copy in KV. A KV entry soft-deleted in Vault is a plan error with the
// restore hint (and `kv undelete` restores it); removing a participant
// deletes its entry; a Transit key that disappears is an error too.
func TestAccVaultKeyStore(t *testing.T) {
	client := vaultTestClient(t)
	dir := t.TempDir()
	key := uniqueKey(t)
	kits := filepath.Join(dir, "kits")
	kvBase := "flare/" + key + "/v1"
	config := func(clients ...string) string {
		var b strings.Builder
		for _, c := range clients {
			fmt.Fprintf(&b, `
resource "flare_client" %[1]q {
  project_id = flare_project.p.id
  name       = %[2]q
  org        = "nvidia"
}
resource "flare_startup_kit" %[1]q {
  participant = flare_client.%[1]s.descriptor
  server      = flare_server.server1.descriptor
  output_dir  = %[3]q
}
`, resourceName(c), c, kits)
		}
		return vaultProjectConfig(dir, key, "", "") + fmt.Sprintf(`
resource "flare_server" "server1" {
  project_id = flare_project.p.id
  name       = "server1"
  org        = "nvidia"
}
resource "flare_startup_kit" "server" {
  participant = flare_server.server1.descriptor
  output_dir  = %q
}
`, kits) + b.String()
	}
	kvHas := func(name string, want bool) resource.TestCheckFunc {
		return func(*terraform.State) error {
			s, err := client.KVv2("secret").Get(context.Background(), kvBase+"/"+name)
			has := err == nil && s != nil && s.Data != nil
			if has != want {
				return fmt.Errorf("KV secret/%s/%s: present %v, want %v (err %v)", kvBase, name, has, want, err)
			}
			return nil
		}
	}
	empty := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}
	var keyFP string
	rotate := func(cfg string) string {
		return strings.Replace(cfg, `name       = "site-1"`, `name       = "site-1"`+"\n  rotation_trigger = \"2027-01\"", 1)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             resource.ComposeAggregateTestCheckFunc(kvHas("root", false), kvHas("participants/server1", false)),
		Steps: []resource.TestStep{
			{
				Config: config("site-1", "site-2"),
				Check: resource.ComposeAggregateTestCheckFunc(
					checkNoPrivateKeyInState,
					resource.TestMatchResourceAttr("flare_project.p", "id", regexp.MustCompile(`^vault_transit:kv:secret:flare#transit/`+key+`@v1\?nvflare=2\.9$`)),
					resource.TestCheckResourceAttr("flare_client.site_1", "key_file", "vault-kv:secret/"+kvBase+"/participants/site-1"),
					kvHas("root", true), kvHas("participants/server1", true), kvHas("participants/site-1", true),
					checkKits(kits, map[string]string{"server1": "server", "site-1": "client", "site-2": "client"}),
					func(*terraform.State) error {
						if _, err := os.Stat(filepath.Join(dir, "ca")); !os.IsNotExist(err) {
							return fmt.Errorf("the vault_transit backend made a CA directory (err=%v)", err)
						}
						return nil
					},
				),
			},
			{
				// site-2's key entry is (soft-)deleted in Vault: an error, not a new key.
				PreConfig: func() {
					if err := client.KVv2("secret").Delete(context.Background(), kvBase+"/participants/site-2"); err != nil {
						t.Fatal(err)
					}
				},
				Config:      config("site-1", "site-2"),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Participant\s+Key\s+Missing.*is\s+not\s+in\s+Vault\s+KV.*kv\s+undelete`),
			},
			{
				PreConfig: func() {
					if err := client.KVv2("secret").Undelete(context.Background(), kvBase+"/participants/site-2", []int{1}); err != nil {
						t.Fatal(err)
					}
				},
				Config:           config("site-1", "site-2"),
				ConfigPlanChecks: empty,
			},
			{
				// Removing a participant deletes its key entry.
				Config: config("site-1"),
				Check:  kvHas("participants/site-2", false),
			},
			{
				// The root copy in KV is gone: the error says how to write it back from state.
				PreConfig: func() {
					if err := client.KVv2("secret").Delete(context.Background(), kvBase+"/root"); err != nil {
						t.Fatal(err)
					}
				},
				Config:      config("site-1"),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Root\s+Certificate\s+Missing\s+From\s+Vault\s+KV.*root_ca_pem.*kv\s+put`),
			},
			{
				PreConfig: func() {
					if err := client.KVv2("secret").Undelete(context.Background(), kvBase+"/root", []int{1}); err != nil {
						t.Fatal(err)
					}
				},
				Config:           config("site-1"),
				ConfigPlanChecks: empty,
			},
			{
				// A token that cannot see the Transit key: refresh fails, nothing is replaced.
				PreConfig:   func() { t.Setenv("VAULT_TOKEN", denyToken(t, client)) },
				Config:      config("site-1"),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)(Cannot\s+Read\s+Root\s+CA|Cannot\s+Reach\s+Transit\s+Key).*permission\s+denied.*Nothing\s+was\s+planned.*terraform\s+apply\s+-refresh=false`),
			},
			{
				PreConfig:        func() { t.Setenv("VAULT_TOKEN", client.Token()) },
				Config:           config("site-1"),
				ConfigPlanChecks: empty,
				Check: func(s *terraform.State) error {
					keyFP = s.RootModule().Resources["flare_client.site_1"].Primary.Attributes["key_fingerprint"]
					return nil
				},
			},
			{
				// rotation_trigger rotates a key kept in KV: the entry is
				// deleted and created again with the new key.
				Config: rotate(config("site-1")),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_client.site_1", plancheck.ResourceActionDestroyBeforeCreate),
					plancheck.ExpectResourceAction("flare_server.server1", plancheck.ResourceActionNoop),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					kvHas("participants/site-1", true),
					checkKits(kits, map[string]string{"server1": "server", "site-1": "client"}),
					func(s *terraform.State) error {
						if s.RootModule().Resources["flare_client.site_1"].Primary.Attributes["key_fingerprint"] == keyFP {
							return fmt.Errorf("rotation_trigger did not give site-1 a new key")
						}
						return nil
					},
				),
			},
			{Config: rotate(config("site-1")), ConfigPlanChecks: empty},
		},
	})
}

// denyToken is a token with no policy at all.
func denyToken(t *testing.T, client *api.Client) string {
	t.Helper()
	tok, err := client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"default"}, NoDefaultPolicy: false})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Auth.ClientToken
}
