package provider

// Acceptance tests of the vault_transit CA backend against a real Vault or
// OpenBao server (VAULT_ADDR + a root VAULT_TOKEN). `make vault-test`
// starts an OpenBao dev server on 127.0.0.1 and runs them; without one
// they skip.

import (
	"context"
	"crypto/rsa"
	"fmt"
	"github.com/flarekit/terraform-provider-flare/internal/approve/approvetest"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/vault/api"
)

func vaultTestClient(t *testing.T) *api.Client {
	t.Helper()
	if os.Getenv("VAULT_ADDR") == "" || os.Getenv("VAULT_TOKEN") == "" {
		if os.Getenv("VAULTCA_REQUIRE_SERVER") != "" {
			t.Fatal("VAULT_ADDR/VAULT_TOKEN unset but a server is required")
		}
		t.Skip("VAULT_ADDR and VAULT_TOKEN are not set: run `make vault-test` (starts an OpenBao dev server on 127.0.0.1)")
	}
	c, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// uniqueKey names a Transit key for this test run, so reruns against the
// same server start clean.
func uniqueKey(t *testing.T) string {
	return fmt.Sprintf("flare-%s-%d", strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())), time.Now().UnixNano()%1e9)
}

func vaultProjectConfig(dir, key, providerBlock, caExtra string) string {
	return fmt.Sprintf(`
provider "flare" {
%[4]s
}

resource "flare_project" "p" {
  name = "vaulted"
  ca = {
    backend  = "vault_transit"
    dir      = %[1]q
    key_name = %[2]q
%[3]s
  }
}
`, filepath.Join(dir, "ca"), key, caExtra, providerBlock)
}

// TestAccVaultCA_Federation: a whole federation with the root key in
// Transit. Kits verify against the Transit public key, the root key never
// reaches the disk, and neither key nor token reaches state.
func TestAccVaultCA_Federation(t *testing.T) {
	client := vaultTestClient(t)
	dir := t.TempDir()
	key := uniqueKey(t)
	kits := filepath.Join(dir, "kits")
	config := vaultProjectConfig(dir, key, "", "") + fmt.Sprintf(`
resource "flare_server" "server1" {
  project_id = flare_project.p.id
  name       = "server1"
  org        = "nvidia"
}
resource "flare_client" "site_1" {
  project_id = flare_project.p.id
  name       = "site-1"
  org        = "nvidia"
}
resource "flare_admin" "admin" {
  project_id = flare_project.p.id
  name       = "admin@nvidia.com"
  org        = "nvidia"
  role       = "project_admin"
}
resource "flare_startup_kit" "server" {
  participant = flare_server.server1.descriptor
  output_dir  = %[1]q
}
resource "flare_startup_kit" "site_1" {
  participant = flare_client.site_1.descriptor
  server      = flare_server.server1.descriptor
  output_dir  = %[1]q
}
resource "flare_startup_kit" "admin" {
  participant = flare_admin.admin.descriptor
  server      = flare_server.server1.descriptor
  output_dir  = %[1]q
}
`, kits)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config,
				Check: resource.ComposeAggregateTestCheckFunc(
					checkNoPrivateKeyInState,
					checkNoValueInState(os.Getenv("VAULT_TOKEN")),
					resource.TestMatchResourceAttr("flare_project.p", "id", regexp.MustCompile(`^vault_transit:.*#transit/`+key+`@v1\?nvflare=2\.9$`)),
					resource.TestCheckResourceAttr("flare_project.p", "ca.key_version", "1"),
					resource.TestCheckResourceAttr("flare_project.p", "latest_key_version", "1"),
					checkKits(kits, map[string]string{"server1": "server", "site-1": "client", "admin@nvidia.com": "client"}),
					func(*terraform.State) error {
						if _, err := os.Stat(filepath.Join(dir, "ca", "rootCA.key")); !os.IsNotExist(err) {
							return fmt.Errorf("a root key file exists with the vault_transit backend (err=%v)", err)
						}
						return checkRootIsTransitKey(client, key, filepath.Join(kits, "server1", "startup", "rootCA.pem"))
					},
				),
			},
			{
				Config:   config,
				PlanOnly: true,
			},
			{
				// Rotating the key shows in refresh; pinning the new version
				// rolls the CA and everything under it.
				PreConfig: func() {
					if _, err := client.Logical().Write("transit/keys/"+key+"/rotate", nil); err != nil {
						t.Fatal(err)
					}
				},
				Config: strings.Replace(config, "key_name = ", "key_version = 2\n    key_name = ", 1),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_project.p", plancheck.ResourceActionDestroyBeforeCreate),
					plancheck.ExpectResourceAction("flare_client.site_1", plancheck.ResourceActionDestroyBeforeCreate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("flare_project.p", "ca.key_version", "2"),
					checkKits(kits, map[string]string{"server1": "server", "site-1": "client"}),
				),
			},
		},
	})
}

