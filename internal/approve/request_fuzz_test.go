package approve_test

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flarekit/terraform-provider-flare/internal/approve"
	"github.com/flarekit/terraform-provider-flare/internal/approve/approvetest"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// checkAccepted holds what ParseRequestZip promises of a request it
// accepts.
func checkAccepted(t *testing.T, r *approve.Request) {
	t.Helper()
	if r.CSR == nil || r.Name == "" || r.Project == "" {
		t.Fatalf("accepted an incomplete request: %+v", r)
	}
	if r.CSR.Subject.CommonName != r.Name {
		t.Fatalf("accepted CSR CN %q for participant %q", r.CSR.Subject.CommonName, r.Name)
	}
	if err := r.CSR.CheckSignature(); err != nil {
		t.Fatalf("accepted a CSR whose signature does not verify: %v", err)
	}
	if s := sha256.Sum256(r.CSRPEM); r.CSRSHA256 != hex.EncodeToString(s[:]) {
		t.Fatalf("csr_sha256 %s is not the CSR's", r.CSRSHA256)
	}
	if fp, err := pki.KeyFingerprint(r.CSR.PublicKey); err != nil || fp != r.PublicKeySHA256 {
		t.Fatalf("public_key_sha256 %s is not the CSR key's %s (%v)", r.PublicKeySHA256, fp, err)
	}
	for _, b := range [][]byte{r.CSRPEM, r.SiteYAML} {
		if bytes.Contains(b, []byte("PRIVATE KEY-----")) {
			t.Fatal("accepted a request carrying a private key")
		}
	}
	if strings.ContainsAny(r.Name, "/\\") || r.Name == "." || r.Name == ".." {
		t.Fatalf("accepted participant name %q, which is no file name", r.Name)
	}
}

// zipMembers reads a zip's members in order (for seeds).
func zipMembers(t testing.TB, b []byte) map[string][]byte {
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		out[f.Name], _ = io.ReadAll(rc)
		rc.Close()
	}
	return out
}

// seedRequests are NVFlare 2.9's own request zips (testdata) and ones
// approvetest makes, for a client and an admin.
func seedRequests(f *testing.F) [][]byte {
	var zips [][]byte
	files, _ := filepath.Glob("testdata/*.request.zip")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		zips = append(zips, b)
	}
	for _, a := range [][4]string{{"site-7", "nvidia", "client", ""}, {"carol@nvidia.com", "nvidia", "admin", "lead"}} {
		r, err := approvetest.New("fuzzproj", a[0], a[1], a[2], a[3])
		if err != nil {
			f.Fatal(err)
		}
		b, err := r.Zip()
		if err != nil {
			f.Fatal(err)
		}
		zips = append(zips, b)
	}
	for _, b := range zips {
		if _, err := approve.ParseRequestZip(b); err != nil {
			f.Fatalf("a seed request is refused: %v", err)
		}
	}
	return zips
}

// FuzzParseRequestZip: a request zip comes from the site asking for a
// certificate, i.e. from outside the approver's trust. ParseRequestZip
// must not panic, and what it accepts must be consistent.
func FuzzParseRequestZip(f *testing.F) {
	for _, b := range seedRequests(f) {
		f.Add(b)
	}
	f.Add([]byte("PK\x05\x06" + strings.Repeat("\x00", 18)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := approve.ParseRequestZip(data)
		if err != nil {
			return
		}
		checkAccepted(t, r)
	})
}

// FuzzParseRequestParts fuzzes the members of a request zip instead of
// its bytes: request.json, site.yaml and the CSR are zipped again, and
// with fix the hashes in request.json are made to match (as a site
// altering its own request would), so the fuzzer gets past the hash
// checks to the site.yaml and CSR checks.
func FuzzParseRequestParts(f *testing.F) {
	for _, b := range seedRequests(f) {
		var req, site, csr []byte
		for n, d := range zipMembers(f, b) {
			switch {
			case n == "request.json":
				req = d
			case n == "site.yaml":
				site = d
			case strings.HasSuffix(n, ".csr"):
				csr = d
			}
		}
		f.Add(req, site, csr, true)
		f.Add(req, site, csr, false)
	}
	f.Fuzz(func(t *testing.T, reqJSON, siteYAML, csrPEM []byte, fix bool) {
		name := "x"
		var meta map[string]any
		if json.Unmarshal(reqJSON, &meta) == nil && meta != nil {
			if n, ok := meta["name"].(string); ok {
				name = n
			}
			if fix {
				s := sha256.Sum256(siteYAML)
				meta["site_yaml_sha256"] = hex.EncodeToString(s[:])
				c := sha256.Sum256(csrPEM)
				meta["csr_sha256"] = hex.EncodeToString(c[:])
				if csr, err := pki.ParseCSRPEM(csrPEM); err == nil {
					if fp, err := pki.KeyFingerprint(csr.PublicKey); err == nil {
						meta["public_key_sha256"] = fp
					}
				}
				reqJSON, _ = json.Marshal(meta)
			}
		}
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for _, m := range []struct {
			n string
			d []byte
		}{{"request.json", reqJSON}, {"site.yaml", siteYAML}, {name + ".csr", csrPEM}} {
			w, err := zw.Create(m.n)
			if err != nil {
				return // a name zip cannot hold
			}
			w.Write(m.d)
		}
		if zw.Close() != nil {
			return
		}
		r, err := approve.ParseRequestZip(buf.Bytes())
		if err != nil {
			return
		}
		checkAccepted(t, r)
	})
}
