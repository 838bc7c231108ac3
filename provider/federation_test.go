package provider

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

// TestAccFederation_Lifecycle walks a federation through create, adding a
// client, an in-place update, drift, import and destroy.
func TestAccFederation_Lifecycle(t *testing.T) {
	dir := t.TempDir()
	kits := filepath.Join(dir, "kits")
	caDir := filepath.Join(dir, "ca")
	two := []string{"site-1", "site-2"}
	three := []string{"site-1", "site-2", "site-3"}
	var before map[string]int64
	var site1Cert string

	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy: func(*terraform.State) error {
			entries, _ := os.ReadDir(kits)
			if len(entries) != 0 {
				return fmt.Errorf("kits left after destroy: %v", entries)
			}
			if _, err := os.Stat(filepath.Join(caDir, "rootCA.key")); !os.IsNotExist(err) {
				return fmt.Errorf("root key left after destroy (err=%v)", err)
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				Config: federationConfig(dir, two, ""),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("flare_project.p", tfjsonpath.New("id"), knownvalue.StringExact("local:"+caDir+"?nvflare=2.9")),
					statecheck.ExpectKnownValue("flare_project.p", tfjsonpath.New("root_ca_pem"), knownvalue.StringRegexp(regexp.MustCompile(`^-----BEGIN CERTIFICATE-----`))),
					statecheck.ExpectKnownValue("flare_project.p", tfjsonpath.New("root_ca_fingerprint"), knownvalue.StringRegexp(regexp.MustCompile(`^[0-9a-f]{64}$`))),
					statecheck.ExpectKnownValue("flare_server.server1", tfjsonpath.New("key_fingerprint"), knownvalue.StringRegexp(regexp.MustCompile(`^[0-9a-f]{64}$`))),
					statecheck.ExpectKnownValue("flare_server.server1", tfjsonpath.New("ready_for_renewal"), knownvalue.Bool(false)),
					statecheck.ExpectKnownValue("flare_admin.admin", tfjsonpath.New("role"), knownvalue.StringExact("project_admin")),
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("flare_startup_kit.site_1", "kit_dir", filepath.Join(kits, "site-1")),
					resource.TestCheckNoResourceAttr("flare_startup_kit.site_1", "archive_path"),
					captureAttr("flare_client.site_1", "cert_pem", &site1Cert),
					checkNoPrivateKeyInState,
					checkKits(kits, map[string]string{"server1": "server", "site-1": "client", "site-2": "client", "admin@nvidia.com": "client"}),
					checkFileMode(filepath.Join(caDir, "rootCA.key"), 0o600),
					checkFileMode(filepath.Join(kits, "site-1", "startup", "client.key"), 0o600),
					checkFileMode(filepath.Join(kits, "site-1", "startup", "sub_start.sh"), 0o755),
					checkJSONField(filepath.Join(kits, "site-1", "startup", "fed_client.json"), []string{"servers", "0", "service", "target"}, "server1:8002"),
					checkJSONField(filepath.Join(kits, "admin@nvidia.com", "startup", "fed_admin.json"), []string{"admin", "port"}, float64(8003)),
				),
			},
			{
				// Adding a client issues one certificate and writes one kit;
				// no other file is rewritten.
				PreConfig: func() { before = mtimes(t, dir) },
				Config:    federationConfig(dir, three, ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_client.site_3", plancheck.ResourceActionCreate),
					plancheck.ExpectResourceAction("flare_startup_kit.site_3", plancheck.ResourceActionCreate),
					plancheck.ExpectResourceAction("flare_client.site_1", plancheck.ResourceActionNoop),
					plancheck.ExpectResourceAction("flare_startup_kit.site_1", plancheck.ResourceActionNoop),
					plancheck.ExpectResourceAction("flare_startup_kit.server", plancheck.ResourceActionNoop),
					plancheck.ExpectResourceAction("flare_startup_kit.admin", plancheck.ResourceActionNoop),
				}},
				Check: func(*terraform.State) error {
					after := mtimes(t, dir)
					for p, m := range before {
						if after[p] != m {
							return fmt.Errorf("%s was rewritten when a client was added", p)
						}
					}
					var added []string
					for p := range after {
						if _, ok := before[p]; !ok {
							added = append(added, p)
						}
					}
					for _, p := range added {
						if !strings.HasPrefix(p, filepath.Join(kits, "site-3")) && !strings.Contains(p, "site-3.") {
							return fmt.Errorf("unexpected new file %s", p)
						}
					}
					return verifyKit(filepath.Join(kits, "site-3"), "client")
				},
			},
			{
				// Capacity changes in place: same certificate, new resources.json.
				Config: strings.Replace(federationConfig(dir, three, ""), `  name       = "site-1"
  org        = "nvidia"`, `  name       = "site-1"
  org        = "nvidia"
  num_gpus   = 2
  mem_per_gpu_in_gib = 16`, 1),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_client.site_1", plancheck.ResourceActionUpdate),
					plancheck.ExpectResourceAction("flare_startup_kit.site_1", plancheck.ResourceActionUpdate),
					plancheck.ExpectResourceAction("flare_startup_kit.site_2", plancheck.ResourceActionNoop),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttrPtr("flare_client.site_1", "cert_pem", &site1Cert),
					checkJSONField(filepath.Join(kits, "site-1", "local", "resources.json.default"), []string{"components", "0", "args", "num_of_gpus"}, float64(2)),
					checkJSONField(filepath.Join(kits, "site-1", "local", "resources.json.default"), []string{"components", "0", "args", "mem_per_gpu_in_GiB"}, float64(16)),
					checkKits(kits, map[string]string{"site-1": "client"}),
				),
			},
			{
				// A kit file deleted outside Terraform shows in the plan and
				// apply restores it.
				PreConfig: func() {
					if err := os.Remove(filepath.Join(kits, "site-2", "startup", "fed_client.json")); err != nil {
						t.Fatal(err)
					}
					// What a running site writes into its kit is no drift and survives the rewrite.
					os.WriteFile(filepath.Join(kits, "site-2", "log.txt"), []byte("running"), 0o644)
					os.WriteFile(filepath.Join(kits, "site-3", "log.txt"), []byte("running"), 0o644)
				},
				Config: federationConfig(dir, three, ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_startup_kit.site_2", plancheck.ResourceActionUpdate),
					plancheck.ExpectUnknownValue("flare_startup_kit.site_2", tfjsonpath.New("kit_sha256")),
					plancheck.ExpectResourceAction("flare_startup_kit.site_3", plancheck.ResourceActionNoop),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					checkKits(kits, map[string]string{"site-2": "client"}),
					func(*terraform.State) error {
						if b, err := os.ReadFile(filepath.Join(kits, "site-2", "log.txt")); err != nil || string(b) != "running" {
							return fmt.Errorf("the site's log.txt did not survive the kit rewrite: %v", err)
						}
						return nil
					},
				),
			},
			{
				Config:   federationConfig(dir, three, ""),
				PlanOnly: true, // and nothing is left to do
			},
			{
				ResourceName:      "flare_project.p",
				ImportState:       true,
				ImportStateId:     caDir,
				ImportStateVerify: true,
				// The description lives only in configuration.
				ImportStateVerifyIgnore: []string{"description"},
			},
			{
				ResourceName:      "flare_client.site_2",
				ImportState:       true,
				ImportStateId:     "site-2@local:" + caDir + "?nvflare=2.9",
				ImportStateVerify: true,
			},
			{
				ResourceName:      "flare_server.server1",
				ImportState:       true,
				ImportStateId:     "server1@local:" + caDir + "?nvflare=2.9",
				ImportStateVerify: true,
				// Ports are not in the certificate; the next plan sets them.
				ImportStateVerifyIgnore: []string{"admin_port", "descriptor"},
			},
			{
				ResourceName:      "flare_admin.admin",
				ImportState:       true,
				ImportStateId:     "admin@nvidia.com@local:" + caDir + "?nvflare=2.9",
				ImportStateVerify: true,
			},
			{
				ResourceName:      "flare_startup_kit.site_1",
				ImportState:       true,
				ImportStateId:     filepath.Join(kits, "site-1"),
				ImportStateVerify: true,
				// The descriptors come from configuration.
				ImportStateVerifyIgnore: []string{"participant", "server"},
			},
		},
	})
}

