package provider

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/flarekit/terraform-provider-flare/agent/config"
	"github.com/flarekit/terraform-provider-flare/agent/server"
	"github.com/flarekit/terraform-provider-flare/internal/agentid"
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
// replaces a lost key, imports, and refuses a site that is not one.
func TestAccAgentIdentity(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "agent-site-1")
	caDir := filepath.Join(dir, "ca")
	var fingerprint, keyFP string
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
				// A lost key: a new key and certificate.
				PreConfig: func() { os.Remove(filepath.Join(out, agentid.KeyFile)) },
				Config:    agentIdentityConfig(dir, out),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_agent_identity.site_1", plancheck.ResourceActionCreate),
				}},
				Check: func(s *terraform.State) error {
					a := s.RootModule().Resources["flare_agent_identity.site_1"].Primary.Attributes
					if a["key_fingerprint"] == keyFP {
						return fmt.Errorf("the key was not replaced")
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
