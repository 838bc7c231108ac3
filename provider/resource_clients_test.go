package provider

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
)

func clientsConfig(dir string, clients map[string]string) string {
	var entries strings.Builder
	for name, extra := range clients {
		fmt.Fprintf(&entries, "    %q = { org = \"nvidia\"%s }\n", name, extra)
	}
	return fmt.Sprintf(`
resource "flare_project" "p" {
  name = "bulk"
  ca   = { dir = %[1]q }
}
resource "flare_server" "s" {
  project_id = flare_project.p.id
  name       = "server1"
  org        = "nvidia"
}
resource "flare_clients" "sites" {
  project_id = flare_project.p.id
  server     = flare_server.s.descriptor
  output_dir = %[2]q
  clients = {
%[3]s  }
}
`, filepath.Join(dir, "ca"), filepath.Join(dir, "kits"), entries.String())
}

// TestAccClients: one resource for many clients touches only the clients
// whose entry changed.
func TestAccClients(t *testing.T) {
	dir := t.TempDir()
	kits := filepath.Join(dir, "kits")
	three := map[string]string{"site-1": "", "site-2": "", "site-3": ""}
	four := map[string]string{"site-1": "", "site-2": "", "site-3": "", "site-4": ""}
	gpus := map[string]string{"site-1": ", num_gpus = 4", "site-2": "", "site-3": "", "site-4": ""}
	var before map[string]int64
	unchangedExcept := func(changed string) resource.TestCheckFunc {
		return func(*terraform.State) error {
			after := mtimes(t, kits)
			for p, m := range before {
				if strings.HasPrefix(p, filepath.Join(kits, changed)+string(filepath.Separator)) {
					continue
				}
				if after[p] != m {
					return fmt.Errorf("%s was rewritten", p)
				}
			}
			return nil
		}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy: func(*terraform.State) error {
			if entries, _ := os.ReadDir(kits); len(entries) != 0 {
				return fmt.Errorf("kits left after destroy: %d", len(entries))
			}
			if _, err := os.Stat(filepath.Join(dir, "ca", "participants", "site-1.key")); !os.IsNotExist(err) {
				return fmt.Errorf("client key left after destroy")
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				Config: clientsConfig(dir, three),
				Check: resource.ComposeAggregateTestCheckFunc(
					checkNoPrivateKeyInState,
					resource.TestCheckResourceAttr("flare_clients.sites", "kit_sha256.%", "3"),
					resource.TestCheckResourceAttr("flare_clients.sites", "kit_dirs.site-2", filepath.Join(kits, "site-2")),
					checkKits(kits, map[string]string{"site-1": "client", "site-2": "client", "site-3": "client"}),
				),
			},
			{
				PreConfig: func() { before = mtimes(t, kits) },
				Config:    clientsConfig(dir, four),
				Check: resource.ComposeAggregateTestCheckFunc(
					unchangedExcept("site-4"),
					checkKits(kits, map[string]string{"site-4": "client"}),
				),
			},
			{
				PreConfig: func() { before = mtimes(t, kits) },
				Config:    clientsConfig(dir, gpus),
				Check: resource.ComposeAggregateTestCheckFunc(
					unchangedExcept("site-1"),
					checkJSONField(filepath.Join(kits, "site-1", "local", "resources.json.default"), []string{"components", "0", "args", "num_of_gpus"}, float64(4)),
					checkKits(kits, map[string]string{"site-1": "client"}),
				),
			},
			{
				// Drift: a deleted kit file is planned and restored; only that kit is rewritten.
				PreConfig: func() {
					os.Remove(filepath.Join(kits, "site-3", "startup", "fed_client.json"))
					before = mtimes(t, kits)
				},
				Config: clientsConfig(dir, gpus),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_clients.sites", plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					unchangedExcept("site-3"),
					checkKits(kits, map[string]string{"site-3": "client"}),
				),
			},
			{
				Config:   clientsConfig(dir, gpus),
				PlanOnly: true,
			},
			{
				// A deleted key is an error (TestAccRootOfTrust_ClientsKeyMissingFails),
				// never a silent reissue: removing the client and adding it
				// back gives it a new key and kit.
				PreConfig:   func() { os.Remove(filepath.Join(dir, "ca", "participants", "site-4.key")) },
				Config:      clientsConfig(dir, gpus),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`Client\s+Key\s+Missing`),
			},
			{
				Config: clientsConfig(dir, map[string]string{"site-1": ", num_gpus = 4", "site-2": "", "site-3": ""}),
			},
			{
				Config: clientsConfig(dir, gpus),
				Check:  checkKits(kits, map[string]string{"site-4": "client"}),
			},
			{
				// Removing a client removes its kit and key.
				Config: clientsConfig(dir, map[string]string{"site-1": ", num_gpus = 4", "site-3": "", "site-4": ""}),
				Check: func(*terraform.State) error {
					for _, p := range []string{filepath.Join(kits, "site-2"), filepath.Join(dir, "ca", "participants", "site-2.key")} {
						if _, err := os.Stat(p); !os.IsNotExist(err) {
							return fmt.Errorf("%s left after its client was removed", p)
						}
					}
					return nil
				},
			},
		},
	})
}