// TestAccVaultCA_AppRole logs in with AppRole under a policy that allows
// exactly what the CA needs: Transit read and sign, and the project's
// folder of the Vault key store (create and read entries, delete them).
func TestAccVaultCA_AppRole(t *testing.T) {
	client := vaultTestClient(t)
	key := uniqueKey(t)
	policy := fmt.Sprintf(`
path "transit/keys/%[1]s" { capabilities = ["read", "update"] }
path "transit/sign/%[1]s" { capabilities = ["update"] }
path "secret/data/flare/%[1]s/*" { capabilities = ["create", "read"] }
path "secret/metadata/flare/%[1]s/*" { capabilities = ["delete"] }
`, key)
	mustWrite(t, client, "sys/policies/acl/"+key, map[string]any{"policy": policy})
	mustWrite(t, client, "auth/approle/role/"+key, map[string]any{"token_policies": key})
	roleID := mustRead(t, client, "auth/approle/role/"+key+"/role-id")["role_id"].(string)
	secret, err := client.Logical().Write("auth/approle/role/"+key+"/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	secretID := secret.Data["secret_id"].(string)
	dir := t.TempDir()
	t.Setenv("VAULT_TOKEN", "") // AppRole only
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config: vaultProjectConfig(dir, key, fmt.Sprintf(`  vault = {
    approle = {
      role_id   = %q
      secret_id = %q
    }
  }`, roleID, secretID), ""),
			Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr("flare_project.p", "ca.key_version", "1"),
				checkNoValueInState(secretID),
			),
		}},
	})
}

// TestAccVaultCA_Denied: a token that may read the key but not sign gets a
// diagnostic naming the policy path it lacks, and nothing is written.
func TestAccVaultCA_Denied(t *testing.T) {
	client := vaultTestClient(t)
	key := uniqueKey(t)
	mustWrite(t, client, "transit/keys/"+key, map[string]any{"type": "rsa-2048"})
	mustWrite(t, client, "sys/policies/acl/"+key, map[string]any{"policy": fmt.Sprintf(`path "transit/keys/%s" { capabilities = ["read", "update"] }`, key)})
	tok, err := client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{key}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Setenv("VAULT_TOKEN", tok.Auth.ClientToken)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config:      vaultProjectConfig(dir, key, "", ""),
			ExpectError: regexp.MustCompile(`(?s)"update".*transit/sign/` + key),
		}},
		CheckDestroy: checkNoRootCert(dir),
	})
}

// TestAccVaultCA_ExportableKeyRefused: adopting an exportable key would let
// the root key leave Vault.
func TestAccVaultCA_ExportableKeyRefused(t *testing.T) {
	client := vaultTestClient(t)
	key := uniqueKey(t)
	mustWrite(t, client, "transit/keys/"+key, map[string]any{"type": "rsa-2048", "exportable": true})
	dir := t.TempDir()
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config:      vaultProjectConfig(dir, key, "", ""),
			ExpectError: regexp.MustCompile(`(?i)exportable`),
		}},
		CheckDestroy: checkNoRootCert(dir),
	})
}

// TestAccVaultCA_Down: Vault unreachable during apply gives a clear error
// naming the address, fast, and leaves nothing behind.
func TestAccVaultCA_Down(t *testing.T) {
	vaultTestClient(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	dir := t.TempDir()
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{{
			Config:      vaultProjectConfig(dir, uniqueKey(t), fmt.Sprintf("  vault = { address = %q }", "http://"+addr), ""),
			ExpectError: regexp.MustCompile(regexp.QuoteMeta(addr)),
		}},
		CheckDestroy: checkNoRootCert(dir),
	})
}

