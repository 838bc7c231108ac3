package provider

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/flarekit/terraform-provider-flare/internal/agentid"
)

// TestAccRotationTrigger: rotation_trigger rotates a key on purpose, the
// same way on participants (flare_client, flare_server, flare_admin,
// flare_relay) and flare_agent_identity: setting or changing it replaces
// the resource with a new key and certificate, and the kits made from it
// are written again with them; an unchanged value plans nothing, and
// nothing else is touched.
func TestAccRotationTrigger(t *testing.T) {
	dir := t.TempDir()
	kits := filepath.Join(dir, "kits")
	agentOut := filepath.Join(dir, "agent-site-1")
	config := func(trigger string) string {
		set := ""
		if trigger != "" {
			set = fmt.Sprintf("rotation_trigger = %q", trigger)
		}
		// One config, the trigger on a client, the relay, the admin and
		// the agent (the server keeps none: it must stay as it is).
		return strings.Replace(strings.Replace(federationConfig(dir, []string{"site-1", "site-2"}, fmt.Sprintf(`
resource "flare_relay" "relay1" {
  project_id = flare_project.p.id
  name       = "relay1"
  org        = "nvidia"
  port       = 8102
  %[2]s
}

resource "flare_agent_identity" "site_1" {
  project_id = flare_project.p.id
  site       = flare_client.site_1.name
  org        = "nvidia"
  output_dir = %[1]q
  listen     = ["127.0.0.1", "agent.site-1.example"]
  port       = 9443
  %[2]s
}
`, agentOut, set)),
			`name       = "site-1"`, `name       = "site-1"`+"\n  "+set, 1),
			`role       = "project_admin"`, `role       = "project_admin"`+"\n  "+set, 1)
	}
	rotated := []string{"flare_client.site_1", "flare_relay.relay1", "flare_admin.admin", "flare_agent_identity.site_1"}
	kept := []string{"flare_client.site_2", "flare_server.server1", "flare_project.p"}
	var before map[string][2]string
	fingerprints := func(s *terraform.State) map[string][2]string {
		out := map[string][2]string{}
		for _, addr := range append(append([]string{}, rotated...), kept...) {
			a := s.RootModule().Resources[addr].Primary.Attributes
			fp := a["cert_fingerprint"]
			if addr == "flare_project.p" {
				fp = a["root_ca_fingerprint"]
			}
			out[addr] = [2]string{fp, a["key_fingerprint"]}
		}
		return out
	}
	remember := func(s *terraform.State) error { before = fingerprints(s); return nil }
	checkRotated := func(s *terraform.State) error {
		now := fingerprints(s)
		for _, addr := range rotated {
			if now[addr][0] == before[addr][0] || now[addr][1] == before[addr][1] {
				return fmt.Errorf("%s: certificate %s -> %s, key %s -> %s: not rotated", addr, before[addr][0], now[addr][0], before[addr][1], now[addr][1])
			}
		}
		for _, addr := range kept {
			if now[addr] != before[addr] {
				return fmt.Errorf("%s changed: %v -> %v", addr, before[addr], now[addr])
			}
		}
		// The kit of site-1 carries the new certificate; the agent kit too.
		for path, addr := range map[string]string{
			filepath.Join(kits, "site-1", "startup", "client.crt"): "flare_client.site_1",
			filepath.Join(agentOut, agentid.CertFile):              "flare_agent_identity.site_1",
		} {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if string(b) != s.RootModule().Resources[addr].Primary.Attributes["cert_pem"] {
				return fmt.Errorf("%s does not hold the new certificate of %s", path, addr)
			}
		}
		before = now
		return resource.ComposeAggregateTestCheckFunc(
			checkKits(kits, map[string]string{"site-1": "client", "site-2": "client", "server1": "server", "admin@nvidia.com": "client"}),
			func(*terraform.State) error { return checkAgentKit(agentOut) },
		)(s)
	}
	replaced := func() resource.ConfigPlanChecks {
		var checks []plancheck.PlanCheck
		for _, addr := range rotated {
			checks = append(checks, plancheck.ExpectResourceAction(addr, plancheck.ResourceActionDestroyBeforeCreate))
		}
		for _, addr := range kept {
			checks = append(checks, plancheck.ExpectResourceAction(addr, plancheck.ResourceActionNoop))
		}
		return resource.ConfigPlanChecks{PreApply: checks}
	}
	empty := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{Config: config(""), Check: remember},
			// Setting it rotates ...
			{Config: config("2027-01"), ConfigPlanChecks: replaced(), Check: checkRotated},
			// ... an unchanged value plans nothing ...
			{Config: config("2027-01"), ConfigPlanChecks: empty},
			// ... and a new value rotates again.
			{Config: config("2027-02"), ConfigPlanChecks: replaced(), Check: checkRotated},
			{Config: config("2027-02"), ConfigPlanChecks: empty},
		},
	})
}
