package provider

import (
	"bytes"
	"crypto/x509"
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

	"github.com/flarekit/terraform-provider-flare/internal/approve"
	"github.com/flarekit/terraform-provider-flare/internal/approve/approvetest"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// approvalProject is a project with a server and one declared client,
// site-1, plus extra.
func approvalProject(dir, extra string) string {
	return fmt.Sprintf(`
resource "flare_project" "p" {
  name = "acc"
  ca   = { dir = %[1]q }
}

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
%[2]s
`, filepath.Join(dir, "ca"), extra)
}

// approval is a flare_request_approval block; body holds its request.
func approval(name, outDir, body string) string {
	return fmt.Sprintf(`
resource "flare_request_approval" %q {
  project_id = flare_project.p.id
  server     = flare_server.server1.descriptor
  output_dir = %q
%s
}
`, name, outDir, body)
}

// writeRequest makes a request zip in Go as `nvflare cert request` would
// and returns its path and the site's key (which stays in the test).
func writeRequest(t *testing.T, dir, file, projectName, name, org, typ, role string, edit func(*approvetest.Request)) (string, *approvetest.Request) {
	t.Helper()
	r, err := approvetest.New(projectName, name, org, typ, role)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(r)
	}
	b, err := r.Zip()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, file)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, r
}