// clientsMockCC is a client's cc with NVFlare's MockAuthorizer, on one line
// for clientsConfig.
const clientsMockCC = `, cc = { issuers = [{ id = "mock_authorizer", path = "nvflare.app_opt.confidential_computing.mock_authorizer.MockAuthorizer", token_expiration = 100 }], check_frequency = 120, enabled_sites = ["server1", "site-1"] }`

// TestAccClients_CC: a client's cc makes its kit a CC kit, as
// flare_startup_kit's cc does, and leaves the other clients' kits alone.
func TestAccClients_CC(t *testing.T) {
	dir := t.TempDir()
	kits := filepath.Join(dir, "kits")
	ccFile := func(name string) string { return filepath.Join(kits, name, "local", "cc_manager__p_resources.json") }
	onlySite1 := func(*terraform.State) error {
		if _, err := os.Stat(ccFile("site-1")); err != nil {
			return fmt.Errorf("site-1 is a CC client: %w", err)
		}
		for _, p := range []string{ccFile("site-2"), filepath.Join(kits, "site-2", "local", "mock_authorizer__p_resources.json")} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				return fmt.Errorf("site-2 has no cc, but %s exists", p)
			}
		}
		return nil
	}
	var before map[string]int64
	site2Untouched := func(*terraform.State) error {
		after := mtimes(t, kits)
		for p, m := range before {
			if strings.HasPrefix(p, filepath.Join(kits, "site-2")+string(filepath.Separator)) && after[p] != m {
				return fmt.Errorf("%s was rewritten", p)
			}
		}
		return nil
	}
	withCC := map[string]string{"site-1": clientsMockCC, "site-2": ""}
	empty := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				// Checked at plan time, as flare_startup_kit's cc.
				Config:      clientsConfig(dir, map[string]string{"site-1": strings.Replace(clientsMockCC, "token_expiration = 100", "token_expiration = 500", 1), "site-2": ""}),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Invalid CC Setting.*token_expiration 500 must be at least 1 and below\s+check_frequency`),
			},
			{
				Config: clientsConfig(dir, withCC),
				Check: resource.ComposeAggregateTestCheckFunc(
					onlySite1,
					checkJSONField(ccFile("site-1"), []string{"components", "0", "args", "verify_frequency"}, float64(120)),
					checkKits(kits, map[string]string{"site-1": "client", "site-2": "client"}),
				),
			},
			{Config: clientsConfig(dir, withCC), ConfigPlanChecks: empty},
			{
				// Dropping cc rewrites only that kit, without the CC files.
				PreConfig: func() { before = mtimes(t, kits) },
				Config:    clientsConfig(dir, map[string]string{"site-1": "", "site-2": ""}),
				Check: resource.ComposeAggregateTestCheckFunc(
					site2Untouched,
					func(*terraform.State) error {
						if _, err := os.Stat(ccFile("site-1")); !os.IsNotExist(err) {
							return fmt.Errorf("site-1's cc was removed, but its kit still has %s", ccFile("site-1"))
						}
						return nil
					},
					checkKits(kits, map[string]string{"site-1": "client"}),
				),
			},
			{
				PreConfig: func() { before = mtimes(t, kits) },
				Config:    clientsConfig(dir, withCC),
				Check:     resource.ComposeAggregateTestCheckFunc(site2Untouched, onlySite1, checkKits(kits, map[string]string{"site-1": "client"})),
			},
			{Config: clientsConfig(dir, withCC), ConfigPlanChecks: empty},
		},
	})
}

// TestAccClients_RotationTrigger: a client's rotation_trigger rotates that
// client's key and certificate only (an update of flare_clients, not a
// replacement); an unchanged value plans nothing; a lost key is an error
// until the client's trigger changes, which gives it a new key on purpose.
func TestAccClients_RotationTrigger(t *testing.T) {
	dir := t.TempDir()
	kits := filepath.Join(dir, "kits")
	names := []string{"site-1", "site-2", "site-3"}
	config := func(triggers map[string]string) string {
		clients := map[string]string{}
		for _, n := range names {
			clients[n] = ""
			if tr := triggers[n]; tr != "" {
				clients[n] = fmt.Sprintf(", rotation_trigger = %q", tr)
			}
		}
		return clientsConfig(dir, clients)
	}
	// Fingerprints of each client's certificate and key, as in its kit and
	// in the CA directory.
	fingerprints := func() map[string]string {
		out := map[string]string{}
		for _, n := range names {
			for _, p := range []string{
				filepath.Join(kits, n, "startup", "client.crt"), filepath.Join(kits, n, "startup", "client.key"),
				filepath.Join(dir, "ca", "participants", n+".crt"), filepath.Join(dir, "ca", "participants", n+".key"),
			} {
				b, err := os.ReadFile(p)
				if os.IsNotExist(err) && strings.HasSuffix(p, ".key") && strings.Contains(p, "participants") {
					continue // a lost key (below)
				}
				if err != nil {
					t.Fatal(err)
				}
				out[p] = fmt.Sprintf("%x", sha256.Sum256(b))
			}
		}
		return out
	}
	var before map[string]string
	var beforeTimes map[string]int64
	remember := func() { before, beforeTimes = fingerprints(), mtimes(t, kits) }
	rotatedOnly := func(rotated ...string) resource.TestCheckFunc {
		return func(*terraform.State) error {
			now, times := fingerprints(), mtimes(t, kits)
			for p, fp := range before {
				var mine bool
				for _, n := range rotated {
					mine = mine || strings.Contains(p, string(filepath.Separator)+n+string(filepath.Separator)) || strings.HasSuffix(p, string(filepath.Separator)+n+filepath.Ext(p))
				}
				if mine && now[p] == fp {
					return fmt.Errorf("%s: not rotated", p)
				}
				if !mine && now[p] != fp {
					return fmt.Errorf("%s changed, but only %v rotate", p, rotated)
				}
			}
			for p, m := range beforeTimes {
				mine := false
				for _, n := range rotated {
					mine = mine || strings.HasPrefix(p, filepath.Join(kits, n)+string(filepath.Separator))
				}
				if !mine && times[p] != m {
					return fmt.Errorf("%s was rewritten, but only %v rotate", p, rotated)
				}
			}
			return checkKits(kits, map[string]string{"site-1": "client", "site-2": "client", "site-3": "client"})(nil)
		}
	}
	update := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("flare_clients.sites", plancheck.ResourceActionUpdate)}}
	empty := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{Config: config(nil)},
			// Setting it rotates site-1 only ...
			{PreConfig: remember, Config: config(map[string]string{"site-1": "2027-01"}), ConfigPlanChecks: update, Check: rotatedOnly("site-1")},
			// ... an unchanged value plans nothing ...
			{Config: config(map[string]string{"site-1": "2027-01"}), ConfigPlanChecks: empty},
			// ... a new value rotates again, and removing it too.
			{PreConfig: remember, Config: config(map[string]string{"site-1": "2027-02"}), ConfigPlanChecks: update, Check: rotatedOnly("site-1")},
			{PreConfig: remember, Config: config(nil), ConfigPlanChecks: update, Check: rotatedOnly("site-1")},
			{Config: config(nil), ConfigPlanChecks: empty},
			// A lost key is an error that names the trigger ...
			{
				PreConfig:   func() { os.Remove(filepath.Join(dir, "ca", "participants", "site-3.key")) },
				Config:      config(nil),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Client\s+Key\s+Missing.*change\s+its\s+rotation_trigger`),
			},
			// ... and changing site-3's trigger gives it a new key, and only it.
			{
				PreConfig: func() {
					// site-3's key is gone: the rest is compared.
					remember()
				},
				Config: config(map[string]string{"site-3": "lost-2027-03"}), ConfigPlanChecks: update, Check: rotatedOnly("site-3"),
			},
			{Config: config(map[string]string{"site-3": "lost-2027-03"}), ConfigPlanChecks: empty},
		},
	})
}
