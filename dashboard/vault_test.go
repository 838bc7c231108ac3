package dashboard

import (
	"context"
	"crypto"
	"crypto/x509"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/flarekit/terraform-provider-flare/internal/approve"
	"github.com/flarekit/terraform-provider-flare/internal/approve/approvetest"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/vaultca"
	"github.com/flarekit/terraform-provider-flare/kbs/kbstest"
)

// TestVaultTransitRoot: against an OpenBao dev server (kbstest.StartBao;
// skips without bao unless KBS_REQUIRE_BAO=1, which make test and make
// dashboard-test set), --vault-transit makes the root at freeze around the
// Transit key: the database holds only a reference, no key; PIN kits and
// signed zips of request sites are signed through Transit and chain to the
// root; a restart without --vault-transit refuses to sign (503) instead of
// making another root; a rotated Transit key does not change the CA.
func TestVaultTransitRoot(t *testing.T) {
	bao := kbstest.StartBao(t)
	if err := bao.Client.Sys().Mount("transit", &api.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	cfg := vaultca.Config{Address: bao.Addr, Token: bao.Token, TransitMount: "transit", KeyName: "dash-root"}
	ctx := context.Background()
	vca, _, err := OpenVaultCA(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cred, _ := ParseCredential("admin@x.org:pw:nvidia")
	s, err := Open(dir, &cred, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s.Vault = vca
	ts := httptest.NewServer(s.Handler())
	c := client{t, ts.URL}
	admin := c.login("admin@x.org", "pw")
	c.do("POST", "/api/v1/users", "", map[string]any{"email": "lead@o.org", "password": "p", "organization": "orgA", "role": "lead"})
	lead := c.login("lead@o.org", "p")
	freeze(t, c, admin, "vaultproj")

	proj, _ := s.Store.Project()
	if proj.RootKey != "vault-transit:transit/dash-root#v1" {
		t.Fatalf("stored root key %q, want a reference", proj.RootKey)
	}
	root, err := pki.ParseCertPEM([]byte(proj.RootCert))
	if err != nil {
		t.Fatal(err)
	}
	info, err := vaultca.ReadKey(ctx, bao.Client, "transit", "dash-root")
	if err != nil {
		t.Fatal(err)
	}
	if info.Exportable {
		t.Fatal("the Transit key is exportable")
	}
	signer, err := vaultca.NewSigner(ctx, bao.Client, "transit", "dash-root", 1)
	if err != nil {
		t.Fatal(err)
	}
	if !signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(root.PublicKey) {
		t.Fatal("the root certificate is not for the Transit key")
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		t.Fatalf("root self-signature: %v", err)
	}

	// A PIN kit: signed through Transit.
	c.do("POST", "/api/v1/clients", lead, map[string]any{"name": "site-1", "organization": "orgA"})
	c.do("PATCH", "/api/v1/clients/1", admin, map[string]any{"approval_state": 100})
	resp, data := postBlob(t, ts.URL+"/api/v1/clients/1/blob", lead, "abc123")
	if resp.StatusCode != 200 {
		t.Fatalf("kit: %d %s", resp.StatusCode, data)
	}
	files, _, err := unzipWithPIN(t, data, "abc123")
	if err != nil {
		t.Fatal(err)
	}
	var certPEM []byte
	for f, b := range files {
		if strings.HasSuffix(f, "startup/client.crt") {
			certPEM = b
		}
	}
	cc, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := cc.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("kit certificate: %v", err)
	}

	// A request site: its signed zip, signed through Transit.
	r, _ := approvetest.New("vaultproj", "site-2", "orgA", "client", "")
	z, _ := r.Zip()
	if st, b, _ := raw(t, "POST", ts.URL+"/api/v1/clients/request", lead, "application/zip", z); st != 201 {
		t.Fatalf("upload: %d %s", st, b)
	}
	c.do("PATCH", "/api/v1/clients/2", admin, map[string]any{"approval_state": 100})
	st, zipData, _ := raw(t, "GET", ts.URL+"/api/v1/clients/2/signed", lead, "", nil)
	if st != 200 {
		t.Fatalf("signed zip: %d %s", st, zipData)
	}
	if _, err := approve.ReadSigned(zipData, root); err != nil {
		t.Fatalf("signed zip: %v", err)
	}
	assertNoSitePrivateKey(t, s)
	if strings.Contains(proj.RootKey, "PRIVATE KEY") {
		t.Fatal("root key in the database")
	}

	// Rotating the Transit key does not change the CA: version 1 signs on.
	if _, err := bao.Client.Logical().Write("transit/keys/dash-root/rotate", nil); err != nil {
		t.Fatal(err)
	}
	if resp, data := postBlob(t, ts.URL+"/api/v1/clients/1/blob", lead, "abc123"); resp.StatusCode != 200 {
		t.Fatalf("kit after rotation: %d %s", resp.StatusCode, data)
	}
	ts.Close()
	s.Close()

	// Restart without --vault-transit: no signing, no new root.
	s2, err := Open(dir, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	ts2 := httptest.NewServer(s2.Handler())
	defer ts2.Close()
	c2 := client{t, ts2.URL}
	lead2 := c2.login("lead@o.org", "p")
	if resp, data := postBlob(t, ts2.URL+"/api/v1/clients/1/blob", lead2, "abc123"); resp.StatusCode != 503 || !strings.Contains(string(data), "--vault-transit transit/dash-root") {
		t.Fatalf("kit without Vault: %d %s", resp.StatusCode, data)
	}
	// Another Transit key is not this project's.
	other := cfg
	other.KeyName = "other-root"
	vother, _, err := OpenVaultCA(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	s2.Vault = vother
	if resp, data := postBlob(t, ts2.URL+"/api/v1/clients/1/blob", lead2, "abc123"); resp.StatusCode != 503 {
		t.Fatalf("kit with another key: %d %s", resp.StatusCode, data)
	}
	if p2, _ := s2.Store.Project(); p2.RootCert != proj.RootCert {
		t.Fatal("the root changed")
	}
}

func TestParseTransitKey(t *testing.T) {
	for in, want := range map[string][2]string{"transit/root": {"transit", "root"}, "team/transit/root": {"team/transit", "root"}, "/transit/root/": {"transit", "root"}} {
		m, k, err := ParseTransitKey(in)
		if err != nil || m != want[0] || k != want[1] {
			t.Errorf("%q: %q %q %v", in, m, k, err)
		}
	}
	for _, bad := range []string{"", "root", "transit/", "/root"} {
		if _, _, err := ParseTransitKey(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if m, k, v, err := parseVaultRoot("vault-transit:a/b/c#v12"); err != nil || m != "a/b" || k != "c" || v != 12 {
		t.Errorf("parseVaultRoot: %q %q %d %v", m, k, v, err)
	}
	for _, bad := range []string{"vault-transit:a/b", "vault-transit:a/b#v0", "vault-transit:b#v1"} {
		if _, _, _, err := parseVaultRoot(bad); err == nil {
			t.Errorf("parseVaultRoot(%q) accepted", bad)
		}
	}
}