func TestAccRequestApproval_Lifecycle(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "approvals")
	caDir := filepath.Join(dir, "ca")
	reqs := filepath.Join(dir, "requests")
	if err := os.MkdirAll(reqs, 0o755); err != nil {
		t.Fatal(err)
	}
	site9, site9Req := writeRequest(t, reqs, "site-9.request.zip", "acc", "site-9", "nvidia", "client", "", nil)
	bob, _ := writeRequest(t, reqs, "bob.request.zip", "acc", "bob@nvidia.com", "nvidia", "admin", "lead", nil)
	foreign, _ := writeRequest(t, reqs, "foreign.request.zip", "other", "site-8", "nvidia", "client", "", nil)
	clash, _ := writeRequest(t, reqs, "site-1.request.zip", "acc", "site-1", "nvidia", "client", "", nil)
	again, _ := writeRequest(t, reqs, "site-9-again.request.zip", "acc", "site-9", "nvidia", "client", "", nil)
	srv, _ := writeRequest(t, reqs, "server.request.zip", "acc", "server2", "nvidia", "server", "", nil)
	tampered, _ := writeRequest(t, reqs, "tampered.request.zip", "acc", "site-7", "nvidia", "client", "", func(r *approvetest.Request) {
		r.SiteYAML = bytes.Replace(r.SiteYAML, []byte("org: nvidia"), []byte("org: evil"), 1)
	})
	truncated := filepath.Join(reqs, "truncated.request.zip")
	if b, err := os.ReadFile(site9); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(truncated, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	carolKey, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	carolCSR, err := approvetest.CSR(carolKey, "carol@nvidia.com", "nvidia", "member")
	if err != nil {
		t.Fatal(err)
	}

	site9Zip := filepath.Join(out, "site-9.signed.zip")
	out2 := filepath.Join(dir, "approvals2")
	base := approvalProject(dir, approval("site_9", out, fmt.Sprintf("  request_zip = %q", site9)))
	withBad := func(body string) string { return base + approval("bad", out, body) }
	var cert9 string

	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy: func(*terraform.State) error {
			for _, p := range []string{site9Zip, filepath.Join(out2, "site-9.signed.zip"), filepath.Join(caDir, "participants", "site-9.crt"),
				filepath.Join(caDir, "participants", "site-9.approval"), filepath.Join(out, "carol@nvidia.com.signed.zip")} {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					return fmt.Errorf("%s left after destroy (err=%v)", p, err)
				}
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				Config: base,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("flare_request_approval.site_9", tfjsonpath.New("participant_name"), knownvalue.StringExact("site-9")),
					statecheck.ExpectKnownValue("flare_request_approval.site_9", tfjsonpath.New("participant_type"), knownvalue.StringExact("client")),
					statecheck.ExpectKnownValue("flare_request_approval.site_9", tfjsonpath.New("role"), knownvalue.Null()),
					statecheck.ExpectKnownValue("flare_request_approval.site_9", tfjsonpath.New("org"), knownvalue.StringExact("nvidia")),
					statecheck.ExpectKnownValue("flare_request_approval.site_9", tfjsonpath.New("signed_zip"), knownvalue.StringExact(site9Zip)),
					statecheck.ExpectKnownValue("flare_request_approval.site_9", tfjsonpath.New("id"), knownvalue.StringExact(site9Zip)),
					statecheck.ExpectKnownValue("flare_request_approval.site_9", tfjsonpath.New("request_id"), knownvalue.StringExact(site9Req.Meta["request_id"].(string))),
					statecheck.ExpectKnownValue("flare_request_approval.site_9", tfjsonpath.New("rootca_fingerprint_sha256"), knownvalue.StringRegexp(regexp.MustCompile(`^SHA256(:[0-9A-F]{2}){32}$`))),
					statecheck.ExpectKnownValue("flare_request_approval.site_9", tfjsonpath.New("certificate_pem"), knownvalue.StringRegexp(regexp.MustCompile(`^-----BEGIN CERTIFICATE-----`))),
					statecheck.ExpectKnownValue("flare_request_approval.site_9", tfjsonpath.New("validity_days"), knownvalue.Int64Exact(1095)),
					statecheck.ExpectKnownValue("flare_request_approval.site_9", tfjsonpath.New("scheme"), knownvalue.StringExact("http")),
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					checkNoPrivateKeyInState,
					checkFileMode(site9Zip, 0o644),
					checkFileMode(filepath.Join(caDir, "participants", "site-9.crt"), 0o644),
					captureAttr("flare_request_approval.site_9", "certificate_pem", &cert9),
					checkSignedZip(caDir, site9Zip, site9Req, "client"),
					func(*terraform.State) error {
						if _, err := os.Stat(filepath.Join(caDir, "participants", "site-9.key")); !os.IsNotExist(err) {
							return fmt.Errorf("a key was written for an approved participant (err=%v)", err)
						}
						return nil
					},
				),
			},
			// Plan-time errors, each naming the attribute.
			{
				// The approved name is taken for declared participants too.
				Config: base + `
resource "flare_client" "site_9" {
  project_id = flare_project.p.id
  name       = "site-9"
  org        = "nvidia"
}
`,
				ExpectError: regexp.MustCompile(`(?s)Duplicate\s+Participant\s+Name.*"site-9"\s+is\s+already\s+a\s+participant`),
			},
			{Config: withBad(fmt.Sprintf("request_zip = %q", foreign)), PlanOnly: true, ExpectError: regexp.MustCompile(`(?s)Request\s+Of\s+Another\s+Project.*request\s+is\s+for\s+project\s+"other"`)},
			{Config: withBad(fmt.Sprintf("request_zip = %q", clash)), PlanOnly: true, ExpectError: regexp.MustCompile(`(?s)Participant\s+Name\s+Taken.*"site-1"\s+is\s+already\s+a\s+participant`)},
			{Config: withBad(fmt.Sprintf("request_zip = %q", again)), PlanOnly: true, ExpectError: regexp.MustCompile(`(?s)Participant\s+Name\s+Taken.*"site-9"\s+is\s+already\s+approved`)},
			{Config: withBad(fmt.Sprintf("request_zip = %q", tampered)), PlanOnly: true, ExpectError: regexp.MustCompile(`(?s)Invalid\s+Certificate\s+Request.*site_yaml_sha256`)},
			{Config: withBad(fmt.Sprintf("request_zip = %q", truncated)), PlanOnly: true, ExpectError: regexp.MustCompile(`(?s)Invalid\s+Certificate\s+Request.*not\s+a\s+readable\s+zip`)},
			{Config: withBad(fmt.Sprintf("request_zip = %q\n  participant_type = \"client\"", bob)), PlanOnly: true, ExpectError: regexp.MustCompile(`(?s)Request\s+Of\s+Another\s+Type.*asks\s+for\s+an\s+admin\s+certificate\s+\(lead\)`)},
			{Config: withBad(fmt.Sprintf("request_zip = %q\n  role = \"member\"", bob)), PlanOnly: true, ExpectError: regexp.MustCompile(`(?s)Request\s+Of\s+Another\s+Role.*asks\s+for\s+"lead"`)},
			{Config: withBad(fmt.Sprintf("request_zip = %q", srv)), PlanOnly: true, ExpectError: regexp.MustCompile(`Server\s+Requests\s+Are\s+Not\s+Approved\s+Here`)},
			{Config: withBad(fmt.Sprintf("request_zip = %q", filepath.Join(reqs, "missing.zip"))), PlanOnly: true, ExpectError: regexp.MustCompile(`(?s)Invalid\s+Certificate\s+Request.*does\s+not\s+exist`)},
			{Config: withBad(fmt.Sprintf("csr_pem = %q", carolCSR)), PlanOnly: true, ExpectError: regexp.MustCompile(`Missing\s+Participant\s+Type`)},
			{Config: withBad(fmt.Sprintf("csr_pem = %q\n  participant_type = \"admin\"\n  role = \"lead\"", carolCSR)), PlanOnly: true, ExpectError: regexp.MustCompile(`proposes\s+certificate\s+type\s+"member"`)},
			{Config: withBad(fmt.Sprintf("csr_pem = %q\n  request_zip = %q", carolCSR, bob)), PlanOnly: true, ExpectError: regexp.MustCompile(`Invalid\s+Attribute\s+Combination`)},
			{
				// A deleted signed zip is written again, same certificate.
				PreConfig: func() { os.Remove(site9Zip) },
				Config:    base,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_request_approval.site_9", plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttrPtr("flare_request_approval.site_9", "certificate_pem", &cert9),
					checkSignedZip(caDir, site9Zip, site9Req, "client"),
				),
			},
			{
				// So is an edited one.
				PreConfig: func() {
					b, _ := os.ReadFile(site9Zip)
					os.WriteFile(site9Zip, append(b, 0), 0o644)
				},
				Config: base,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_request_approval.site_9", plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttrPtr("flare_request_approval.site_9", "certificate_pem", &cert9),
					checkSignedZip(caDir, site9Zip, site9Req, "client"),
				),
			},
			{
				// An admin from a bare CSR.
				Config: base + approval("carol", out, fmt.Sprintf("csr_pem = %q\n  participant_type = \"admin\"\n  role = \"member\"", carolCSR)),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("flare_request_approval.carol", tfjsonpath.New("participant_name"), knownvalue.StringExact("carol@nvidia.com")),
					statecheck.ExpectKnownValue("flare_request_approval.carol", tfjsonpath.New("role"), knownvalue.StringExact("member")),
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					checkNoPrivateKeyInState,
					func(*terraform.State) error {
						root, err := readCert(filepath.Join(caDir, "rootCA.pem"))
						if err != nil {
							return err
						}
						b, err := os.ReadFile(filepath.Join(out, "carol@nvidia.com.signed.zip"))
						if err != nil {
							return err
						}
						s, err := approve.ReadSigned(b, root)
						if err != nil {
							return err
						}
						if pki.RoleOf(s.Cert) != "member" || !carolKey.PublicKey.Equal(s.Cert.PublicKey) {
							return fmt.Errorf("carol's certificate: role %q", pki.RoleOf(s.Cert))
						}
						return nil
					},
				),
			},
			{
				ResourceName: "flare_request_approval.site_9",
				ImportState:  true,
				ImportStateIdFunc: func(s *terraform.State) (string, error) {
					return site9Zip + "@" + s.RootModule().Resources["flare_project.p"].Primary.ID, nil
				},
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"server", "request_zip"},
			},
			{
				// The site makes a new request (new key): the approval is replaced.
				PreConfig: func() {
					_, site9Req = writeRequest(t, reqs, "site-9.request.zip", "acc", "site-9", "nvidia", "client", "", nil)
				},
				Config: base,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_request_approval.site_9", plancheck.ResourceActionReplace),
				}},
				Check: func(s *terraform.State) error {
					if err := checkSignedZip(caDir, site9Zip, site9Req, "client")(s); err != nil {
						return err
					}
					if s.RootModule().Resources["flare_request_approval.site_9"].Primary.Attributes["certificate_pem"] == cert9 {
						return fmt.Errorf("certificate not reissued for the new key")
					}
					return nil
				},
			},
			{
				// A new output_dir moves the zip; the certificate stays.
				Config: strings.Replace(base, fmt.Sprintf("output_dir = %q", out), fmt.Sprintf("output_dir = %q", out2), 1),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flare_request_approval.site_9", plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("flare_request_approval.site_9", "signed_zip", filepath.Join(out2, "site-9.signed.zip")),
					func(s *terraform.State) error {
						if _, err := os.Stat(site9Zip); !os.IsNotExist(err) {
							return fmt.Errorf("old signed zip left at %s (err=%v)", site9Zip, err)
						}
						return checkSignedZip(caDir, filepath.Join(out2, "site-9.signed.zip"), site9Req, "client")(s)
					},
				),
			},
		},
	})
}

