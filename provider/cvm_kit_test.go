package provider

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/flarekit/terraform-provider-flare/internal/cvm"
	"github.com/flarekit/terraform-provider-flare/internal/kit"
	"github.com/flarekit/terraform-provider-flare/internal/measure/measuretest"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// writeDockerSave writes a one-layer `docker save` archive: no Docker needed.
func writeDockerSave(t *testing.T, p string) {
	t.Helper()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for name, body := range map[string]string{"app/run.sh": "#!/bin/sh\nexec nvflare\n", "etc/os-release": "ID=test\n"} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	sum := sha256.Sum256(layer.Bytes())
	layerName := hex.EncodeToString(sum[:]) + "/layer.tar"
	cfg := []byte(`{"architecture":"amd64","os":"linux","config":{"Cmd":["/app/run.sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:` + hex.EncodeToString(sum[:]) + `"]}}`)
	cfgSum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(cfgSum[:]) + ".json"
	manifest, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{"flare/test:1"}, "Layers": []string{layerName}}})
	var out bytes.Buffer
	tw = tar.NewWriter(&out)
	for name, body := range map[string][]byte{"manifest.json": manifest, cfgName: cfg, layerName: layer.Bytes()} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write(body)
	}
	tw.Close()
	if err := os.WriteFile(p, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func needTool(t *testing.T, names ...string) map[string]string {
	t.Helper()
	found := map[string]string{}
	for _, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			for _, dir := range []string{"/usr/sbin", "/sbin"} {
				if _, e := os.Stat(filepath.Join(dir, n)); e == nil {
					p, err = filepath.Join(dir, n), nil
				}
			}
		}
		if err != nil {
			if os.Getenv("CVM_REQUIRE_TOOLS") != "" {
				t.Fatalf("%s not found (Debian: e2fsprogs, qemu-utils; `make cvm-deps`)", n)
			}
			t.Skipf("%s not found: install e2fsprogs and qemu-utils (`make cvm-deps`)", n)
		}
		found[n] = p
	}
	return found
}

