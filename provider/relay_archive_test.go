package provider

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
)

// TestAccRelayAndArchives builds a relay, a client behind it, and packs
// kits as tgz and zip.
func TestAccRelayAndArchives(t *testing.T) {
	dir := t.TempDir()
	kits := filepath.Join(dir, "kits")
	config := func(archive string) string {
		return fmt.Sprintf(`
resource "flare_project" "p" {
  name = "relayed"
  ca   = { dir = %[1]q }
}
resource "flare_server" "s" {
  project_id = flare_project.p.id
  name       = "server1"
  org        = "nvidia"
}
resource "flare_relay" "r" {
  project_id   = flare_project.p.id
  name         = "relay-1"
  org          = "nvidia"
  default_host = "relay1.example.com"
  port         = 8102
}
resource "flare_client" "c" {
  project_id = flare_project.p.id
  name       = "site-1"
  org        = "nvidia"
  connect_to = flare_relay.r.name
}
resource "flare_startup_kit" "relay" {
  participant = flare_relay.r.descriptor
  server      = flare_server.s.descriptor
  output_dir  = %[2]q
  archive     = "zip"
}
resource "flare_startup_kit" "client" {
  participant = flare_client.c.descriptor
  server      = flare_server.s.descriptor
  relay       = flare_relay.r.descriptor
  output_dir  = %[2]q
  archive     = %[3]q
}
`, filepath.Join(dir, "ca"), kits, archive)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config("tgz"),
				Check: resource.ComposeAggregateTestCheckFunc(
					checkNoPrivateKeyInState,
					resource.TestCheckResourceAttr("flare_server.s", "admin_port", "8002"),
					resource.TestCheckResourceAttr("flare_startup_kit.client", "archive_path", filepath.Join(kits, "site-1.tgz")),
					checkKits(kits, map[string]string{"relay-1": "client", "site-1": "client"}),
					checkJSONField(filepath.Join(kits, "site-1", "local", "relay__resources.json"), []string{"relay_config", "address"}, "relay1.example.com:8102"),
					checkJSONField(filepath.Join(kits, "relay-1", "startup", "fed_relay.json"), []string{"connect_to", "address"}, "server1:8002"),
					checkJSONField(filepath.Join(kits, "relay-1", "local", "comm_config.json"), []string{"internal", "resources", "port"}, float64(8102)),
					checkCertSANs(filepath.Join(kits, "relay-1", "startup", "server.crt"), "relay-1", "relay1.example.com"),
					checkArchive(filepath.Join(kits, "site-1.tgz"), kits, "site-1"),
					checkArchive(filepath.Join(kits, "relay-1.zip"), kits, "relay-1"),
					checkFileMode(filepath.Join(kits, "site-1.tgz"), 0o600),
				),
			},
			{
				// Switching the archive format replaces the old archive.
				Config: config("none"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_startup_kit.client", plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckNoResourceAttr("flare_startup_kit.client", "archive_path"),
					func(*terraform.State) error {
						if _, err := os.Stat(filepath.Join(kits, "site-1.tgz")); !os.IsNotExist(err) {
							return fmt.Errorf("old archive still there (err=%v)", err)
						}
						return nil
					},
				),
			},
			{
				// Deleting the archive is drift too.
				PreConfig: func() { os.Remove(filepath.Join(kits, "relay-1.zip")) },
				Config:    config("none"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_startup_kit.relay", plancheck.ResourceActionUpdate),
				}},
				Check: checkArchive(filepath.Join(kits, "relay-1.zip"), kits, "relay-1"),
			},
		},
	})
}

// TestAccCertificateRenewal moves the clock past early_renewal_days and
// expects a new key and certificate.
func TestAccCertificateRenewal(t *testing.T) {
	dir := t.TempDir()
	config := fmt.Sprintf(`
resource "flare_project" "p" {
  name = "renew"
  ca   = { dir = %q }
}
resource "flare_client" "c" {
  project_id         = flare_project.p.id
  name               = "site-1"
  org                = "nvidia"
  validity_days      = 30
  early_renewal_days = 7
}
`, filepath.Join(dir, "ca"))
	var first string
	t.Cleanup(func() { now = time.Now })
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("flare_client.c", "ready_for_renewal", "false"),
					captureAttr("flare_client.c", "cert_fingerprint", &first),
				),
			},
			{
				PreConfig: func() { now = func() time.Time { return time.Now().AddDate(0, 0, 24) } },
				Config:    config,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_client.c", plancheck.ResourceActionReplace),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("flare_client.c", "ready_for_renewal", "false"),
					func(s *terraform.State) error {
						if s.RootModule().Resources["flare_client.c"].Primary.Attributes["cert_fingerprint"] == first {
							return fmt.Errorf("certificate was not renewed")
						}
						return nil
					},
				),
			},
		},
	})
}

// TestAccDuplicateName: two resources claiming one name fail at create.
func TestAccDuplicateName(t *testing.T) {
	dir := t.TempDir()
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config: fmt.Sprintf(`
resource "flare_project" "p" {
  name = "dup"
  ca   = { dir = %q }
}
resource "flare_client" "a" {
  project_id = flare_project.p.id
  name       = "site-1"
  org        = "nvidia"
}
resource "flare_relay" "b" {
  project_id = flare_project.p.id
  name       = "site-1"
  org        = "nvidia"
  depends_on = [flare_client.a]
}
`, filepath.Join(dir, "ca")),
			ExpectError: regexp.MustCompile(`"site-1"\s+is\s+already\s+a\s+participant\s+of\s+this\s+project`),
		}},
	})
}

func checkCertSANs(p string, want ...string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		cert, err := readCert(p)
		if err != nil {
			return err
		}
		got := append([]string(nil), cert.DNSNames...)
		sort.Strings(got)
		sort.Strings(want)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("%s SANs %v, want %v", p, got, want)
		}
		return nil
	}
}

// checkArchive compares every file in an archive with the kit on disk.
func checkArchive(archive, kits, name string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		files := map[string][]byte{}
		if filepath.Ext(archive) == ".zip" {
			zr, err := zip.OpenReader(archive)
			if err != nil {
				return err
			}
			defer zr.Close()
			for _, f := range zr.File {
				if f.FileInfo().IsDir() {
					continue
				}
				rc, err := f.Open()
				if err != nil {
					return err
				}
				files[f.Name], _ = io.ReadAll(rc)
				rc.Close()
			}
		} else {
			fh, err := os.Open(archive)
			if err != nil {
				return err
			}
			defer fh.Close()
			gz, err := gzip.NewReader(fh)
			if err != nil {
				return err
			}
			tr := tar.NewReader(gz)
			for {
				hdr, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					return err
				}
				if hdr.Typeflag == tar.TypeReg {
					files[hdr.Name], _ = io.ReadAll(tr)
				}
			}
		}
		count := 0
		err := filepath.Walk(filepath.Join(kits, name), func(p string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(kits, p)
			data, _ := os.ReadFile(p)
			if string(files[filepath.ToSlash(rel)]) != string(data) {
				return fmt.Errorf("%s differs in %s", rel, archive)
			}
			count++
			return nil
		})
		if err != nil {
			return err
		}
		if count != len(files) {
			return fmt.Errorf("%s has %d files, kit has %d", archive, len(files), count)
		}
		return nil
	}
}