// A kit from `nvflare package` knows the server by the host it dials: a
// server whose default_host differs from its name is refused at plan time.
func TestAccRequestApproval_ServerHost(t *testing.T) {
	dir := t.TempDir()
	req, _ := writeRequest(t, dir, "site-9.request.zip", "acc", "site-9", "nvidia", "client", "", nil)
	base := strings.Replace(approvalProject(dir, ""), "admin_port     = 8003", "admin_port     = 8003\n  default_host   = \"fl.example.com\"", 1)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{Config: base},
			{
				Config:      base + approval("site_9", filepath.Join(dir, "out"), fmt.Sprintf("request_zip = %q", req)),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Server\s+Name\s+Is\s+Not\s+Its\s+Host.*Name\s+the\s+flare_server\s+"fl.example.com"`),
			},
		},
	})
}

// checkSignedZip reads the signed zip as `nvflare package` checks it
// against the project's root, and ties it to the site's own key.
func checkSignedZip(caDir, zipPath string, site *approvetest.Request, certType string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		root, err := readCert(filepath.Join(caDir, "rootCA.pem"))
		if err != nil {
			return err
		}
		rec, err := os.ReadFile(filepath.Join(caDir, "participants", site.Name+".crt"))
		if err != nil {
			return fmt.Errorf("approval not recorded in the CA directory: %w", err)
		}
		return verifySignedZip(root, rec, zipPath, site, certType)
	}
}

// verifySignedZip checks a signed zip against the project's root and the
// certificate the project's key store recorded for the approval.
func verifySignedZip(root *x509.Certificate, rec []byte, zipPath string, site *approvetest.Request, certType string) error {
	b, err := os.ReadFile(zipPath)
	if err != nil {
		return err
	}
	if bytes.Contains(b, []byte("PRIVATE KEY")) {
		return fmt.Errorf("%s holds a private key", zipPath)
	}
	s, err := approve.ReadSigned(b, root)
	if err != nil {
		return fmt.Errorf("%s: %w", zipPath, err)
	}
	if !site.Key.PublicKey.Equal(s.Cert.PublicKey) {
		return fmt.Errorf("the certificate is not for the site's key")
	}
	if s.CertType != certType || s.RequestID != site.Meta["request_id"] {
		return fmt.Errorf("signed.json: type %q, request id %q", s.CertType, s.RequestID)
	}
	if s.Server != (approve.Endpoint{Scheme: "http", ConnectionSecurity: "mtls", Host: "server1", FedLearnPort: 8002, AdminPort: 8003}) {
		return fmt.Errorf("endpoint %+v", s.Server)
	}
	if !strings.Contains(string(rec), "BEGIN CERTIFICATE") || !bytes.Equal(rec, pki.CertPEM(s.Cert)) {
		return fmt.Errorf("the key store's record of %q is not the signed zip's certificate", site.Name)
	}
	return nil
}
