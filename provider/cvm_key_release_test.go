package provider

import (
	"bytes"
	"context"
	"errors"
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
	"github.com/hashicorp/vault/api"

	"github.com/flarekit/terraform-provider-flare/internal/cvm"
	"github.com/flarekit/terraform-provider-flare/internal/cvm/cvmtest"
	"github.com/flarekit/terraform-provider-flare/internal/luks"
	"github.com/flarekit/terraform-provider-flare/internal/measure/measuretest"
	"github.com/flarekit/terraform-provider-flare/kbs"
	"github.com/flarekit/terraform-provider-flare/kbs/kbstest"
)

// TestAccCVMKit_KeyRelease builds a kit with its own initrd whose root key
// goes to a flare-kbs directory store with the rule for the kit's
// measurement: the key never reaches state or the kit, it opens the kit's
// LUKS root, a changed command line changes the measurement in the plan
// and the rule in the same apply, and destroy removes both.
func TestAccCVMKit_KeyRelease(t *testing.T) {
	storeDir := filepath.Join(t.TempDir(), "kbs-store")
	testKeyRelease(t, fmt.Sprintf("store_dir   = %q", storeDir), func() (kbs.Store, error) { return kbs.NewDirStore(storeDir) })
}

// TestAccVaultCVMKit_KeyRelease: the same with the broker's store in a
// Vault/OpenBao KV version 1 mount at Trustee's layout (make vault-test).
func TestAccVaultCVMKit_KeyRelease(t *testing.T) {
	client := vaultTestClient(t)
	mount := strings.ToLower(uniqueKey(t))
	if err := client.Sys().Mount(mount, &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Sys().Unmount(mount) })
	testKeyRelease(t, fmt.Sprintf("vault_mount = %q", mount), func() (kbs.Store, error) { return kbs.NewVaultStore(client, mount, "") })
}