func checkNoRootCert(dir string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		if _, err := os.Stat(filepath.Join(dir, "ca", "rootCA.pem")); !os.IsNotExist(err) {
			return fmt.Errorf("a root certificate was written although the CA could not be set up (err=%v)", err)
		}
		return nil
	}
}

func checkNoValueInState(secret string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		if secret == "" {
			return nil
		}
		for _, m := range s.Modules {
			for name, r := range m.Resources {
				for k, v := range r.Primary.Attributes {
					if strings.Contains(v, secret) {
						return fmt.Errorf("%s.%s holds a Vault secret", name, k)
					}
				}
			}
		}
		return nil
	}
}

// checkRootIsTransitKey compares the root certificate's key with the
// public key Vault reports for the Transit key.
func checkRootIsTransitKey(client *api.Client, key, rootPEM string) error {
	root, err := readCert(rootPEM)
	if err != nil {
		return err
	}
	sec, err := client.Logical().Read("transit/keys/" + key)
	if err != nil {
		return err
	}
	pubPEM := sec.Data["keys"].(map[string]any)["1"].(map[string]any)["public_key"].(string)
	if !strings.Contains(pubPEM, "PUBLIC KEY") {
		return fmt.Errorf("no public key for %s", key)
	}
	if _, ok := root.PublicKey.(*rsa.PublicKey); !ok {
		return fmt.Errorf("root key is %T", root.PublicKey)
	}
	got, err := publicKeyPEM(root)
	if err != nil {
		return err
	}
	if strings.TrimSpace(got) != strings.TrimSpace(pubPEM) {
		return fmt.Errorf("root certificate key differs from transit/keys/%s version 1", key)
	}
	return nil
}

func mustWrite(t *testing.T, c *api.Client, p string, data map[string]any) {
	t.Helper()
	if _, err := c.Logical().Write(p, data); err != nil {
		t.Fatalf("write %s: %v", p, err)
	}
}

func mustRead(t *testing.T, c *api.Client, p string) map[string]any {
	t.Helper()
	s, err := c.Logical().Read(p)
	if err != nil || s == nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return s.Data
}

