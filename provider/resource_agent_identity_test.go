package provider

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/flarekit/terraform-provider-flare/agent/config"
	"github.com/flarekit/terraform-provider-flare/agent/server"
	"github.com/flarekit/terraform-provider-flare/internal/agentid"
	"github.com/flarekit/terraform-provider-flare/internal/localca"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

func agentIdentityConfig(dir, out string) string {
	return federationConfig(dir, []string{"site-1"}, fmt.Sprintf(`
resource "flare_agent_identity" "site_1" {
  project_id = flare_project.p.id
  site       = flare_client.site_1.name
  org        = "nvidia"
  output_dir = %q
  listen     = ["127.0.0.1", "agent.site-1.example"]
  port       = 9443
  state_dir  = "/var/lib/flare-agent"
}
`, out))
}

// TestAccAgentIdentity: flare_agent_identity writes an agent kit that
// flare-agent starts from (its own key, a certificate that is no
// participant's), keeps the key out of state, rewrites drifted files,
// fails (never reissues) on a lost or replaced key and on a changed or
// missing root, imports, and refuses a site that is not one.
func TestAccAgentIdentity(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "agent-site-1")
	caDir := filepath.Join(dir, "ca")
	var fingerprint, keyFP string
	empty := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: agentIdentityConfig(dir, out),
				Check: resource.ComposeAggregateTestCheckFunc(
					checkNoPrivateKeyInState,
					resource.TestCheckResourceAttr("flare_agent_identity.site_1", "common_name", "site-1:flare-agent"),
					resource.TestCheckResourceAttr("flare_agent_identity.site_1", "kit_dir", out),
					func(s *terraform.State) error {
						a := s.RootModule().Resources["flare_agent_identity.site_1"].Primary.Attributes
						fingerprint, keyFP = a["cert_fingerprint"], a["key_fingerprint"]
						return checkAgentKit(out)
					},
				),
			},
			{
				// Drift: agent.yaml deleted, rootCA.pem edited: rewritten,
				// same key and certificate.
				PreConfig: func() {
					os.Remove(filepath.Join(out, agentid.ConfigFile))
					os.WriteFile(filepath.Join(out, agentid.RootFile), []byte("edited"), 0o644)
				},
				Config: agentIdentityConfig(dir, out),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_agent_identity.site_1", plancheck.ResourceActionUpdate),
				}},
				Check: func(s *terraform.State) error {
					a := s.RootModule().Resources["flare_agent_identity.site_1"].Primary.Attributes
					if a["cert_fingerprint"] != fingerprint {
						return fmt.Errorf("a rewrite reissued the certificate")
					}
					return checkAgentKit(out)
				},
			},
			{
				// A lost key is an error with the restore and rotate hints,
				// not a silent new identity.
				PreConfig: moveAway(t, filepath.Join(out, agentid.KeyFile)),
				Config:    agentIdentityConfig(dir, out),
				PlanOnly:  true,
				ExpectError: regexp.MustCompile(`(?s)Agent\s+Key\s+Missing.*flare_agent_identity\s+"site-1:flare-agent".*agent\.key\s+is\s+gone.*` +
					`Restore\s+it:\s+copy\s+agent\.key\s+back.*terraform\s+apply\s+-refresh=false\s+-replace=ADDRESS.*rotation_trigger`),
			},
			{
				PreConfig:        moveBack(t, filepath.Join(out, agentid.KeyFile)),
				Config:           agentIdentityConfig(dir, out),
				ConfigPlanChecks: empty,
			},
			{
				// A replaced key is an error too.
				PreConfig: func() {
					p := filepath.Join(out, agentid.KeyFile)
					if err := os.Rename(p, p+".bak"); err != nil {
						t.Fatal(err)
					}
					k, err := pki.GenerateKey()
					if err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(p, pki.KeyPEM(k), 0o600); err != nil {
						t.Fatal(err)
					}
				},
				Config:      agentIdentityConfig(dir, out),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Agent\s+Key\s+Does\s+Not\s+Match.*agent\.key\s+holds\s+another\s+key`),
			},
			{
				PreConfig:        moveBack(t, filepath.Join(out, agentid.KeyFile)),
				Config:           agentIdentityConfig(dir, out),
				ConfigPlanChecks: empty,
			},
			{
				// The project's root changed under the agent (another CA in
				// the CA directory): the agent stays in state and the plan
				// fails with the project error instead of a new identity.
				// (Applied, not PlanOnly: the root's new rootCA.pem already
				// shows in the non-refresh plan; the refresh fails. The site
				// is named literally so that the agent is refreshed even
				// though its participant fails too.)
				PreConfig: swapRoot(t, caDir),
				Config:    strings.Replace(agentIdentityConfig(dir, out), "flare_client.site_1.name", `"site-1"`, 1),
				ExpectError: regexp.MustCompile(`(?s)Certificate\s+Not\s+Signed\s+By\s+Project\s+CA.*flare_agent_identity\s+"site-1:flare-agent".*` +
					`not\s+signed\s+by\s+the\s+project's\s+root\s+CA`),
			},
			{
				// The root is gone altogether: the project's error (the
				// agent, which depends on the project, is not refreshed).
				PreConfig: func() {
					swapRoot(t, caDir)() // the original root back
					moveAway(t, filepath.Join(caDir, "rootCA.pem"))()
				},
				Config:      agentIdentityConfig(dir, out),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Root\s+CA\s+Missing.*rootCA\.pem\s+is\s+missing.*Nothing\s+was\s+planned`),
			},
			{
				PreConfig:        moveBack(t, filepath.Join(caDir, "rootCA.pem")),
				Config:           agentIdentityConfig(dir, out),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}},
				Check: func(s *terraform.State) error {
					a := s.RootModule().Resources["flare_agent_identity.site_1"].Primary.Attributes
					if a["key_fingerprint"] != keyFP || a["cert_fingerprint"] != fingerprint {
						return fmt.Errorf("the agent identity changed")
					}
					return checkAgentKit(out)
				},
			},
			{
				Config:   agentIdentityConfig(dir, out),
				PlanOnly: true,
			},
			{
				ResourceName:      "flare_agent_identity.site_1",
				ImportState:       true,
				ImportStateId:     out + "@local:" + caDir + "?nvflare=2.9",
				ImportStateVerify: true,
				// Not in the certificate: the next plan sets them.
				ImportStateVerifyIgnore: []string{"listen", "port", "state_dir", "mode"},
			},
			{
				Config: agentIdentityConfig(dir, out) + `
resource "flare_agent_identity" "nobody" {
  project_id = flare_project.p.id
  site       = "nobody"
  org        = "nvidia"
  output_dir = "` + filepath.Join(dir, "agent-nobody") + `"
}
`,
				ExpectError: regexp.MustCompile(`"nobody" is not a participant of this project`),
			},
		},
	})
}

// checkAgentKit: the kit's agent.yaml loads, flare-agent's LoadIdentity
// accepts the kit, and the certificate is no participant's.
func checkAgentKit(dir string) error {
	if fi, err := os.Stat(filepath.Join(dir, agentid.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		return fmt.Errorf("agent.key: %v %v", fi, err)
	}
	cfg, err := config.Load(filepath.Join(dir, agentid.ConfigFile))
	if err != nil {
		return err
	}
	if cfg.AgentKitDir != dir || cfg.Listen != "127.0.0.1:9443" || cfg.Org != "nvidia" || cfg.Mode != "snp" {
		return fmt.Errorf("agent.yaml: %+v", cfg)
	}
	id, err := server.LoadIdentity(cfg.AgentKitDir)
	if err != nil {
		return err
	}
	if id.Site != "site-1" || id.Org != "nvidia" {
		return fmt.Errorf("identity: site %q org %q", id.Site, id.Org)
	}
	c := id.Leaf
	if pki.RoleOf(c) != agentid.Role || len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		return fmt.Errorf("certificate: role %q, EKU %v", pki.RoleOf(c), c.ExtKeyUsage)
	}
	if len(c.IPAddresses) != 1 || c.IPAddresses[0].String() != "127.0.0.1" || len(c.DNSNames) != 1 || c.DNSNames[0] != "agent.site-1.example" {
		return fmt.Errorf("SANs: %v %v", c.IPAddresses, c.DNSNames)
	}
	// Not usable as a TLS client (NVFlare's participants are clients of
	// the server).
	if _, err := c.Verify(x509.VerifyOptions{Roots: id.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		return fmt.Errorf("the agent certificate verifies as a TLS client certificate")
	}
	return nil
}

// swapRoot exchanges the root certificate and key of caDir with those of
// another CA (made on the first call) and back on the next call: a CA
// directory that now holds another project's root.
func swapRoot(t *testing.T, caDir string) func() {
	t.Helper()
	return func() {
		other := filepath.Join(filepath.Dir(caDir), "other-ca")
		if _, err := os.Stat(other); os.IsNotExist(err) {
			if _, err := (localca.Store{Dir: other}).Create("acc", pki.ValidityFor(time.Now(), 30), pki.Profile{}); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []string{"rootCA.pem", "rootCA.key"} {
			a, b := filepath.Join(caDir, f), filepath.Join(other, f)
			for _, mv := range [][2]string{{a, a + ".swap"}, {b, a}, {a + ".swap", b}} {
				if err := os.Rename(mv[0], mv[1]); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}
