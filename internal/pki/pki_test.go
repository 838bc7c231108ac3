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
	cert, err := NewRootCA(key, "proj", ValidityFor(time.Now(), 10), Profile{})
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

func TestProfileRootKeyUsage(t *testing.T) {
	key, _ := GenerateKey()
	legacy := Profile{RootKeyUsage: []string{"digitalSignature", "contentCommitment", "keyEncipherment", "dataEncipherment", "keyAgreement", "keyCertSign", "cRLSign"}}
	for _, tc := range []struct {
		name    string
		profile Profile
		want    x509.KeyUsage
	}{
		{"default is NVFlare 2.8+", Profile{}, x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign | x509.KeyUsageCRLSign},
		{"2.7 set", legacy, x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment |
			x509.KeyUsageDataEncipherment | x509.KeyUsageKeyAgreement | x509.KeyUsageCertSign | x509.KeyUsageCRLSign},
	} {
		cert, err := NewRootCA(key, "proj", ValidityFor(time.Now(), 1), tc.profile)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if cert.KeyUsage != tc.want {
			t.Errorf("%s: key usage %b, want %b", tc.name, cert.KeyUsage, tc.want)
		}
		critical := false
		for _, ext := range cert.Extensions {
			if ext.Id.String() == "2.5.29.15" {
				critical = ext.Critical
			}
		}
		if !critical {
			t.Errorf("%s: KeyUsage not critical", tc.name)
		}
	}
	for _, bad := range []Profile{{RootKeyUsage: []string{"digitalSignature"}}, {RootKeyUsage: []string{"keyCertSign", "signEverything"}}} {
		if _, err := NewRootCA(key, "proj", ValidityFor(time.Now(), 1), bad); err == nil || !strings.Contains(err.Error(), "root_key_usage") {
			t.Errorf("%v: err %v, want a root_key_usage error", bad.RootKeyUsage, err)
		}
	}
}

func TestProfileIPSANsAndClamp(t *testing.T) {
	ca := testCA(t) // valid 10 days
	key, _ := GenerateKey()
	req := LeafRequest{Subject: Subject{CommonName: "server1"}, PublicKey: &key.PublicKey,
		DNSNames: []string{"server1", "127.0.0.1", "::1", "fl.example.com"}, Validity: ValidityFor(time.Now(), 360)}

	old, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(old.IPAddresses) != 0 || len(old.DNSNames) != 4 || !old.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("2.7 profile: DNS %v IP %v notAfter %v (root %v)", old.DNSNames, old.IPAddresses, old.NotAfter, ca.Cert.NotAfter)
	}

	req.Profile = Profile{IPSANs: true, ClampToRoot: true}
	cur, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cur.DNSNames, ",") != "server1,fl.example.com" || len(cur.IPAddresses) != 2 ||
		cur.IPAddresses[0].String() != "127.0.0.1" || cur.IPAddresses[1].String() != "::1" {
		t.Errorf("IP SANs: DNS %v IP %v", cur.DNSNames, cur.IPAddresses)
	}
	if !cur.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("leaf ends %v, want clamped to the root's %v", cur.NotAfter, ca.Cert.NotAfter)
	}

	req.Validity = ValidityFor(ca.Cert.NotAfter.Add(time.Hour), 360) // the clock is past the root's end
	if _, err := ca.Issue(req); err == nil || !strings.Contains(err.Error(), "root CA expired") {
		t.Errorf("issuing after the root expired: err %v", err)
	}
}

func TestPairwiseCheckRefusesADamagedKey(t *testing.T) {
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := PairwiseCheck(key); err != nil {
		t.Fatalf("a fresh key: %v", err)
	}
	other, _ := GenerateKey()
	damaged := *key
	damaged.PublicKey = other.PublicKey // private half no longer matches
	if err := PairwiseCheck(&damaged); err == nil || !strings.Contains(err.Error(), "pairwise") {
		t.Errorf("mismatched halves: err %v", err)
	}
}

// NVFlare writes a subject as CN, O, unstructuredName, in that order.
func TestSubjectOrder(t *testing.T) {
	ca := testCA(t)
	key, _ := GenerateKey()
	cert, err := ca.Issue(LeafRequest{Subject: Subject{CommonName: "a@example.com", Organization: "nvidia", Role: "lead"},
		PublicKey: &key.PublicKey, Validity: ValidityFor(time.Now(), 1)})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, atv := range cert.Subject.Names {
		got = append(got, atv.Type.String())
	}
	if strings.Join(got, " ") != "2.5.4.3 2.5.4.10 1.2.840.113549.1.9.2" {
		t.Errorf("subject order %v, want CN, O, unstructuredName", got)
	}
	if cert.Subject.CommonName != "a@example.com" || cert.Subject.Organization[0] != "nvidia" || RoleOf(cert) != "lead" {
		t.Errorf("subject %v", cert.Subject)
	}
}