// TestAccVaultCA_RequestApproval: sites' requests approved on a project
// whose keys live in the Vault key store (root key in Transit, nothing on
// the runner's disk). The signed zips verify against the Transit-held root;
// the approved names are recorded in Vault KV (approvals/<name>), so names
// clash both ways with participants whose keys are in KV; a fresh plan is
// empty; removing an approval removes its record.
func TestAccVaultCA_RequestApproval(t *testing.T) {
	client := vaultTestClient(t)
	dir := t.TempDir()
	key := uniqueKey(t)
	kvBase := "flare/" + key + "/v1"
	reqs := filepath.Join(dir, "requests")
	if err := os.MkdirAll(reqs, 0o755); err != nil {
		t.Fatal(err)
	}
	req9, site9 := writeRequest(t, reqs, "site-9.request.zip", "vaulted", "site-9", "nvidia", "client", "", nil)
	reqA, siteA := writeRequest(t, reqs, "site-a.request.zip", "vaulted", "site-a", "nvidia", "client", "", nil)
	reqB, siteB := writeRequest(t, reqs, "site-b.request.zip", "vaulted", "site-b", "nvidia", "client", "", nil)
	clash, _ := writeRequest(t, reqs, "site-1.request.zip", "vaulted", "site-1", "nvidia", "client", "", nil)
	out := filepath.Join(dir, "out")
	bulkOut := filepath.Join(dir, "bulk")
	base := vaultProjectConfig(dir, key, "", "") + `
resource "flare_server" "server1" {
  project_id     = flare_project.p.id
  name           = "server1"
  org            = "nvidia"
  fed_learn_port = 8002
  admin_port     = 8003
}

resource "flare_client" "site_1" {
  project_id = flare_project.p.id
  name       = "site-1"
  org        = "nvidia"
}
`
	single := func(reqZip string) string {
		return fmt.Sprintf(`
resource "flare_request_approval" "site_9" {
  project_id  = flare_project.p.id
  server      = flare_server.server1.descriptor
  request_zip = %q
  output_dir  = %q
}
`, reqZip, out)
	}
	bulk := func(zips ...string) string { return approvals(bulkOut, "", zips...) }
	kvRecord := func(name string) ([]byte, bool) {
		s, err := client.KVv2("secret").Get(context.Background(), kvBase+"/approvals/"+name)
		if err != nil || s == nil || s.Data == nil {
			return nil, false
		}
		c, _ := s.Data["certificate"].(string)
		return []byte(c), true
	}
	kvHas := func(name string, want bool) resource.TestCheckFunc {
		return func(*terraform.State) error {
			if _, has := kvRecord(name); has != want {
				return fmt.Errorf("KV secret/%s/approvals/%s: present %v, want %v", kvBase, name, has, want)
			}
			return nil
		}
	}
	signed := func(zipPath string, site *approvetest.Request) resource.TestCheckFunc {
		return func(s *terraform.State) error {
			root, err := pki.ParseCertPEM([]byte(s.RootModule().Resources["flare_project.p"].Primary.Attributes["root_ca_pem"]))
			if err != nil {
				return err
			}
			rec, ok := kvRecord(site.Name)
			if !ok {
				return fmt.Errorf("%q is not recorded in Vault KV", site.Name)
			}
			return verifySignedZip(root, rec, zipPath, site, "client")
		}
	}
	full := base + single(req9) + bulk(reqA, reqB)
	empty := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             resource.ComposeAggregateTestCheckFunc(kvHas("site-9", false), kvHas("site-a", false), kvHas("site-b", false)),
		Steps: []resource.TestStep{
			{
				Config: full,
				Check: resource.ComposeAggregateTestCheckFunc(
					checkNoPrivateKeyInState,
					signed(filepath.Join(out, "site-9.signed.zip"), site9),
					signed(filepath.Join(bulkOut, "site-a.signed.zip"), siteA),
					signed(filepath.Join(bulkOut, "site-b.signed.zip"), siteB),
					func(*terraform.State) error {
						if _, err := os.Stat(filepath.Join(dir, "ca")); !os.IsNotExist(err) {
							return fmt.Errorf("approvals on a Vault key store project made a CA directory (err=%v)", err)
						}
						return nil
					},
				),
			},
			{Config: full, ConfigPlanChecks: empty},
			{
				// A deleted signed zip is rewritten with the same certificate.
				PreConfig: func() {
					if err := os.Remove(filepath.Join(out, "site-9.signed.zip")); err != nil {
						t.Fatal(err)
					}
				},
				Config: full,
				Check:  signed(filepath.Join(out, "site-9.signed.zip"), site9),
			},
			{
				// An approved name is taken for participants (their keys in KV) ...
				Config: full + `
resource "flare_client" "site_9" {
  project_id = flare_project.p.id
  name       = "site-9"
  org        = "nvidia"
}
`,
				ExpectError: regexp.MustCompile(`(?s)Duplicate\s+Participant\s+Name.*site-9.*approvals/site-9`),
			},
			{
				// ... and a participant's name is taken for approvals, at plan time.
				Config:      base + single(clash) + bulk(reqA, reqB),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Participant\s+Name\s+Taken.*"site-1"\s+is\s+already\s+a\s+participant.*participants/site-1`),
			},
			{
				Config:      base + single(req9) + bulk(reqA, reqB, clash),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Participant\s+Name\s+Taken.*"site-1"\s+is\s+already\s+a\s+participant`),
			},
			{
				// A request that leaves the set loses its record and zip.
				Config: base + single(req9) + bulk(reqA),
				Check: resource.ComposeAggregateTestCheckFunc(
					kvHas("site-a", true), kvHas("site-b", false), kvHas("site-9", true),
					func(*terraform.State) error {
						if _, err := os.Stat(filepath.Join(bulkOut, "site-b.signed.zip")); !os.IsNotExist(err) {
							return fmt.Errorf("site-b's signed zip is still there (err=%v)", err)
						}
						return nil
					},
				),
			},
		},
	})
}
