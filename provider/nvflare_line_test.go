package provider

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

// lineConfig is federationConfig on NVFlare line version ("" = default),
// plus a flare_clients resource.
func lineConfig(dir, version string) string {
	cfg := federationConfig(dir, []string{"site-1"}, fmt.Sprintf(`
resource "flare_clients" "bulk" {
  project_id = flare_project.p.id
  server     = flare_server.server1.descriptor
  output_dir = %q
  clients    = { "site-9" = { org = "nvidia" } }
}
`, filepath.Join(dir, "kits")))
	if version != "" {
		cfg = strings.Replace(cfg, `  description = "acceptance"`, `  description = "acceptance"
  nvflare_version = "`+version+`"`, 1)
	}
	return cfg
}

// TestAccNVFlareLine_Upgrade applies a project on NVFlare 2.7, then moves
// it to 2.9: every kit is rewritten in the 2.9 layout, and no key or
// certificate changes.
func TestAccNVFlareLine_Upgrade(t *testing.T) {
	dir := t.TempDir()
	kits, caDir := filepath.Join(dir, "kits"), filepath.Join(dir, "ca")
	certs := map[string]*string{}
	capture := func() resource.TestCheckFunc {
		var checks []resource.TestCheckFunc
		for _, addr := range []string{"flare_server.server1", "flare_client.site_1", "flare_admin.admin"} {
			v := new(string)
			certs[addr] = v
			checks = append(checks, captureAttr(addr, "cert_fingerprint", v))
		}
		root := new(string)
		certs["root"] = root
		return resource.ComposeAggregateTestCheckFunc(append(checks, captureAttr("flare_project.p", "root_ca_fingerprint", root))...)
	}
	var keyTimes map[string]int64
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: lineConfig(dir, "2.7"),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("flare_project.p", tfjsonpath.New("id"), knownvalue.StringExact("local:"+caDir+"?nvflare=2.7")),
					statecheck.ExpectKnownValue("flare_project.p", tfjsonpath.New("nvflare_version"), knownvalue.StringExact("2.7")),
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					capture(),
					checkRootKeyUsage(filepath.Join(kits, "server1", "startup", "rootCA.pem"),
						x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment|x509.KeyUsageKeyEncipherment|
							x509.KeyUsageDataEncipherment|x509.KeyUsageKeyAgreement|x509.KeyUsageCertSign|x509.KeyUsageCRLSign),
					checkJSONField(filepath.Join(kits, "site-1", "startup", "fed_client.json"), []string{"overseer_agent", "args", "sp_end_point"}, "server1:8002:8003"),
					checkJSONField(filepath.Join(kits, "site-9", "startup", "fed_client.json"), []string{"overseer_agent", "args", "sp_end_point"}, "server1:8002:8003"),
					checkJSONField(filepath.Join(kits, "server1", "local", "log_config.json.default"), []string{"handlers", "errorFileHandler", "filename"}, "log_error.txt"),
					func(*terraform.State) error { keyTimes = mtimes(t, caDir); return nil },
				),
			},
			{
				Config: lineConfig(dir, "2.9"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_project.p", plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue("flare_project.p", tfjsonpath.New("id"), knownvalue.StringExact("local:"+caDir+"?nvflare=2.9")),
					plancheck.ExpectResourceAction("flare_server.server1", plancheck.ResourceActionUpdate),
					plancheck.ExpectResourceAction("flare_client.site_1", plancheck.ResourceActionUpdate),
					plancheck.ExpectResourceAction("flare_admin.admin", plancheck.ResourceActionUpdate),
					plancheck.ExpectResourceAction("flare_clients.bulk", plancheck.ResourceActionUpdate),
					plancheck.ExpectResourceAction("flare_startup_kit.server", plancheck.ResourceActionUpdate),
					plancheck.ExpectResourceAction("flare_startup_kit.admin", plancheck.ResourceActionUpdate),
					plancheck.ExpectResourceAction("flare_startup_kit.site_1", plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					checkSame(certs),
					func(*terraform.State) error {
						after := mtimes(t, caDir)
						for p, m := range keyTimes {
							if after[p] != m {
								return fmt.Errorf("%s changed when only the NVFlare line did", p)
							}
						}
						return nil
					},
					checkJSONField(filepath.Join(kits, "site-1", "startup", "fed_client.json"), []string{"servers", "0", "service", "target"}, "server1:8002"),
					checkJSONField(filepath.Join(kits, "site-9", "startup", "fed_client.json"), []string{"servers", "0", "service", "target"}, "server1:8002"),
					checkNoJSONField(filepath.Join(kits, "site-1", "startup", "fed_client.json"), "overseer_agent"),
					checkNoJSONField(filepath.Join(kits, "server1", "startup", "fed_server.json"), "overseer_agent"),
					checkJSONField(filepath.Join(kits, "server1", "local", "resources.json.default"), []string{"components", "4", "path"}, "nvflare.app_common.logging.job_log_receiver.JobLogReceiver"),
					checkJSONField(filepath.Join(kits, "server1", "local", "log_config.json.default"), []string{"handlers", "errorFileHandler", "filename"}, "error_log.txt"),
					checkKits(kits, map[string]string{"server1": "server", "site-1": "client", "site-9": "client", "admin@nvidia.com": "client"}),
				),
			},
			{
				Config:           lineConfig(dir, "2.9"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}},
			},
		},
	})
}

