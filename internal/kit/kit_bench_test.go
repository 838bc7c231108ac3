package kit

// Benchmarks for what one startup kit costs the provider: rendering the file
// set and signing it (one RSA-PSS signature per file with the root key),
// writing it atomically, and the digest Read computes to detect drift.
// `make bench` runs them.

import (
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/project"
)

func benchInput(b *testing.B, p project.Participant) Input {
	b.Helper()
	rootKey, err := pki.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	root, err := pki.NewRootCA(rootKey, "bench", pki.ValidityFor(time.Now(), 360), pki.Profile{})
	if err != nil {
		b.Fatal(err)
	}
	ca := pki.CA{Cert: root, Signer: rootKey}
	key, err := pki.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	cert, err := ca.Issue(pki.LeafRequest{Subject: pki.Subject{CommonName: p.Name, Organization: p.Org, Role: p.CertRole()},
		PublicKey: &key.PublicKey, Validity: pki.ValidityFor(time.Now(), 360)})
	if err != nil {
		b.Fatal(err)
	}
	return Input{Project: "bench", Participant: p, Server: server, RootCAPEM: pki.CertPEM(root),
		CertPEM: pki.CertPEM(cert), KeyPEM: pki.KeyPEM(key), Signer: rootKey}
}

// BenchmarkSignContent is one signature.json entry: RSA-PSS/SHA-256 with the
// root key over a small file.
func BenchmarkSignContent(b *testing.B) {
	in := benchInput(b, client)
	data := make([]byte, 1024)
	for b.Loop() {
		if _, err := SignContent(data, in.Signer); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuild is a whole kit in memory, signatures included.
func BenchmarkBuild(b *testing.B) {
	for _, p := range []project.Participant{server, client, admin} {
		b.Run(string(p.Type), func(b *testing.B) {
			in := benchInput(b, p)
			var files int
			for b.Loop() {
				k, err := Build(in)
				if err != nil {
					b.Fatal(err)
				}
				files = len(k.Files)
			}
			b.ReportMetric(float64(files), "files/kit")
		})
	}
	// A client kit as flare_clients builds it: with the apply's signature
	// cache, which already holds the files every kit shares.
	b.Run("client-cached", func(b *testing.B) {
		in := benchInput(b, client)
		in.Signatures = NewSignatureCache(in.Signer)
		if _, err := Build(in); err != nil {
			b.Fatal(err)
		}
		i := 0
		for b.Loop() {
			// Another client each time: its own name, key and certificate.
			i++
			in.Participant.Name = "site-" + strconv.Itoa(i)
			in.CertPEM = append(in.CertPEM[:len(in.CertPEM):len(in.CertPEM)], ' ')
			in.KeyPEM = append(in.KeyPEM[:len(in.KeyPEM):len(in.KeyPEM)], ' ')
			if _, err := Build(in); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkWrite is writing a built client kit to disk: a fresh directory
// the first time, then the atomic swap that replaces an existing kit.
func BenchmarkWrite(b *testing.B) {
	k, err := Build(benchInput(b, client))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("new", func(b *testing.B) {
		dir := b.TempDir()
		i := 0
		for b.Loop() {
			i++
			if _, err := k.Write(filepath.Join(dir, strconv.Itoa(i))); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("replace", func(b *testing.B) {
		dir := b.TempDir()
		for b.Loop() {
			if _, err := k.Write(dir); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDigestDir is the drift check Read runs on every refresh.
func BenchmarkDigestDir(b *testing.B) {
	k, err := Build(benchInput(b, client))
	if err != nil {
		b.Fatal(err)
	}
	dir, err := k.Write(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := DigestDir(dir); err != nil {
			b.Fatal(err)
		}
	}
}
