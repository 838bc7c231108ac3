package provider

import (
	"bytes"
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
)

// approvals is a flare_request_approvals block over the given request zips.
func approvals(outDir string, extra string, zips ...string) string {
	var b strings.Builder
	for _, z := range zips {
		fmt.Fprintf(&b, "    %q,\n", z)
	}
	return fmt.Sprintf(`
resource "flare_request_approvals" "sites" {
  project_id = flare_project.p.id
  server     = flare_server.server1.descriptor
  output_dir = %q
  request_zips = [
%s  ]
%s
}
`, outDir, b.String(), extra)
}

func TestAccRequestApprovals_Lifecycle(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "approvals")
	caDir := filepath.Join(dir, "ca")
	parts := filepath.Join(caDir, "participants")
	reqs := filepath.Join(dir, "requests")
	if err := os.MkdirAll(reqs, 0o755); err != nil {
		t.Fatal(err)
	}
	siteA, siteAReq := writeRequest(t, reqs, "site-a.request.zip", "acc", "site-a", "nvidia", "client", "", nil)
	siteB, siteBReq := writeRequest(t, reqs, "site-b.request.zip", "acc", "site-b", "nvidia", "client", "", nil)
	bob, bobReq := writeRequest(t, reqs, "bob.request.zip", "acc", "bob@nvidia.com", "nvidia", "admin", "lead", nil)
	siteD, siteDReq := writeRequest(t, reqs, "site-d.request.zip", "acc", "site-d", "nvidia", "client", "", nil)
	solo, _ := writeRequest(t, reqs, "solo.request.zip", "acc", "solo", "nvidia", "client", "", nil)
	soloAgain, _ := writeRequest(t, reqs, "solo-again.request.zip", "acc", "solo", "nvidia", "client", "", nil)
	foreign, _ := writeRequest(t, reqs, "foreign.request.zip", "other", "site-8", "nvidia", "client", "", nil)
	clash, _ := writeRequest(t, reqs, "site-1.request.zip", "acc", "site-1", "nvidia", "client", "", nil)
	dupA, _ := writeRequest(t, reqs, "site-a-again.request.zip", "acc", "site-a", "nvidia", "client", "", nil)
	srv, _ := writeRequest(t, reqs, "server.request.zip", "acc", "server2", "nvidia", "server", "", nil)
	projAdmin, _ := writeRequest(t, reqs, "padmin.request.zip", "acc", "pa@nvidia.com", "nvidia", "admin", "lead", func(r *approvetest.Request) {
		r.Meta["cert_type"], r.Meta["cert_role"] = "project_admin", "project_admin"
	})
	tampered, _ := writeRequest(t, reqs, "tampered.request.zip", "acc", "site-7", "nvidia", "client", "", func(r *approvetest.Request) {
		r.SiteYAML = bytes.Replace(r.SiteYAML, []byte("org: nvidia"), []byte("org: evil"), 1)
	})
	truncated := filepath.Join(reqs, "truncated.request.zip")
	if b, err := os.ReadFile(siteA); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(truncated, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}

	// A singular approval of "solo" shares the project.
	base := approvalProject(dir, approval("solo", filepath.Join(dir, "solo"), fmt.Sprintf("  request_zip = %q", solo)))
	three := base + approvals(out, "", siteA, siteB, bob)
	four := base + approvals(out, "", siteA, siteB, bob, siteD)
	withBad := func(bad string) string { return base + approvals(out, "", siteA, siteB, bob, siteD, bad) }
	zipOf := func(name string) string { return filepath.Join(out, approve.SignedZipName(name)) }
	addr := "flare_request_approvals.sites"

	var before map[string]int64
	snapshot := func() {
		before = mtimes(t, out)
		for p, m := range mtimes(t, parts) {
			before[p] = m
		}
	}
	// untouchedExcept: no signed zip or record was rewritten but names'.
	untouchedExcept := func(names ...string) resource.TestCheckFunc {
		return func(*terraform.State) error {
			after := mtimes(t, out)
			for p, m := range mtimes(t, parts) {
				after[p] = m
			}
			for p, m := range before {
				skip := false
				for _, n := range names {
					if strings.HasPrefix(filepath.Base(p), n+".") {
						skip = true
					}
				}
				if !skip && after[p] != m {
					return fmt.Errorf("%s was rewritten", p)
				}
			}
			return nil
		}
	}
	readRecord := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(parts, name+".crt"))
		return string(b)
	}
	var certA, certB string
	gone := func(paths ...string) resource.TestCheckFunc {
		return func(*terraform.State) error {
			for _, p := range paths {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					return fmt.Errorf("%s left (err=%v)", p, err)
				}
			}
			return nil
		}
	}
	planError := func(config, re string) resource.TestStep {
		return resource.TestStep{Config: config, PlanOnly: true, ExpectError: regexp.MustCompile(re)}
	}

	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy: func(s *terraform.State) error {
			for _, n := range []string{"site-a", "site-b", "site-d", "bob@nvidia.com"} {
				if err := gone(zipOf(n), filepath.Join(parts, n+".crt"), filepath.Join(parts, n+".approval"))(s); err != nil {
					return err
				}
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				Config: three,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("signed_zips"), knownvalue.MapExact(map[string]knownvalue.Check{
						"site-a": knownvalue.StringExact(zipOf("site-a")), "site-b": knownvalue.StringExact(zipOf("site-b")),
						"bob@nvidia.com": knownvalue.StringExact(zipOf("bob@nvidia.com")),
					})),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("signed_zip_sha256"), knownvalue.MapSizeExact(3)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("signed_zip_sha256").AtMapKey("site-a"), knownvalue.StringRegexp(regexp.MustCompile(`^[0-9a-f]{64}$`))),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("rootca_fingerprint_sha256"), knownvalue.StringRegexp(regexp.MustCompile(`^SHA256(:[0-9A-F]{2}){32}$`))),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.StringExact(out)),
				},
				Check: resource.ComposeAggregateTestCheckFunc(
					checkNoPrivateKeyInState,
					checkFileMode(zipOf("site-a"), 0o644),
					checkSignedZip(caDir, zipOf("site-a"), siteAReq, "client"),
					checkSignedZip(caDir, zipOf("site-b"), siteBReq, "client"),
					checkSignedZip(caDir, zipOf("bob@nvidia.com"), bobReq, "lead"),
					gone(filepath.Join(parts, "site-a.key")),
					func(*terraform.State) error {
						certA, certB = readRecord("site-a"), readRecord("site-b")
						return nil
					},
				),
			},
			{
				// +1 request: one approval, nothing else touched.
				PreConfig: snapshot,
				Config:    four,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
					plancheck.ExpectUnknownValue(addr, tfjsonpath.New("signed_zip_sha256").AtMapKey("site-d")),
					plancheck.ExpectKnownValue(addr, tfjsonpath.New("signed_zip_sha256").AtMapKey("site-a"), knownvalue.StringRegexp(regexp.MustCompile(`^[0-9a-f]{64}$`))),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					untouchedExcept("site-d"),
					checkSignedZip(caDir, zipOf("site-d"), siteDReq, "client"),
					resource.TestCheckResourceAttr(addr, "signed_zips.%", "4"),
				),
			},
			// Plan-time errors, each naming the request file.
			planError(withBad(foreign), `(?s)Request\s+Of\s+Another\s+Project.*foreign\.request\.zip.*request\s+is\s+for\s+project\s+"other"`),
			planError(withBad(dupA), `(?s)Duplicate\s+Request\s+Name.*site-a.*requests\s+"site-a"\s+too`),
			planError(withBad(clash), `(?s)Participant\s+Name\s+Taken.*site-1\.request\.zip.*"site-1"\s+is\s+already\s+a\s+participant`),
			planError(withBad(soloAgain), `(?s)Participant\s+Name\s+Taken.*solo-again\.request\.zip.*"solo"\s+is\s+already\s+approved`),
			planError(withBad(tampered), `(?s)Invalid\s+Certificate\s+Request.*tampered\.request\.zip.*site_yaml_sha256`),
			planError(withBad(truncated), `(?s)Invalid\s+Certificate\s+Request.*truncated\.request\.zip.*not\s+a\s+readable\s+zip`),
			planError(withBad(srv), `(?s)Server\s+Requests\s+Are\s+Not\s+Approved\s+Here.*server\.request\.zip`),
			planError(withBad(projAdmin), `(?s)Invalid\s+Certificate\s+Request.*padmin\.request\.zip.*org_admin,\s+lead\s+or\s+member`),
			planError(withBad(filepath.Join(reqs, "missing.zip")), `(?s)Invalid\s+Certificate\s+Request.*missing\.zip\s+does\s+not\s+exist`),
			planError(base+strings.Replace(approvals(out, "", siteA), "flare_project.p.id", fmt.Sprintf("%q", "local:"+caDir+"?nvflare=2.7"), 1),
				`(?s)Project\s+Not\s+On\s+NVFlare\s+2\.9.*nvflare_version\s+=\s+"2\.9"`),
			{
				// A flare_client cannot take an approved name either.
				Config: four + `
resource "flare_client" "site_d" {
  project_id = flare_project.p.id
  name       = "site-d"
  org        = "nvidia"
}
`,
				ExpectError: regexp.MustCompile(`(?s)Duplicate\s+Participant\s+Name.*"site-d"\s+is\s+already\s+a\s+participant`),
			},
			{
				// Drift: a deleted and an edited signed zip are rewritten, same
				// certificates; nothing else is touched.
				PreConfig: func() {
					os.Remove(zipOf("site-a"))
					b, _ := os.ReadFile(zipOf("site-b"))
					os.WriteFile(zipOf("site-b"), append(b, 0), 0o644)
					snapshot()
				},
				Config: four,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					untouchedExcept("site-a", "site-b"),
					checkSignedZip(caDir, zipOf("site-a"), siteAReq, "client"),
					checkSignedZip(caDir, zipOf("site-b"), siteBReq, "client"),
					func(*terraform.State) error {
						if readRecord("site-a") != certA || readRecord("site-b") != certB {
							return fmt.Errorf("a drifted signed zip got a new certificate")
						}
						return nil
					},
				),
			},
			{
				// site-a makes a new request (new key): approved again.
				PreConfig: func() {
					_, siteAReq = writeRequest(t, reqs, "site-a.request.zip", "acc", "site-a", "nvidia", "client", "", nil)
					snapshot()
				},
				Config: four,
				Check: resource.ComposeAggregateTestCheckFunc(
					func(s *terraform.State) error { return checkSignedZip(caDir, zipOf("site-a"), siteAReq, "client")(s) },
					untouchedExcept("site-a"),
					func(*terraform.State) error {
						if readRecord("site-a") == certA {
							return fmt.Errorf("certificate not reissued for the new key")
						}
						return nil
					},
				),
			},
			{
				// Removing a request removes its signed zip and record.
				PreConfig: snapshot,
				Config:    base + approvals(out, "", siteA, siteB, siteD),
				Check: resource.ComposeAggregateTestCheckFunc(
					gone(zipOf("bob@nvidia.com"), filepath.Join(parts, "bob@nvidia.com.crt"), filepath.Join(parts, "bob@nvidia.com.approval")),
					untouchedExcept("bob@nvidia.com"),
					resource.TestCheckResourceAttr(addr, "signed_zips.%", "3"),
				),
			},
			{
				// A new scheme rewrites every signed zip with the same certificates.
				PreConfig: snapshot,
				Config:    base + approvals(out, `  scheme = "grpc"`, siteA, siteB, siteD),
				Check: func(*terraform.State) error {
					root, err := readCert(filepath.Join(caDir, "rootCA.pem"))
					if err != nil {
						return err
					}
					for _, n := range []string{"site-a", "site-b", "site-d"} {
						b, err := os.ReadFile(zipOf(n))
						if err != nil {
							return err
						}
						s, err := approve.ReadSigned(b, root)
						if err != nil {
							return err
						}
						if s.Server.Scheme != "grpc" {
							return fmt.Errorf("%s: scheme %q", n, s.Server.Scheme)
						}
						if p := filepath.Join(parts, n+".crt"); before[p] != mtimes(t, parts)[p] {
							return fmt.Errorf("%s was rewritten: a new certificate?", p)
						}
					}
					return nil
				},
			},
			{
				// A new output_dir moves the zips; the certificates stay.
				Config: base + approvals(filepath.Join(dir, "approvals2"), "", siteA, siteB, siteD),
				Check: resource.ComposeAggregateTestCheckFunc(
					gone(zipOf("site-a"), zipOf("site-b"), zipOf("site-d")),
					checkSignedZip(caDir, filepath.Join(dir, "approvals2", "site-b.signed.zip"), siteBReq, "client"),
					func(*terraform.State) error {
						if readRecord("site-b") != certB {
							return fmt.Errorf("moving the zip changed the certificate")
						}
						return nil
					},
				),
			},
			{Config: base + approvals(out, "", siteA, siteB, siteD)},
		},
	})
}

// BenchmarkReadRequests is the plan-time reading of 1,000 request zips:
// cold (every zip parsed and verified, as on the first plan) and cached (the
// zips apply approved, recognised by path and digest, as on every later plan).
func BenchmarkReadRequests(b *testing.B) {
	dir := b.TempDir()
	r, err := approvetest.New("acc", "site-1", "nvidia", "client", "")
	if err != nil {
		b.Fatal(err)
	}
	data, err := r.Zip()
	if err != nil {
		b.Fatal(err)
	}
	paths := make([]string, 1000)
	for i := range paths {
		paths[i] = filepath.Join(dir, fmt.Sprintf("site-%d.request.zip", i))
		if err := os.WriteFile(paths[i], data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("cold", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for _, e := range readRequests(paths, nil) {
				if e.err != nil || e.req == nil {
					b.Fatal(e.err)
				}
			}
		}
	})
	cache := map[string]approvalRecord{}
	for _, e := range readRequests(paths, nil) {
		e.rec.name = e.Name
		cache[e.Path] = e.rec
	}
	b.Run("cached", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for _, e := range readRequests(paths, cache) {
				if e.err != nil || e.req != nil {
					b.Fatal("not from the cache", e.err)
				}
			}
		}
	})
}
