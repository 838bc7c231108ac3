package pki

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

func testCA(t *testing.T) CA {
	t.Helper()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := NewRootCA(key, "proj", ValidityFor(time.Now(), 10))
	if err != nil {
		t.Fatal(err)
	}
	return CA{Cert: cert, Signer: key}
}

func TestRootCA(t *testing.T) {
	ca := testCA(t)
	c := ca.Cert
	if !c.IsCA || c.Subject.CommonName != "proj" || c.Issuer.CommonName != "proj" {
		t.Fatalf("root subject/issuer/CA wrong: %v %v %v", c.Subject, c.Issuer, c.IsCA)
	}
	if len(c.Subject.Organization) != 0 {
		t.Errorf("root has an org: NVFlare's root subject is CN only")
	}
	if c.SignatureAlgorithm != x509.SHA256WithRSA {
		t.Errorf("root signed with %v", c.SignatureAlgorithm)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("root does not verify itself: %v", err)
	}
	if len(c.SubjectKeyId) == 0 || string(c.AuthorityKeyId) != string(c.SubjectKeyId) {
		t.Errorf("root key identifiers missing or different")
	}
	if got := c.NotAfter.Sub(c.NotBefore); got < 10*24*time.Hour || got > 10*24*time.Hour+Backdate+time.Second {
		t.Errorf("validity %v", got)
	}
}

func TestIssueAdmin(t *testing.T) {
	ca := testCA(t)
	key, _ := GenerateKey()
	cert, err := ca.Issue(LeafRequest{
		Subject:   Subject{CommonName: "a@example.com", Organization: "nvidia", Role: "lead"},
		PublicKey: &key.PublicKey,
		Validity:  ValidityFor(time.Now(), 1),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatal(err)
	}
	if RoleOf(cert) != "lead" {
		t.Errorf("role %q, want lead (unstructuredName, where NVFlare reads it)", RoleOf(cert))
	}
	if cert.Subject.Organization[0] != "nvidia" || cert.Issuer.CommonName != "proj" {
		t.Errorf("subject/issuer %v / %v", cert.Subject, cert.Issuer)
	}
	if string(cert.AuthorityKeyId) != string(ca.Cert.SubjectKeyId) {
		t.Errorf("AKI does not name the root")
	}
	if cert.IsCA {
		t.Errorf("leaf is a CA")
	}
}

func TestKeyPEMRoundTrip(t *testing.T) {
	key, _ := GenerateKey()
	pemBytes := KeyPEM(key)
	if !strings.HasPrefix(string(pemBytes), "-----BEGIN RSA PRIVATE KEY-----") {
		t.Fatalf("key PEM is not PKCS#1: %.40s", pemBytes)
	}
	back, err := ParseKeyPEM(pemBytes)
	if err != nil || !back.Equal(key) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := ParseKeyPEM([]byte("garbage")); err == nil {
		t.Error("garbage parsed as a key")
	}
	fp1, _ := KeyFingerprint(&key.PublicKey)
	other, _ := GenerateKey()
	fp2, _ := KeyFingerprint(&other.PublicKey)
	if len(fp1) != 64 || fp1 == fp2 {
		t.Errorf("fingerprints %s %s", fp1, fp2)
	}
}
