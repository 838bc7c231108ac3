package dashboard

import (
	"bytes"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealRootKey(t *testing.T) {
	pemKey := []byte("-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----\n")
	if s, _ := sealRootKey(pemKey, ""); s != string(pemKey) {
		t.Fatal("no passphrase must store plain PEM")
	}
	sealed, err := sealRootKey(pemKey, "pp")
	if err != nil || strings.Contains(sealed, "PRIVATE KEY") || !strings.HasPrefix(sealed, sealedPrefix) {
		t.Fatalf("sealed %q %v", sealed, err)
	}
	if got, err := openRootKey(sealed, "pp"); err != nil || !bytes.Equal(got, pemKey) {
		t.Fatalf("open: %q %v", got, err)
	}
	for _, pp := range []string{"", "wrong"} {
		if _, err := openRootKey(sealed, pp); err != ErrRootKeyLocked {
			t.Fatalf("passphrase %q: %v", pp, err)
		}
	}
	if _, err := openRootKey(sealedPrefix+"AAAA", "pp"); err == nil {
		t.Fatal("corrupt accepted")
	}
}

// TestPassphraseBlob: with a passphrase the database holds no plain root
// key; downloads need the passphrase (503 without it or with a wrong one).
func TestPassphraseBlob(t *testing.T) {
	dir := t.TempDir()
	cred, _ := ParseCredential("admin@x.org:pw:nvidia")
	open := func(pp string) (*Server, *httptest.Server) {
		s, err := Open(dir, &cred, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		s.Passphrase = pp
		return s, httptest.NewServer(s.Handler())
	}
	s, ts := open("secret pp")
	c := client{t, ts.URL}
	admin := c.login("admin@x.org", "pw")
	if st, _ := c.do("PATCH", "/api/v1/project", admin, map[string]any{"short_name": "pp", "server1": "server1", "frozen": true}); st != 200 {
		t.Fatal(st)
	}
	if resp, b := postBlob(t, ts.URL+"/api/v1/servers/1/blob", admin, "pin1"); resp.StatusCode != 200 {
		t.Fatalf("with passphrase: %d %s", resp.StatusCode, b)
	}
	ts.Close()
	s.Close()
	for _, f := range []string{"db.sqlite", "db.sqlite-wal"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil && bytes.Contains(b, []byte("PRIVATE KEY")) {
			t.Fatalf("%s holds a plain private key", f)
		}
	}
	for _, pp := range []string{"", "wrong"} {
		s, ts := open(pp)
		if resp, b := postBlob(t, ts.URL+"/api/v1/servers/1/blob", admin, "pin1"); resp.StatusCode != 503 {
			t.Errorf("passphrase %q: %d %s", pp, resp.StatusCode, b)
		}
		ts.Close()
		s.Close()
	}
}
