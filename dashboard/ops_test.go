package dashboard

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoginRateLimit(t *testing.T) {
	cred, _ := ParseCredential("admin@x.org:pw:nvidia")
	s, err := Open(t.TempDir(), &cred, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Log = nil
	now := time.Unix(1_800_000_000, 0)
	s.Now = func() time.Time { return now }
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	c := client{t, ts.URL}
	try := func(email, pw string) int {
		st, _ := c.do("POST", "/api/v1/login", "", map[string]any{"email": email, "password": pw})
		return st
	}
	for i := 0; i < maxLoginFailures; i++ {
		if st := try("admin@x.org", "wrong"); st != 401 {
			t.Fatalf("failure %d: %d", i, st)
		}
	}
	if st := try("admin@x.org", "pw"); st != 429 {
		t.Fatalf("right password after %d failures: %d, want 429", maxLoginFailures, st)
	}
	if st := try("other@x.org", "x"); st != 401 {
		t.Fatalf("another email: %d", st)
	}
	now = now.Add(loginWindow)
	if st := try("admin@x.org", "pw"); st != 200 {
		t.Fatalf("after the window: %d", st)
	}
	// A success clears the count.
	for i := 0; i < maxLoginFailures-1; i++ {
		try("admin@x.org", "wrong")
	}
	try("admin@x.org", "pw")
	if st := try("admin@x.org", "wrong"); st != 401 {
		t.Fatalf("after a success: %d", st)
	}
}

func TestMetrics(t *testing.T) {
	s, err := Open(t.TempDir(), nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	c := client{t, ts.URL}
	c.do("GET", "/api/v1/project", "", nil)
	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := `flare_dashboard_requests_total{code="200",route="GET /api/v1/project"} 1`
	if !strings.Contains(string(b), want) {
		t.Fatalf("metrics lack %q:\n%.2000s", want, b)
	}
}

func writeSelfSigned(t *testing.T, dir string) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "web.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, "web.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	return cert
}

func TestLoadTLS(t *testing.T) {
	if conf, err := LoadTLS(t.TempDir()); conf != nil || err != nil {
		t.Fatalf("empty folder: %v %v", conf, err)
	}
	half := t.TempDir()
	os.WriteFile(filepath.Join(half, "web.crt"), []byte("x"), 0o600)
	if _, err := LoadTLS(half); err == nil {
		t.Fatal("web.crt without web.key accepted")
	}
	for _, sub := range []string{"", "cert"} {
		folder := t.TempDir()
		cert := writeSelfSigned(t, filepath.Join(folder, sub))
		conf, err := LoadTLS(folder)
		if err != nil || conf == nil {
			t.Fatalf("%q: %v %v", sub, conf, err)
		}
		s, err := Open(folder, nil, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: s.Handler()}
		go hs.Serve(tls.NewListener(ln, conf))
		pool := x509.NewCertPool()
		pool.AddCert(cert)
		cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := cl.Get("https://" + ln.Addr().String() + "/healthz")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%q: https healthz: %v %v", sub, resp, err)
		}
		resp.Body.Close()
		hs.Close()
		s.Close()
	}
}
