package pki

// Benchmarks for what one participant costs the provider: a fresh RSA-2048
// key, a certificate signed by the root, and the PEM round trips the
// provider does on every create/read (the CA and the participant keys are
// read back from the CA directory each time). `make bench` runs them.

import (
	"crypto/rsa"
	"testing"
	"time"
)

func benchCA(b *testing.B) CA {
	b.Helper()
	key, err := GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	cert, err := NewRootCA(key, "bench", ValidityFor(time.Now(), 360))
	if err != nil {
		b.Fatal(err)
	}
	return CA{Cert: cert, Signer: key}
}

// BenchmarkGenerateKey is one participant key (RSA-2048, as NVFlare).
func BenchmarkGenerateKey(b *testing.B) {
	for b.Loop() {
		if _, err := GenerateKey(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGenerateKeyParallel shows how key generation scales over the
// machine's cores (Terraform creates resources concurrently).
func BenchmarkGenerateKeyParallel(b *testing.B) {
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := GenerateKey(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkNewRootCA is the self-signed root, without its key.
func BenchmarkNewRootCA(b *testing.B) {
	key, err := GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	v := ValidityFor(time.Now(), 360)
	for b.Loop() {
		if _, err := NewRootCA(key, "bench", v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIssue is one participant certificate signed by the root
// (PKCS#1 v1.5 / SHA-256), the key pair made beforehand.
func BenchmarkIssue(b *testing.B) {
	ca := benchCA(b)
	key, err := GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	req := LeafRequest{
		Subject:   Subject{CommonName: "site-1", Organization: "nvidia"},
		PublicKey: &key.PublicKey,
		DNSNames:  []string{"site-1"},
		Validity:  ValidityFor(time.Now(), 360),
	}
	for b.Loop() {
		if _, err := ca.Issue(req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParticipant is key + certificate + PEM encoding: what creating a
// flare_client costs in cryptography.
func BenchmarkParticipant(b *testing.B) {
	ca := benchCA(b)
	v := ValidityFor(time.Now(), 360)
	for b.Loop() {
		key, err := GenerateKey()
		if err != nil {
			b.Fatal(err)
		}
		cert, err := ca.Issue(LeafRequest{Subject: Subject{CommonName: "site-1", Organization: "nvidia"},
			PublicKey: &key.PublicKey, DNSNames: []string{"site-1"}, Validity: v})
		if err != nil {
			b.Fatal(err)
		}
		_, _ = KeyPEM(key), CertPEM(cert)
	}
}

// BenchmarkParseKeyPEM is reading an RSA-2048 private key back from PEM,
// which the provider does for the root key and the participant key on each
// kit write and participant read.
func BenchmarkParseKeyPEM(b *testing.B) {
	key, err := GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	data := KeyPEM(key)
	var got *rsa.PrivateKey
	for b.Loop() {
		if got, err = ParseKeyPEM(data); err != nil {
			b.Fatal(err)
		}
	}
	_ = got
}

// BenchmarkParseCertPEM is reading a certificate back from PEM.
func BenchmarkParseCertPEM(b *testing.B) {
	ca := benchCA(b)
	data := CertPEM(ca.Cert)
	for b.Loop() {
		if _, err := ParseCertPEM(data); err != nil {
			b.Fatal(err)
		}
	}
}
