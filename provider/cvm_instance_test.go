package provider

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/flarekit/terraform-provider-flare/agent/agenttest"
	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/client"
	"github.com/flarekit/terraform-provider-flare/internal/attest"
	"github.com/flarekit/terraform-provider-flare/internal/measure/measuretest"
)

// TestAccCVMInstance runs a real flare-agent on 127.0.0.1 and drives it
// from Terraform: the federation and the site's CVM kit are built first,
// then the agent starts with the site's agent kit (flare_agent_identity;
// the site's startup kit goes into the CVM kit only, as a site operator
// would do it), flare_cvm_instance launches the kit and waits until the busybox
// guest attests, and flare_cvm_attestation reads reports back. The agent
// runs in its simulated mode (no SEV-SNP here), which every check below
// names: reports are refused without allow_simulated.
func TestAccCVMInstance(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a QEMU guest; not in -short")
	}
	host := agenttest.NeedHost(t)
	needTool(t, "qemu-img", "debugfs", "mkfs.ext4")
	// The agent runs in simulated mode: allow_simulated is accepted only
	// with this set (TestAccAllowSimulatedNeedsEnv checks the refusal).
	t.Setenv(AllowSimulatedEnv, "1")
	// Short base: the agent's unix sockets live under it (107-byte limit).
	base, err := os.MkdirTemp("", "flare-acc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		agenttest.KillAll(base)
		os.RemoveAll(base)
	})
	bin := agenttest.BuildAgent(t, base)
	initrd := filepath.Join(base, "initrd.img")
	agenttest.BuildInitrd(t, host, bin, initrd)
	// The kit's firmware is an AmdSev-layout image (Debian ships none) so
	// the measurement can be computed; in simulated mode the agent boots
	// Debian's OVMF instead (simulated_firmware).
	fw := measuretest.Firmware{Size: 2 << 20, Sections: measuretest.AmdSevSections, HashesGPA: 0x810000, HashesSize: 0x1000}
	firmware := filepath.Join(base, "OVMF.amdsev.fd")
	if err := os.WriteFile(firmware, fw.Build(), 0o644); err != nil {
		t.Fatal(err)
	}
	docker := agenttest.DockerSave(t, base)

	kits := filepath.Join(base, "kits")
	adminKit := filepath.Join(kits, "admin@nvidia.com")
	agentKit := filepath.Join(base, "agent-site-1")
	port := agenttest.FreePort(t)
	agentURL := fmt.Sprintf("https://127.0.0.1:%d", port)
	cfgPath := filepath.Join(base, "agent.yaml")
	logFile := filepath.Join(base, "agent.log")
	var agent *agenttest.Agent
	startAgent := func() {
		// The agent serves with the agent kit flare_agent_identity wrote,
		// never the site's startup kit (which only goes into the CVM kit).
		cfg := fmt.Sprintf("listen: 127.0.0.1:%d\nstate_dir: %s\nagent_kit_dir: %s\nqemu: %s\nmode: simulated\naccel: tcg\n"+
			"simulated_firmware: %s\nnetwork: none\nstop_timeout: 20s\nattest_timeout: 30s\n",
			port, filepath.Join(base, "state"), agentKit, host.QEMU, host.OVMF)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		tlsCfg, err := client.TLSConfigFromKit(adminKit)
		if err != nil {
			t.Fatal(err)
		}
		agent = agenttest.StartAgent(t, bin, cfgPath, logFile, agentURL+"/healthz", client.PinSite(tlsCfg, "site-1"))
		t.Cleanup(agent.Term)
	}
	defer func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", agenttest.TailFile(logFile, 60))
		}
	}()
	admin := func() *client.Client {
		c, err := client.FromKit(agentURL, adminKit)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	kitOnly := federationConfig(base, []string{"site-1"}, fmt.Sprintf(`
resource "flare_admin" "lead" {
  project_id = flare_project.p.id
  name       = "lead@nvidia.com"
  org        = "nvidia"
  role       = "lead"
}
resource "flare_startup_kit" "lead" {
  participant = flare_admin.lead.descriptor
  server      = flare_server.server1.descriptor
  output_dir  = %[1]q
}
resource "flare_agent_identity" "site_1" {
  project_id = flare_project.p.id
  site       = flare_client.site_1.name
  org        = "nvidia"
  output_dir = %[8]q
  listen     = ["127.0.0.1"]
  state_dir  = %[9]q
  mode       = "simulated"
}
resource "flare_cvm_kit" "site_1" {
  project_id         = flare_project.p.id
  startup_kit_dir    = flare_startup_kit.site_1.kit_dir
  startup_kit_sha256 = flare_startup_kit.site_1.kit_sha256
  output_dir         = %[2]q

  role                   = "client"
  root_drive_size        = 1
  applog_drive_size      = 1
  user_config_drive_size = 1
  user_data_drive_size   = 1
  docker_archive         = %[3]q
  vcpus                  = 1
  memory_mib             = 512
  firmware               = %[4]q
  kernel                 = %[5]q
  initrd                 = %[6]q
  kernel_cmdline         = "console=ttyS0 panic=-1"
  host_data              = "%[7]s"
}
`, kits, filepath.Join(base, "cvm"), docker, firmware, host.Kernel, initrd, strings.Repeat("5a", 32), agentKit, filepath.Join(base, "state")))

	nonce := strings.Repeat("0123456789abcdef", 4) // 32 bytes
	instance := func(extra string) string {
		return kitOnly + fmt.Sprintf(`
resource "flare_cvm_instance" "site_1" {
  agent_url       = %[1]q
  auth_kit_dir    = flare_startup_kit.admin.kit_dir
  kit_dir         = flare_cvm_kit.site_1.kit_dir
  kit_sha256      = flare_cvm_kit.site_1.kit_sha256
  allow_simulated = true
  ready_timeout   = "5m"
  %[2]s
}
`, agentURL, extra)
	}
	withReads := func(extra string) string {
		return instance(extra) + fmt.Sprintf(`
data "flare_cvm_attestation" "ok" {
  agent_url       = %[1]q
  auth_kit_dir    = flare_startup_kit.lead.kit_dir
  kit_dir         = flare_cvm_kit.site_1.kit_dir
  cvm_id          = flare_cvm_instance.site_1.id
  nonce           = %[2]q
  allow_simulated = true
}
data "flare_cvm_attestation" "strict" {
  agent_url        = %[1]q
  auth_kit_dir     = flare_startup_kit.admin.kit_dir
  kit_dir          = flare_cvm_kit.site_1.kit_dir
  require_verified = false
  depends_on       = [flare_cvm_instance.site_1]
}
data "flare_cvm_attestation" "wrong_measurement" {
  agent_url            = %[1]q
  auth_kit_dir         = flare_startup_kit.admin.kit_dir
  kit_dir              = flare_cvm_kit.site_1.kit_dir
  cvm_id               = flare_cvm_instance.site_1.id
  expected_measurement = %[3]q
  allow_simulated      = true
  require_verified     = false
}
`, agentURL, nonce, strings.Repeat("00", 48))
	}
	var firstID string

	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy: func(*terraform.State) error {
			if pids := agenttest.QEMUPIDs(base); len(pids) != 0 {
				return fmt.Errorf("QEMU still runs after destroy: %v", pids)
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				// The site's kits first; the operator starts the agent from them.
				Config: kitOnly,
			},
			{
				PreConfig: startAgent,
				Config:    withReads(""),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("flare_cvm_instance.site_1", tfjsonpath.New("state"), knownvalue.StringExact(api.StateRunning)),
					statecheck.ExpectKnownValue("flare_cvm_instance.site_1", tfjsonpath.New("mode"), knownvalue.StringExact(api.ModeSimulated)),
					statecheck.ExpectKnownValue("flare_cvm_instance.site_1", tfjsonpath.New("simulated"), knownvalue.Bool(true)),
					statecheck.ExpectKnownValue("flare_cvm_instance.site_1", tfjsonpath.New("participant"), knownvalue.StringExact("site-1")),
					statecheck.ExpectKnownValue("data.flare_cvm_attestation.ok", tfjsonpath.New("verified"), knownvalue.Bool(true)),
					statecheck.ExpectKnownValue("data.flare_cvm_attestation.ok", tfjsonpath.New("agent_verified"), knownvalue.Bool(true)),
					statecheck.ExpectKnownValue("data.flare_cvm_attestation.ok", tfjsonpath.New("simulated"), knownvalue.Bool(true)),
					statecheck.ExpectKnownValue("data.flare_cvm_attestation.ok", tfjsonpath.New("nonce"), knownvalue.StringExact(nonce)),
					statecheck.ExpectKnownValue("data.flare_cvm_attestation.ok", tfjsonpath.New("host_data"), knownvalue.StringExact(strings.Repeat("5a", 32))),
					statecheck.ExpectKnownValue("data.flare_cvm_attestation.ok", tfjsonpath.New("reasons"), knownvalue.ListSizeExact(0)),
					// Without allow_simulated the same guest's report is refused.
					statecheck.ExpectKnownValue("data.flare_cvm_attestation.strict", tfjsonpath.New("verified"), knownvalue.Bool(false)),
					statecheck.ExpectKnownValue("data.flare_cvm_attestation.strict", tfjsonpath.New("reasons"),
						knownvalue.ListPartial(map[int]knownvalue.Check{0: knownvalue.StringRegexp(regexp.MustCompile(`^simulated: .*allow_simulated`))})),
					statecheck.ExpectKnownValue("data.flare_cvm_attestation.wrong_measurement", tfjsonpath.New("verified"), knownvalue.Bool(false)),
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttrPair("flare_cvm_instance.site_1", "measurement", "flare_cvm_kit.site_1", "expected_measurement"),
					resource.TestCheckResourceAttrPair("data.flare_cvm_attestation.ok", "measurement", "flare_cvm_kit.site_1", "expected_measurement"),
					resource.TestCheckResourceAttrPair("data.flare_cvm_attestation.ok", "guest_key", "flare_cvm_instance.site_1", "guest_key"),
					resource.TestCheckResourceAttrPair("data.flare_cvm_attestation.strict", "cvm_id", "flare_cvm_instance.site_1", "id"),
					resource.TestMatchResourceAttr("data.flare_cvm_attestation.wrong_measurement", "reasons.0", regexp.MustCompile(`^measurement`)),
					checkReportDataBinding("data.flare_cvm_attestation.ok"),
					captureAttr("flare_cvm_instance.site_1", "id", &firstID),
				),
			},
			{
				// Fail closed: a report that does not verify is an error
				// unless require_verified = false (the default is true).
				Config: withReads("") + fmt.Sprintf(`
data "flare_cvm_attestation" "fail_closed" {
  agent_url            = %[1]q
  auth_kit_dir         = flare_startup_kit.admin.kit_dir
  kit_dir              = flare_cvm_kit.site_1.kit_dir
  cvm_id               = flare_cvm_instance.site_1.id
  expected_measurement = %[2]q
  allow_simulated      = true
}`, agentURL, strings.Repeat("00", 48)),
				ExpectError: regexp.MustCompile(`(?s)CVM\s+Attestation\s+Not\s+Verified.*measurement.*require_verified\s+=\s+false`),
			},
			{
				// A kit that may only read is refused at plan time (the agent
				// would answer 403), and an instance that does not allow
				// simulated reports fails before anything is launched.
				Config: withReads("") + fmt.Sprintf(`
resource "flare_cvm_instance" "by_lead" {
  agent_url       = %[1]q
  auth_kit_dir    = flare_startup_kit.lead.kit_dir
  kit_dir         = flare_cvm_kit.site_1.kit_dir
  allow_simulated = true
}`, agentURL),
				ExpectError: regexp.MustCompile(`(?s)Startup\s+Kit\s+May\s+Not\s+Launch.*lead@nvidia.com\s+with\s+role\s+"lead"`),
			},
			{
				Config: withReads("") + fmt.Sprintf(`
resource "flare_cvm_instance" "strict" {
  agent_url    = %[1]q
  auth_kit_dir = flare_startup_kit.admin.kit_dir
  kit_dir      = flare_cvm_kit.site_1.kit_dir
}`, agentURL),
				ExpectError: regexp.MustCompile(`(?s)would\s+run\s+this\s+CVM\s+in\s+simulated\s+mode.*allow_simulated\s+=\s+true`),
			},
			{
				// kill -9 the agent and start it again: it re-attaches to the
				// running guest, so the plan is empty.
				PreConfig: func() {
					agent.Kill9()
					startAgent()
				},
				Config:   withReads(""),
				PlanOnly: true,
			},
			{
				// The CVM stops behind Terraform's back: refresh drops it
				// and apply launches the kit again, this time uploading its
				// archive (the agent checks every file before it launches).
				PreConfig: func() {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
					defer cancel()
					if _, err := admin().Stop(ctx, firstID); err != nil {
						t.Fatal(err)
					}
				},
				Config: withReads(`archive = flare_cvm_kit.site_1.archive_path`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_cvm_instance.site_1", plancheck.ResourceActionCreate),
				}},
				Check: func(s *terraform.State) error {
					id := s.RootModule().Resources["flare_cvm_instance.site_1"].Primary.ID
					if id == firstID {
						return fmt.Errorf("the relaunched CVM kept id %s", id)
					}
					return resource.TestCheckResourceAttr("data.flare_cvm_attestation.ok", "verified", "true")(s)
				},
			},
			{
				ResourceName: "flare_cvm_instance.site_1",
				ImportState:  true,
				ImportStateIdFunc: func(s *terraform.State) (string, error) {
					r := s.RootModule().Resources["flare_cvm_instance.site_1"].Primary
					return strings.Join([]string{r.ID, agentURL, r.Attributes["auth_kit_dir"], r.Attributes["kit_dir"]}, ","), nil
				},
				ImportStateVerify: true,
				// What create saw of its attestation, and the inputs that
				// only decide how to launch, are not on the agent.
				ImportStateVerifyIgnore: []string{"measurement", "guest_key", "chip_id", "attested_at", "kit_sha256", "archive", "ready_timeout"},
			},
		},
	})
}

// checkReportDataBinding recomputes REPORT_DATA = SHA-512(nonce ‖ guest
// key fingerprint) from the data source's own outputs.
func checkReportDataBinding(name string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		a := s.RootModule().Resources[name].Primary.Attributes
		nonce, err1 := hex.DecodeString(a["nonce"])
		key, err2 := hex.DecodeString(a["guest_key"])
		if err1 != nil || err2 != nil || len(key) != 32 {
			return fmt.Errorf("%s: nonce %q / guest_key %q are not hex", name, a["nonce"], a["guest_key"])
		}
		want := attest.ReportData(nonce, key)
		if got := a["report_data"]; got != hex.EncodeToString(want[:]) {
			return fmt.Errorf("%s: report_data %s is not SHA-512(nonce ‖ guest key) %x", name, got, want)
		}
		return nil
	}
}