func checkKits(kits string, certBase map[string]string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		for name, base := range certBase {
			if err := verifyKit(filepath.Join(kits, name), base); err != nil {
				return fmt.Errorf("kit %s: %w", name, err)
			}
		}
		return nil
	}
}

func checkFileMode(p string, want os.FileMode) resource.TestCheckFunc {
	return func(*terraform.State) error {
		info, err := os.Stat(p)
		if err != nil {
			return err
		}
		if got := info.Mode().Perm(); got != want {
			return fmt.Errorf("%s has mode %o, want %o", p, got, want)
		}
		return nil
	}
}

// checkJSONField reads a JSON file and compares the value at keys (array
// indexes as decimal strings).
func checkJSONField(p string, keys []string, want any) resource.TestCheckFunc {
	return func(*terraform.State) error {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for _, k := range keys {
			switch node := v.(type) {
			case map[string]any:
				v = node[k]
			case []any:
				var i int
				fmt.Sscan(k, &i)
				v = node[i]
			default:
				return fmt.Errorf("%s: no %v", p, keys)
			}
		}
		if v != want {
			return fmt.Errorf("%s %v = %#v, want %#v", p, keys, v, want)
		}
		return nil
	}
}

// captureAttr stores a resource attribute for comparison in a later step.
func captureAttr(address, attr string, into *string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		r, ok := s.RootModule().Resources[address]
		if !ok {
			keys := make([]string, 0, len(s.RootModule().Resources))
			for k := range s.RootModule().Resources {
				keys = append(keys, k)
			}
			return fmt.Errorf("no %s in state; have %v", address, keys)
		}
		*into = r.Primary.Attributes[attr]
		if *into == "" {
			return fmt.Errorf("%s has no %s", address, attr)
		}
		return nil
	}
}
