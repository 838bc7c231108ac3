package approve_test

import (
	"archive/zip"
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/approve"
	"github.com/flarekit/terraform-provider-flare/internal/approve/approvetest"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

func newCA(t testing.TB, project string, days int) pki.CA {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.NewRootCA(key, project, pki.ValidityFor(time.Now(), days), pki.Profile{})
	if err != nil {
		t.Fatal(err)
	}
	return pki.CA{Cert: cert, Signer: key}
}

var server = approve.Endpoint{Scheme: "http", ConnectionSecurity: "mtls", Host: "server1", FedLearnPort: 8002, AdminPort: 8003}

func mustZip(t testing.TB, r *approvetest.Request) []byte {
	t.Helper()
	b, err := r.Zip()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestApproveClient(t *testing.T) {
	ca := newCA(t, "acc", 3650)
	r, err := approvetest.New("acc", "site-9", "nvidia", "client", "")
	if err != nil {
		t.Fatal(err)
	}
	req, err := approve.ParseRequestZip(mustZip(t, r))
	if err != nil {
		t.Fatal(err)
	}
	if req.Name != "site-9" || req.CertType != "client" || req.Kind != "site" || req.Org != "nvidia" || req.CertRole != "" {
		t.Fatalf("parsed %+v", req)
	}
	now := time.Now()
	a, err := approve.Approve(req, approve.Options{CA: ca, Server: server, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	c := a.Cert
	if c.IsCA || !c.BasicConstraintsValid {
		t.Error("want BasicConstraints CA:FALSE")
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
		t.Errorf("key usage %b", c.KeyUsage)
	}
	if len(c.ExtKeyUsage) != 2 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || c.ExtKeyUsage[1] != x509.ExtKeyUsageServerAuth {
		t.Errorf("ext key usage %v", c.ExtKeyUsage)
	}
	critical := map[string]bool{}
	for _, e := range c.Extensions {
		critical[e.Id.String()] = e.Critical
	}
	if !critical["2.5.29.19"] || !critical["2.5.29.15"] || critical["2.5.29.37"] {
		t.Errorf("criticality: %v (want BC and KU critical, EKU not)", critical)
	}
	if pki.RoleOf(c) != "client" || c.Subject.CommonName != "site-9" || c.Subject.Organization[0] != "nvidia" {
		t.Errorf("subject %v", c.Subject)
	}
	if len(c.DNSNames) != 1 || c.DNSNames[0] != "site-9" {
		t.Errorf("SAN %v", c.DNSNames)
	}
	if d := c.NotAfter.Sub(now.AddDate(0, 0, 1095)); d > time.Second || d < -time.Second {
		t.Errorf("not after %v, want now+1095d", c.NotAfter)
	}
	if !bytes.Equal(c.AuthorityKeyId, ca.Cert.SubjectKeyId) || c.SignatureAlgorithm != x509.SHA256WithRSA {
		t.Error("AKI or signature algorithm")
	}
	if !r.Key.PublicKey.Equal(c.PublicKey) {
		t.Error("certificate is not for the request's key")
	}
	s, err := approve.ReadSigned(a.Zip, ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if s.RequestID != r.Meta["request_id"] || s.Server != server || s.CertType != "client" {
		t.Errorf("signed %+v", s)
	}
	zr, _ := zip.NewReader(bytes.NewReader(a.Zip), int64(len(a.Zip)))
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	if got := strings.Join(names, ","); got != "signed.json,signed.json.sig,site.yaml,site-9.crt,rootCA.pem" {
		t.Errorf("members %s", got)
	}
	if bytes.Contains(a.Zip, []byte("PRIVATE KEY")) {
		t.Error("signed zip holds a private key")
	}
	if !strings.HasPrefix(a.RootFingerprint, "SHA256:") || len(a.RootFingerprint) != 7+95 {
		t.Errorf("fingerprint %q", a.RootFingerprint)
	}
}

func TestApproveAdminProfile(t *testing.T) {
	ca := newCA(t, "acc", 3650)
	r, err := approvetest.New("acc", "bob@nvidia.com", "nvidia", "admin", "lead")
	if err != nil {
		t.Fatal(err)
	}
	req, err := approve.ParseRequestZip(mustZip(t, r))
	if err != nil {
		t.Fatal(err)
	}
	a, err := approve.Approve(req, approve.Options{CA: ca, Server: server})
	if err != nil {
		t.Fatal(err)
	}
	if a.Cert.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment {
		t.Errorf("key usage %b", a.Cert.KeyUsage)
	}
	if len(a.Cert.ExtKeyUsage) != 1 || a.Cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("ext key usage %v", a.Cert.ExtKeyUsage)
	}
	if pki.RoleOf(a.Cert) != "lead" || req.CertRole != "lead" || req.Kind != "user" {
		t.Errorf("role %q, request %+v", pki.RoleOf(a.Cert), req)
	}
	if !bytes.Contains(a.SignedJSON, []byte(`"cert_role": "lead"`)) {
		t.Errorf("signed.json lacks cert_role:\n%s", a.SignedJSON)
	}
}

// The validity never outlives the root.
func TestApproveClampsToRoot(t *testing.T) {
	ca := newCA(t, "acc", 30)
	r, _ := approvetest.New("acc", "site-1", "nvidia", "client", "")
	req, err := approve.ParseRequestZip(mustZip(t, r))
	if err != nil {
		t.Fatal(err)
	}
	a, err := approve.Approve(req, approve.Options{CA: ca, Server: server})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Cert.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("not after %v, root %v", a.Cert.NotAfter, ca.Cert.NotAfter)
	}
	if _, err := approve.Approve(req, approve.Options{CA: ca, Server: server, Now: time.Now().AddDate(0, 0, 40)}); err == nil || !strings.Contains(err.Error(), "root CA expired") {
		t.Errorf("approve after the root expired: %v", err)
	}
}

// Zips NVFlare 2.9.0's `nvflare cert request` made (testdata) parse.
func TestNVFlareMadeRequests(t *testing.T) {
	for file, want := range map[string][3]string{
		"testdata/nvflare-2.9.0-site-9.request.zip": {"site-9", "client", ""},
		"testdata/nvflare-2.9.0-bob.request.zip":    {"bob@nvidia.com", "lead", "lead"},
	} {
		req, err := approve.ReadRequestZip(file)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if req.Name != want[0] || req.CertType != want[1] || req.CertRole != want[2] || req.Project != "acc" {
			t.Errorf("%s: %+v", file, req)
		}
		site, _ := os.ReadFile(file)
		if !bytes.Contains(site, []byte("site.yaml")) {
			t.Fatal("fixture")
		}
		a, err := approve.Approve(req, approve.Options{CA: newCA(t, "acc", 100), Server: server})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := approve.ReadSigned(a.Zip, nil); err != nil {
			t.Error(err)
		}
	}
}

func TestBadRequestZips(t *testing.T) {
	otherKey, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		edit func(r *approvetest.Request) // on a fresh client request "site-1"
		raw  func(zip []byte) []byte      // on the finished zip
		want string
	}{
		{name: "not a zip", raw: func([]byte) []byte { return []byte("hello, not a zip") }, want: "not a readable zip"},
		{name: "empty", raw: func([]byte) []byte { return nil }, want: "not a readable zip"},
		{name: "truncated", raw: func(b []byte) []byte { return b[:len(b)*2/3] }, want: "not a readable zip"},
		{name: "corrupted member", raw: func(b []byte) []byte {
			c := append([]byte(nil), b...)
			i := bytes.Index(c, []byte("request.json")) + len("request.json") + 20
			c[i] ^= 0xff
			return c
		}, want: "truncated or corrupted"},
		{name: "CSR signature", edit: func(r *approvetest.Request) {
			block, _ := pem.Decode(r.CSRPEM)
			der := append([]byte(nil), block.Bytes...)
			der[len(der)-10] ^= 0x01 // inside the signature
			r.CSRPEM = pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: der})
			_ = r.Rehash()
		}, want: "CSR signature does not verify"},
		{name: "CSR edited, hash not", edit: func(r *approvetest.Request) {
			r.CSRPEM = append(r.CSRPEM, '\n')
		}, want: "csr_sha256"},
		{name: "site.yaml edited, hash not", edit: func(r *approvetest.Request) {
			r.SiteYAML = bytes.Replace(r.SiteYAML, []byte("site-1"), []byte("site-2"), 1)
		}, want: "site_yaml_sha256"},
		{name: "site.yaml names another participant", edit: func(r *approvetest.Request) {
			r.SiteYAML = bytes.Replace(r.SiteYAML, []byte("site-1"), []byte("site-2"), 1)
			_ = r.Rehash()
		}, want: `site.yaml name "site-2" does not match`},
		{name: "site.yaml of another project", edit: func(r *approvetest.Request) {
			r.SiteYAML = bytes.Replace(r.SiteYAML, []byte("name: acc"), []byte("name: other"), 1)
			_ = r.Rehash()
		}, want: `site.yaml project "other"`},
		{name: "site.yaml listening_host", edit: func(r *approvetest.Request) {
			r.SiteYAML = append(r.SiteYAML, []byte("  listening_host: site-1-lh\n")...)
			_ = r.Rehash()
		}, want: "listening_host"},
		{name: "missing field", edit: func(r *approvetest.Request) { delete(r.Meta, "org") }, want: "request.json lacks org"},
		{name: "wrong artifact", edit: func(r *approvetest.Request) { r.Meta["artifact_type"] = "nvflare.cert.signed" }, want: "this provider approves nvflare.cert.request"},
		{name: "bad request id", edit: func(r *approvetest.Request) { r.Meta["request_id"] = "../../etc" }, want: "not a UUID"},
		{name: "kind and type disagree", edit: func(r *approvetest.Request) { r.Meta["kind"] = "user" }, want: "request kind user needs"},
		{name: "project_admin", edit: func(r *approvetest.Request) {
			r.Meta["kind"], r.Meta["cert_type"], r.Meta["cert_role"] = "user", "project_admin", "project_admin"
		}, want: "org_admin, lead or member"},
		{name: "public key hash", edit: func(r *approvetest.Request) { r.Meta["public_key_sha256"] = strings.Repeat("0", 64) }, want: "public_key_sha256"},
		{name: "CSR for another name", edit: func(r *approvetest.Request) {
			r.CSRPEM, _ = approvetest.CSR(otherKey, "site-2", "nvidia", "client")
			_ = r.Rehash()
		}, want: `the CSR is for "site-2"`},
		{name: "CSR for another org", edit: func(r *approvetest.Request) {
			r.CSRPEM, _ = approvetest.CSR(otherKey, "site-1", "evil", "client")
			_ = r.Rehash()
		}, want: "organization"},
		{name: "CSR proposes admin", edit: func(r *approvetest.Request) {
			r.CSRPEM, _ = approvetest.CSR(otherKey, "site-1", "nvidia", "lead")
			_ = r.Rehash()
		}, want: `proposes type "lead"`},
		{name: "CSR missing", edit: func(r *approvetest.Request) { r.CSRMember = "other.csr" }, want: "has no site-1.csr"},
		{name: "extra member", edit: func(r *approvetest.Request) { r.Extra = map[string][]byte{"notes.txt": []byte("hi")} }, want: "must hold only"},
		{name: "private key member", edit: func(r *approvetest.Request) { r.Extra = map[string][]byte{"site-1.key": []byte("x")} }, want: "private key"},
		{name: "private key content", edit: func(r *approvetest.Request) {
			r.SiteYAML = append(r.SiteYAML, []byte("# -----BEGIN RSA PRIVATE KEY-----\n")...)
			_ = r.Rehash()
		}, want: "holds a private key"},
		{name: "path traversal", edit: func(r *approvetest.Request) { r.CSRMember = "../site-1.csr" }, want: "path traversal"},
		{name: "subdirectory", edit: func(r *approvetest.Request) { r.CSRMember = "x/site-1.csr" }, want: "path traversal"},
		{name: "oversized member", edit: func(r *approvetest.Request) {
			r.SiteYAML = append(r.SiteYAML, bytes.Repeat([]byte("#"), approve.MaxMemberBytes)...)
			_ = r.Rehash()
		}, want: "more than 65536"},
		{name: "bad org", edit: func(r *approvetest.Request) { r.Meta["org"] = "nv idia" }, want: "org"},
		{name: "bad client name", edit: func(r *approvetest.Request) { r.Meta["name"] = "site.1" }, want: "not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := approvetest.New("acc", "site-1", "nvidia", "client", "")
			if err != nil {
				t.Fatal(err)
			}
			if tc.edit != nil {
				tc.edit(r)
			}
			b := mustZip(t, r)
			if tc.raw != nil {
				b = tc.raw(b)
			}
			_, err = approve.ParseRequestZip(b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestDuplicateMember(t *testing.T) {
	r, _ := approvetest.New("acc", "site-1", "nvidia", "client", "")
	b := mustZip(t, r)
	// Rename notes: build a zip with request.json twice by hand.
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	zr, _ := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	for _, f := range zr.File[:2] {
		rc, _ := f.Open()
		w, _ := zw.Create(f.Name)
		var data bytes.Buffer
		data.ReadFrom(rc)
		w.Write(data.Bytes())
	}
	w, _ := zw.Create("request.json")
	w.Write([]byte("{}"))
	zw.Close()
	if _, err := approve.ParseRequestZip(buf.Bytes()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("got %v", err)
	}
}

func TestApproveChecks(t *testing.T) {
	ca := newCA(t, "acc", 3650)
	other, _ := approvetest.New("other", "site-1", "nvidia", "client", "")
	req, err := approve.ParseRequestZip(mustZip(t, other))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := approve.Approve(req, approve.Options{CA: ca, Server: server}); err == nil || !strings.Contains(err.Error(), `the request is for project "other"`) {
		t.Errorf("foreign project: %v", err)
	}
	r, _ := approvetest.New("acc", "server1", "nvidia", "client", "")
	req, _ = approve.ParseRequestZip(mustZip(t, r))
	if _, err := approve.Approve(req, approve.Options{CA: ca, Server: server}); err == nil || !strings.Contains(err.Error(), "server's host name") {
		t.Errorf("client named like the server host: %v", err)
	}
	r, _ = approvetest.New("acc", "site-1", "nvidia", "client", "")
	req, _ = approve.ParseRequestZip(mustZip(t, r))
	bad := server
	bad.Scheme = "ftp"
	if _, err := approve.Approve(req, approve.Options{CA: ca, Server: bad}); err == nil || !strings.Contains(err.Error(), "scheme") {
		t.Errorf("bad scheme: %v", err)
	}
	// Package refuses a certificate of another key or CA.
	a, err := approve.Approve(req, approve.Options{CA: ca, Server: server})
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := approvetest.New("acc", "site-1", "nvidia", "client", "")
	req2, _ := approve.ParseRequestZip(mustZip(t, r2))
	if _, err := approve.Package(req2, a.Cert, approve.Options{CA: ca, Server: server}); err == nil || !strings.Contains(err.Error(), "another key") {
		t.Errorf("package with another key: %v", err)
	}
	if _, err := approve.Package(req, a.Cert, approve.Options{CA: newCA(t, "acc", 10), Server: server}); err == nil || !strings.Contains(err.Error(), "not signed by the project root") {
		t.Errorf("package with another root: %v", err)
	}
	// The signed zip checks against its root only.
	if _, err := approve.ReadSigned(a.Zip, newCA(t, "acc", 10).Cert); err == nil {
		t.Error("signed zip accepted for another root")
	}
	tampered := bytes.Replace(a.Zip, []byte("signed.json.sig"), []byte("signed.json.siG"), -1)
	if _, err := approve.ReadSigned(tampered, ca.Cert); err == nil {
		t.Error("tampered signed zip accepted")
	}
}

func TestSanitizedSiteYAML(t *testing.T) {
	ca := newCA(t, "acc", 3650)
	r, _ := approvetest.New("acc", "site-1", "nvidia", "client", "")
	r.SiteYAML = []byte("name: acc\nbuilders:\n- path: x.Y\nparticipants:\n- name: site-1\n  org: nvidia\n  type: client\n  fed_learn_port: 9\n  server:\n    host: evil\n")
	_ = r.Rehash()
	req, err := approve.ParseRequestZip(mustZip(t, r))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"builders", "fed_learn_port", "server", "evil"} {
		if bytes.Contains(req.SiteYAML, []byte(k)) {
			t.Errorf("signed site.yaml keeps %s:\n%s", k, req.SiteYAML)
		}
	}
	if !bytes.Contains(req.SiteYAML, []byte("name: site-1")) {
		t.Errorf("signed site.yaml:\n%s", req.SiteYAML)
	}
	if _, err := approve.Approve(req, approve.Options{CA: ca, Server: server}); err != nil {
		t.Fatal(err)
	}
}

func TestFromCSR(t *testing.T) {
	ca := newCA(t, "acc", 3650)
	key, _ := pki.GenerateKey()
	csrPEM, _ := approvetest.CSR(key, "site-5", "nvidia", "client")
	req, err := approve.FromCSR(csrPEM, "acc", "client")
	if err != nil {
		t.Fatal(err)
	}
	a, err := approve.Approve(req, approve.Options{CA: ca, Server: server})
	if err != nil {
		t.Fatal(err)
	}
	s, err := approve.ReadSigned(a.Zip, ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "site-5" || s.Org != "nvidia" || len(s.RequestID) != 32 {
		t.Errorf("%+v", s)
	}
	plain, _ := approvetest.CSR(key, "site-5", "nvidia", "")
	if _, err := approve.FromCSR(plain, "acc", "lead"); err == nil || !strings.Contains(err.Error(), "admin name") {
		t.Errorf("admin type for a site name: %v", err)
	}
	for _, tc := range []struct {
		pem  []byte
		typ  string
		want string
	}{
		{csrPEM, "lead", `proposes certificate type "client"`},
		{csrPEM, "project_admin", "not one of"},
		{[]byte("garbage"), "client", "no PEM block"},
		{append(csrPEM, pki.KeyPEM(key)...), "client", "private key"},
		{append(csrPEM, csrPEM...), "client", "more than one PEM block"},
		{pki.CertPEM(ca.Cert), "client", "expected CERTIFICATE REQUEST"},
	} {
		if _, err := approve.FromCSR(tc.pem, "acc", tc.typ); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.typ, err, tc.want)
		}
	}
}

// A CSR with a small or non-RSA key is refused by the issuer.
func TestIssueFromCSRRefusesWeakKeys(t *testing.T) {
	ca := newCA(t, "acc", 3650)
	csr := &x509.CertificateRequest{PublicKey: "not a key", Subject: ca.Cert.Subject}
	if _, err := ca.IssueFromCSR(pki.CSRRequest{CSR: csr, CertType: "client", Days: 1}); err == nil {
		t.Error("issued for a CSR without a valid signature")
	}
	_ = asn1.ObjectIdentifier{}
}

func BenchmarkApprove(b *testing.B) {
	ca := newCA(b, "acc", 3650)
	r, err := approvetest.New("acc", "site-1", "nvidia", "client", "")
	if err != nil {
		b.Fatal(err)
	}
	data := mustZip(b, r)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req, err := approve.ParseRequestZip(data)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := approve.Approve(req, approve.Options{CA: ca, Server: server}); err != nil {
			b.Fatal(err)
		}
	}
}
