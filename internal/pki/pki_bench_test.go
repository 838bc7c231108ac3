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
	cert, err := NewRootCA(key, "bench", ValidityFor(time.Now(), 360), Profile{})
	if err != nil {
		b.Fatal(err)
	}
	return CA{Cert: cert, Signer: key}
}

// reportCPU runs f (the benchmark loop) and reports the process's CPU time
// per operation as cpu-ms/op beside the wall time of ns/op: on a shared
// machine the wall time includes waiting for a core.
func reportCPU(b *testing.B, f func()) {
	start := processCPU()
	f()
	if cpu := processCPU() - start; cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/1e6, "cpu-ms/op")
	}
}

func benchKeygen(b *testing.B, gen func() (*rsa.PrivateKey, error)) {
	reportCPU(b, func() {
		for b.Loop() {
			if _, err := gen(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchKeygenParallel(b *testing.B, gen func() (*rsa.PrivateKey, error)) {
	reportCPU(b, func() {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := gen(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkGenerateKey is one participant key (RSA-2048, as NVFlare):
// crypto/rsa.GenerateKey plus the pairwise check.
func BenchmarkGenerateKey(b *testing.B) { benchKeygen(b, GenerateKey) }

// BenchmarkGenerateKeyParallel shows how key generation scales over the
// machine's cores (flare_clients makes keys on every core).
func BenchmarkGenerateKeyParallel(b *testing.B) { benchKeygenParallel(b, GenerateKey) }

// BenchmarkNewRootCA is the self-signed root, without its key.
func BenchmarkNewRootCA(b *testing.B) {
	key, err := GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	v := ValidityFor(time.Now(), 360)
	for b.Loop() {
		if _, err := NewRootCA(key, "bench", v, Profile{}); err != nil {
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
