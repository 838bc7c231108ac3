package e2e_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// testPKI is a project CA and participant certificates.
type testPKI struct {
	ca  pki.CA
	dir string
}

func newPKI(t *testing.T, dir string) *testPKI {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRootCA(key, "e2e-project", pki.ValidityFor(time.Now(), 30))
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{ca: pki.CA{Cert: root, Signer: key}, dir: dir}
}

// kit writes a startup kit folder <dir>/<name>/startup with rootCA.pem and
// <base>.crt/.key, and returns the kit folder.
func (p *testPKI) kit(t *testing.T, name, base string, subj pki.Subject) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := p.ca.Issue(pki.LeafRequest{Subject: subj, PublicKey: &key.PublicKey, DNSNames: []string{subj.CommonName},
		Validity: pki.ValidityFor(time.Now(), 30)})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(p.dir, name)
	startup := filepath.Join(dir, "startup")
	if err := os.MkdirAll(startup, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, data := range map[string][]byte{"rootCA.pem": pki.CertPEM(p.ca.Cert), base + ".crt": pki.CertPEM(cert), base + ".key": pki.KeyPEM(key)} {
		if err := os.WriteFile(filepath.Join(startup, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// tamperArchive returns the tgz with the kit file named file replaced by
// change(its content).
func tamperArchive(t *testing.T, tgz []byte, file string, change func([]byte) []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	changed := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(h.Name, "/"+file) {
			data = change(data)
			h.Size = int64(len(data))
			changed = true
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	if !changed {
		t.Fatalf("no %s in the kit archive", file)
	}
	tw.Close()
	zw.Close()
	return out.Bytes()
}