// TestAccNVFlareLine_Default: a new project is on the newest line, with
// that line's certificate profile (root key usage, IP SANs).
func TestAccNVFlareLine_Default(t *testing.T) {
	dir := t.TempDir()
	kits, caDir := filepath.Join(dir, "kits"), filepath.Join(dir, "ca")
	cfg := strings.Replace(lineConfig(dir, ""), `  fed_learn_port = 8002`, `  fed_learn_port = 8002
  default_host   = "127.0.0.1"`, 1)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config: cfg,
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownValue("flare_project.p", tfjsonpath.New("id"), knownvalue.StringExact("local:"+caDir+"?nvflare=2.9")),
				statecheck.ExpectKnownValue("flare_project.p", tfjsonpath.New("nvflare_version"), knownvalue.StringExact("2.9")),
			},
			Check: resource.ComposeAggregateTestCheckFunc(
				checkRootKeyUsage(filepath.Join(kits, "server1", "startup", "rootCA.pem"),
					x509.KeyUsageDigitalSignature|x509.KeyUsageCertSign|x509.KeyUsageCRLSign),
				func(*terraform.State) error {
					cert, err := readCert(filepath.Join(kits, "server1", "startup", "server.crt"))
					if err != nil {
						return err
					}
					// As NVFlare: the host clients dial, as an IP SAN; the name
					// only when it is that host.
					if len(cert.DNSNames) != 0 || len(cert.IPAddresses) != 1 || cert.IPAddresses[0].String() != "127.0.0.1" {
						return fmt.Errorf("server SANs: DNS %v IP %v, want only IP 127.0.0.1", cert.DNSNames, cert.IPAddresses)
					}
					root, err := readCert(filepath.Join(kits, "server1", "startup", "rootCA.pem"))
					if err != nil {
						return err
					}
					if cert.NotAfter.After(root.NotAfter) {
						return fmt.Errorf("leaf outlives the root")
					}
					return nil
				},
				checkJSONField(filepath.Join(kits, "site-1", "startup", "fed_client.json"), []string{"servers", "0", "service", "target"}, "127.0.0.1:8002"),
			),
		}},
	})
}

func checkSame(before map[string]*string) resource.TestCheckFunc {
	var checks []resource.TestCheckFunc
	for addr, v := range before {
		if addr == "root" {
			checks = append(checks, resource.TestCheckResourceAttrPtr("flare_project.p", "root_ca_fingerprint", v))
			continue
		}
		checks = append(checks, resource.TestCheckResourceAttrPtr(addr, "cert_fingerprint", v))
	}
	return resource.ComposeAggregateTestCheckFunc(checks...)
}

func checkRootKeyUsage(p string, want x509.KeyUsage) resource.TestCheckFunc {
	return func(*terraform.State) error {
		cert, err := readCert(p)
		if err != nil {
			return err
		}
		if cert.KeyUsage != want {
			return fmt.Errorf("%s: key usage %b, want %b", p, cert.KeyUsage, want)
		}
		return nil
	}
}

func checkNoJSONField(p, key string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(string(data), `"`+key+`"`) {
			return fmt.Errorf("%s still has %q", p, key)
		}
		return nil
	}
}