func testKeyRelease(t *testing.T, storeAttr string, openStore func() (kbs.Store, error)) {
	tools := needTool(t, "qemu-img", "debugfs", "mkfs.ext4")
	init := "/bin/busybox" // a static ELF standing in for flare-init: the kit is built, not booted
	if _, err := os.Stat(init); err != nil {
		t.Skip("no static busybox (apt-get install busybox-static) to stand in for flare-init")
	}
	t.Setenv("FLARE_GUEST_INIT", init)
	dir := t.TempDir()
	fw := measuretest.Firmware{Size: 2 << 20, Sections: measuretest.AmdSevSections, HashesGPA: 0x810000, HashesSize: 0x1000}
	os.WriteFile(filepath.Join(dir, "OVMF.fd"), fw.Build(), 0o644)
	writeDockerSave(t, filepath.Join(dir, "image.tar"))
	caPEM, _, err := kbstest.NewTLS("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	kernel := cvmtest.FakeGuestKernel(t)
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
resource "flare_client" "c" {
  project_id = flare_project.p.id
  name       = "site-1"
  org        = "nvidia"
}
resource "flare_startup_kit" "c" {
  participant = flare_client.c.descriptor
  server      = flare_server.s.descriptor
  output_dir  = %[2]q
}
resource "flare_cvm_kit" "c" {
  project_id         = flare_project.p.id
  startup_kit_dir    = flare_startup_kit.c.kit_dir
  startup_kit_sha256 = flare_startup_kit.c.kit_sha256
  output_dir         = %[3]q

  role                   = "client"
  root_drive_size        = 1
  applog_drive_size      = 1
  user_config_drive_size = 1
  user_data_drive_size   = 1
  docker_archive         = %[4]q
  allowed_out_ports      = [8002]
  vcpus                  = 2
  memory_mib             = 2048
  firmware               = %[5]q
  kernel                 = %[6]q
  # guest_init: $FLARE_GUEST_INIT (%[7]s), the default's first choice
  kernel_cmdline         = %[8]q
  key_release = {
    url         = "https://10.0.2.2:8999"
    ca_cert_pem = %[9]q
    %[10]s
  }
}
`, filepath.Join(dir, "ca"), filepath.Join(dir, "kits"), out, filepath.Join(dir, "image.tar"), filepath.Join(dir, "OVMF.fd"),
			kernel, init, cmdline, string(caPEM), storeAttr)
	}
	path := kbs.ResourcePath{Repo: "flare", Type: "root-key", Tag: "site-1"}
	// The store holds the rule for the state's measurement and a key that
	// opens the kit's root.
	checkStore := func(s *terraform.State) error {
		attrs := s.RootModule().Resources["flare_cvm_kit.c"].Primary.Attributes
		st, err := openStore()
		if err != nil {
			return err
		}
		pol, err := st.GetPolicy(context.Background(), path)
		if err != nil {
			return err
		}
		if len(pol.Measurements) != 1 || pol.Measurements[0] != attrs["expected_measurement"] {
			return fmt.Errorf("rule %v, kit measurement %s", pol.Measurements, attrs["expected_measurement"])
		}
		key, err := st.GetSecret(context.Background(), path)
		if err != nil {
			return err
		}
		if attrs["root_key_file"] != "" || attrs["key_release.resource"] != "flare/root-key/site-1" || attrs["guest_init"] != init {
			return fmt.Errorf("root_key_file %q, resource %q, guest_init %q", attrs["root_key_file"], attrs["key_release.resource"], attrs["guest_init"])
		}
		raw := filepath.Join(t.TempDir(), "root.raw")
		if b, err := exec.Command(tools["qemu-img"], "convert", "-f", "qcow2", "-O", "raw", filepath.Join(attrs["kit_dir"], "crypt_root.qcow2"), raw).CombinedOutput(); err != nil {
			return fmt.Errorf("qemu-img: %v %s", err, b)
		}
		f, err := os.Open(raw)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := luks.Open(f, key); err != nil {
			return fmt.Errorf("the stored key does not open the kit's root: %w", err)
		}
		if p := fileWith(t, out, key); p != "" {
			return fmt.Errorf("%s holds the root key", p)
		}
		return nil
	}
	var first string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy: func(*terraform.State) error {
			st, err := openStore()
			if err != nil {
				return err
			}
			if _, err := st.GetSecret(context.Background(), path); !errors.Is(err, kbs.ErrNotFound) {
				return fmt.Errorf("destroy left the key in the store: %v", err)
			}
			if _, err := st.GetPolicy(context.Background(), path); !errors.Is(err, kbs.ErrNotFound) {
				return fmt.Errorf("destroy left the rule in the store: %v", err)
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				// An encrypted root with the kit's own initrd needs a broker.
				Config:      regexp.MustCompile(`(?s)  key_release = \{.*?\n  \}\n`).ReplaceAllString(config("console=ttyS0"), ""),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)key_release.*encrypt_root\s+=\s+false`),
			},
			{
				Config: config("console=ttyS0"),
				Check: resource.ComposeAggregateTestCheckFunc(
					checkNoPrivateKeyInState,
					resource.TestCheckResourceAttr("flare_cvm_kit.c", "root_encrypted", "true"),
					resource.TestMatchResourceAttr("flare_cvm_kit.c", "expected_measurement", regexp.MustCompile(`^[0-9a-f]{96}$`)),
					captureAttr("flare_cvm_kit.c", "expected_measurement", &first),
					checkStore,
				),
			},
			{
				// A new command line: a new measurement in the plan, and the
				// rule follows in the same apply.
				Config: config("console=ttyS0 quiet"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_cvm_kit.c", plancheck.ResourceActionUpdate),
					expectPlannedMeasurementChange("flare_cvm_kit.c", &first),
				}},
				Check: checkStore,
			},
			{
				// The key vanished from the broker: the kit could not boot,
				// so refresh sees drift and apply rebuilds it with a new key.
				PreConfig: func() {
					st, err := openStore()
					if err != nil {
						t.Fatal(err)
					}
					if err := st.DeleteSecret(context.Background(), path); err != nil {
						t.Fatal(err)
					}
				},
				Config: config("console=ttyS0 quiet"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_cvm_kit.c", plancheck.ResourceActionUpdate),
				}},
				Check: checkStore,
			},
			{
				Config:   config("console=ttyS0 quiet"),
				PlanOnly: true,
			},
		},
	})
}

// fileWith returns a file under dir whose bytes contain secret.
func fileWith(t *testing.T, dir string, secret []byte) string {
	t.Helper()
	found := ""
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && found == "" {
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, secret) {
				found = p
			}
		}
		return nil
	})
	return found
}

func TestCCIssuersMismatch(t *testing.T) {
	kit := t.TempDir()
	issuers := []cvm.Issuer{{ID: "snp_authorizer"}, {ID: "mock_authorizer"}}
	if w := ccIssuersMismatch(kit, nil); w != "" {
		t.Errorf("no issuers anywhere: %q", w)
	}
	if w := ccIssuersMismatch(kit, issuers); !strings.Contains(w, "no CC configuration") {
		t.Errorf("kit without cc: %q", w)
	}
	os.MkdirAll(filepath.Join(kit, "local"), 0o755)
	os.WriteFile(filepath.Join(kit, "local", "cc_manager__p_resources.json"), []byte(`{"components":[{"id":"cc_manager",
	  "args":{"cc_issuers_conf":[{"issuer_id":"mock_authorizer","token_expiration":100},{"issuer_id":"snp_authorizer","token_expiration":250}]}}]}`), 0o644)
	if w := ccIssuersMismatch(kit, issuers); w != "" {
		t.Errorf("same issuers in another order: %q", w)
	}
	if w := ccIssuersMismatch(kit, issuers[:1]); !strings.Contains(w, "make them the same") {
		t.Errorf("different issuers: %q", w)
	}
}