// TestAccCVMKit builds a CVM kit from a server's startup kit, opens the
// drive images to check what is inside, and shows that a changed kernel
// command line changes the expected measurement in the plan.
func TestAccCVMKit(t *testing.T) {
	tools := needTool(t, "qemu-img", "debugfs", "mkfs.ext4")
	dir := t.TempDir()
	fw := measuretest.Firmware{Size: 2 << 20, Sections: measuretest.AmdSevSections, HashesGPA: 0x810000, HashesSize: 0x1000}
	files := map[string][]byte{
		"OVMF.fd": fw.Build(),
		"vmlinuz": bytes.Repeat([]byte("kernel"), 4096),
		"initrd":  []byte("initrd"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeDockerSave(t, filepath.Join(dir, "image.tar"))
	os.WriteFile(filepath.Join(dir, "site.conf"), []byte("region=eu\n"), 0o644)
	out := filepath.Join(dir, "cvm")
	config := func(cmdline string) string {
		return fmt.Sprintf(`
resource "flare_project" "p" {
  name = "cc"
  ca   = { dir = %[1]q }
}
resource "flare_server" "s" {
  project_id = flare_project.p.id
  name       = "server1"
  org        = "nvidia"
}
resource "flare_startup_kit" "s" {
  participant = flare_server.s.descriptor
  output_dir  = %[2]q
}
resource "flare_cvm_kit" "s" {
  project_id         = flare_project.p.id
  startup_kit_dir    = flare_startup_kit.s.kit_dir
  startup_kit_sha256 = flare_startup_kit.s.kit_sha256
  output_dir         = %[3]q

  role                   = "server"
  root_drive_size        = 1
  applog_drive_size      = 1
  user_config_drive_size = 1
  user_data_drive_size   = 1
  docker_archive         = %[4]q
  user_config            = { "site.conf" = %[5]q }
  allowed_ports          = [8002, 8003]
  allowed_out_ports      = [443]
  hosts_entries          = { "server1" = "10.0.0.1" }
  encrypt_root           = false
  cc_issuers = [{
    id               = "snp_authorizer"
    path             = "nvflare.app_opt.confidential_computing.snp_authorizer.SNPAuthorizer"
    token_expiration = 100
  }]
  check_frequency = 120

  vcpus          = 2
  vcpu_type      = "EPYC-v4"
  memory_mib     = 2048
  firmware       = %[6]q
  kernel         = %[7]q
  initrd         = %[8]q
  kernel_cmdline = %[9]q
}
`, filepath.Join(dir, "ca"), filepath.Join(dir, "kits"), out, filepath.Join(dir, "image.tar"), filepath.Join(dir, "site.conf"),
			filepath.Join(dir, "OVMF.fd"), filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd"), cmdline)
	}
	var first string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config("console=ttyS0 root=/dev/vda rw"),
				Check: resource.ComposeAggregateTestCheckFunc(
					checkNoPrivateKeyInState,
					resource.TestMatchResourceAttr("flare_cvm_kit.s", "expected_measurement", regexp.MustCompile(`^[0-9a-f]{96}$`)),
					resource.TestMatchResourceAttr("flare_cvm_kit.s", "kit_dir", regexp.MustCompile(`/server1/cvm_[0-9a-f]{8}$`)),
					resource.TestCheckResourceAttr("flare_cvm_kit.s", "archive_path", filepath.Join(out, "server1", "server1.tgz")),
					captureAttr("flare_cvm_kit.s", "expected_measurement", &first),
					func(s *terraform.State) error {
						attrs := s.RootModule().Resources["flare_cvm_kit.s"].Primary.Attributes
						return checkCVMKit(t, tools, attrs["kit_dir"], attrs["expected_measurement"])
					},
					checkCVMKitSigned("flare_cvm_kit.s", filepath.Join(dir, "kits", "server1", "startup", "rootCA.pem")),
				),
			},
			{
				// The kit is signed by the root its startup kit trusts, or not at all.
				Config: config("console=ttyS0 root=/dev/vda rw") + fmt.Sprintf(`
resource "flare_project" "other" {
  name = "other"
  ca   = { dir = %q }
}`, filepath.Join(dir, "other-ca")),
			},
			{
				Config: strings.Replace(config("console=ttyS0 root=/dev/vda rw"), "project_id         = flare_project.p.id", "project_id         = flare_project.other.id", 1) + fmt.Sprintf(`
resource "flare_project" "other" {
  name = "other"
  ca   = { dir = %q }
}`, filepath.Join(dir, "other-ca")),
				ExpectError: regexp.MustCompile(`(?s)Startup Kit of Another Project.*made by project "cc",\s+not\s+by\s+project_id's\s+"other"`),
			},
			{
				// Plan-time validation names the field and the fix.
				Config:      strings.Replace(config("x"), "token_expiration = 100", "token_expiration = 300", 1),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)cc_issuers\[0\].token_expiration.*check_frequency`),
			},
			{
				Config:      strings.Replace(config("x"), filepath.Join(dir, "image.tar"), filepath.Join(dir, "site.conf"), 1),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`docker_archive`),
			},
			{
				Config:      strings.Replace(config("x"), "root_drive_size        = 1", "root_drive_size        = 0", 1),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`root_drive_size\s+value\s+must\s+be\s+at\s+least\s+1`),
			},
			{
				Config: config("console=ttyS0 root=/dev/vda rw quiet"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_cvm_kit.s", plancheck.ResourceActionUpdate),
					expectPlannedMeasurementChange("flare_cvm_kit.s", &first),
				}},
				Check: func(s *terraform.State) error {
					attrs := s.RootModule().Resources["flare_cvm_kit.s"].Primary.Attributes
					return checkCVMKit(t, tools, attrs["kit_dir"], attrs["expected_measurement"])
				},
			},
		},
	})
}

// expectPlannedMeasurementChange checks the plan already knows the new
// measurement and that it differs from the old one.
type measurementChange struct {
	address string
	old     *string
}

func expectPlannedMeasurementChange(address string, old *string) plancheck.PlanCheck {
	return measurementChange{address, old}
}

func (c measurementChange) CheckPlan(_ context.Context, req plancheck.CheckPlanRequest, resp *plancheck.CheckPlanResponse) {
	for _, rc := range req.Plan.ResourceChanges {
		if rc.Address != c.address {
			continue
		}
		after, _ := rc.Change.After.(map[string]any)
		m, _ := after["expected_measurement"].(string)
		switch {
		case m == "":
			resp.Error = fmt.Errorf("%s: expected_measurement is not known at plan time", c.address)
		case m == *c.old:
			resp.Error = fmt.Errorf("%s: a new kernel command line left the measurement at %s", c.address, m)
		}
		return
	}
	resp.Error = fmt.Errorf("%s not in plan", c.address)
}

// checkCVMKitSigned verifies the kit's signature.json under the root
// certificate at rootPEM, independently of the agent.
func checkCVMKitSigned(name, rootPEM string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		b, err := os.ReadFile(rootPEM)
		if err != nil {
			return err
		}
		root, err := pki.ParseCertPEM(b)
		if err != nil {
			return err
		}
		return kit.VerifyFiles(s.RootModule().Resources[name].Primary.Attributes["kit_dir"], cvm.SignedFiles, root)
	}
}

func checkCVMKit(t *testing.T, tools map[string]string, kitDir, measurement string) error {
	raw, err := os.ReadFile(filepath.Join(kitDir, "launch.json"))
	if err != nil {
		return err
	}
	var m struct {
		ExpectedMeasurement string `json:"expected_measurement"`
		VCPUs               int    `json:"vcpus"`
		KernelCmdline       string `json:"kernel_cmdline"`
		Drives              []struct {
			Name, File string
		} `json:"drives"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("launch.json: %w", err)
	}
	if m.ExpectedMeasurement != measurement || m.VCPUs != 2 || len(m.Drives) != 4 {
		return fmt.Errorf("launch.json: measurement %s (state %s), vcpus %d, %d drives", m.ExpectedMeasurement, measurement, m.VCPUs, len(m.Drives))
	}
	for _, name := range []string{"launch_vm.sh", "README.txt", "OVMF.fd", "vmlinuz", "initrd.img"} {
		if _, err := os.Stat(filepath.Join(kitDir, name)); err != nil {
			return err
		}
	}
	info, err := exec.Command(tools["qemu-img"], "info", "--output=json", filepath.Join(kitDir, "user_config.qcow2")).Output()
	if err != nil || !strings.Contains(string(info), `"format": "qcow2"`) || !strings.Contains(string(info), `"virtual-size": 1073741824`) {
		return fmt.Errorf("user_config.qcow2 info: %v\n%s", err, info)
	}
	rawImg := filepath.Join(t.TempDir(), "uc.raw")
	if out, err := exec.Command(tools["qemu-img"], "convert", "-f", "qcow2", "-O", "raw", filepath.Join(kitDir, "user_config.qcow2"), rawImg).CombinedOutput(); err != nil {
		return fmt.Errorf("qemu-img convert: %v %s", err, out)
	}
	if got, err := exec.Command(tools["debugfs"], "-R", "cat /site.conf", rawImg).Output(); err != nil || !strings.Contains(string(got), "region=eu") {
		return fmt.Errorf("user_config.qcow2:/site.conf: %v %q", err, got)
	}
	// The startup kit (with the server's key) is on the root, not here.
	if got, _ := exec.Command(tools["debugfs"], "-R", "ls /nvflare", rawImg).Output(); strings.Contains(string(got), "startup") {
		return fmt.Errorf("user_config.qcow2 holds the startup kit: %s", got)
	}
	rootRaw := filepath.Join(t.TempDir(), "root.raw")
	if out, err := exec.Command(tools["qemu-img"], "convert", "-f", "qcow2", "-O", "raw", filepath.Join(kitDir, "root.qcow2"), rootRaw).CombinedOutput(); err != nil {
		return fmt.Errorf("qemu-img convert root: %v %s", err, out)
	}
	got, err := exec.Command(tools["debugfs"], "-R", "cat /app/run.sh", rootRaw).Output()
	if err != nil || !strings.Contains(string(got), "exec nvflare") {
		return fmt.Errorf("root.qcow2:/app/run.sh from the docker layer: %v %q", err, got)
	}
	got, err = exec.Command(tools["debugfs"], "-R", "cat /opt/flare/startup-kit/startup/fed_server.json", rootRaw).Output()
	if err != nil || !strings.Contains(string(got), `"target": "server1:8002"`) {
		return fmt.Errorf("root.qcow2: startup kit: %v %q", err, got)
	}
	return nil
}
