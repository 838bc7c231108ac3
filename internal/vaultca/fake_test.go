package vaultca

// Tests against an in-process fake of the few Transit endpoints the signer
// uses: request shapes, answer checks and error paths a real server will not
// produce on demand. The real-server tests are in server_test.go.

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeTransit struct {
	mu   sync.Mutex
	keys map[int]*rsa.PrivateKey // version -> key
	last map[string]any          // last sign request body

	exportable   bool
	forbidSign   bool
	answerVer    int  // if set, claim this version in the answer
	alwaysPSS    bool // ignore signature_algorithm (as a misconfigured server might)
	garbage      bool // return random bytes
	keyType      string
	latest       int
	minEncrypt   int
	missingKeyOK bool
}

var (
	fakeKeysOnce sync.Once
	fakeKeys     []*rsa.PrivateKey
)

func testKeys(t testing.TB) []*rsa.PrivateKey {
	fakeKeysOnce.Do(func() {
		for i := 0; i < 2; i++ {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			fakeKeys = append(fakeKeys, k)
		}
	})
	return fakeKeys
}

func newFake(t *testing.T) (*fakeTransit, *httptest.Server) {
	ks := testKeys(t)
	f := &fakeTransit{keys: map[int]*rsa.PrivateKey{1: ks[0], 2: ks[1]}, keyType: "rsa-2048", latest: 2}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	return f, srv
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeTransit) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.URL.Path == "/v1/auth/token/lookup-self":
		writeJSON(w, 200, map[string]any{"data": map[string]any{"ttl": 0}})
	case r.Method == http.MethodGet && r.URL.Path == "/v1/transit/keys/ca":
		keys := map[string]any{}
		for v, k := range f.keys {
			der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
			keys[strconv.Itoa(v)] = map[string]any{
				"name":       f.keyType,
				"public_key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
			}
		}
		writeJSON(w, 200, map[string]any{"data": map[string]any{
			"type": f.keyType, "latest_version": f.latest, "min_encryption_version": f.minEncrypt,
			"min_available_version": 0, "exportable": f.exportable, "allow_plaintext_backup": false,
			"auto_rotate_period": 0, "keys": keys,
		}})
	case r.Method == http.MethodGet:
		writeJSON(w, 404, map[string]any{"errors": []string{}})
	case r.URL.Path == "/v1/transit/sign/ca":
		if f.forbidSign {
			writeJSON(w, 403, map[string]any{"errors": []string{"1 error occurred:\n\t* permission denied\n\n"}})
			return
		}
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		f.last = body
		ver, _ := body["key_version"].(float64)
		key := f.keys[int(ver)]
		digest, _ := base64.StdEncoding.DecodeString(body["input"].(string))
		var sig []byte
		var err error
		if body["signature_algorithm"] == "pkcs1v15" && !f.alwaysPSS {
			sig, err = rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest)
		} else {
			sig, err = rsa.SignPSS(rand.Reader, key, crypto.SHA256, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
		}
		if err != nil {
			writeJSON(w, 400, map[string]any{"errors": []string{err.Error()}})
			return
		}
		if f.garbage {
			_, _ = rand.Read(sig)
		}
		v := int(ver)
		if f.answerVer != 0 {
			v = f.answerVer
		}
		writeJSON(w, 200, map[string]any{"data": map[string]any{
			"signature": fmt.Sprintf("vault:v%d:%s", v, base64.StdEncoding.EncodeToString(sig)), "key_version": v,
		}})
	default:
		writeJSON(w, 404, map[string]any{"errors": []string{"no handler for route"}})
	}
}

func fakeSigner(t *testing.T, f *fakeTransit, srv *httptest.Server, version int) *Signer {
	t.Helper()
	client, err := Login(context.Background(), Config{Address: srv.URL, Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(context.Background(), client, "transit", "ca", version)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFakeRequestShape(t *testing.T) {
	f, srv := newFake(t)
	s := fakeSigner(t, f, srv, 1)
	if s.KeyVersion() != 1 || !s.Public().(*rsa.PublicKey).Equal(&f.keys[1].PublicKey) {
		t.Fatalf("signer pinned to %d with the wrong public key", s.KeyVersion())
	}
	digest := sha256.Sum256([]byte("x"))
	if _, err := s.Sign(nil, digest[:], crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"signature_algorithm": "pkcs1v15", "prehashed": true, "hash_algorithm": "sha2-256", "key_version": float64(1)}
	for k, v := range want {
		if f.last[k] != v {
			t.Errorf("pkcs1v15 request %s = %v, want %v", k, f.last[k], v)
		}
	}
	if _, ok := f.last["salt_length"]; ok {
		t.Errorf("pkcs1v15 request carries salt_length")
	}
	if _, err := s.Sign(nil, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256}); err != nil {
		t.Fatal(err)
	}
	if f.last["signature_algorithm"] != "pss" || f.last["salt_length"] != "222" {
		t.Errorf("PSS request = %v, want signature_algorithm pss, salt_length \"222\"", f.last)
	}
	// Latest = 2 when version 0.
	if s2 := fakeSigner(t, f, srv, 0); s2.KeyVersion() != 2 {
		t.Errorf("version 0 pinned %d, want latest 2", s2.KeyVersion())
	}
}

func TestFakeSaltMapping(t *testing.T) {
	f, srv := newFake(t)
	s := fakeSigner(t, f, srv, 1)
	for _, tc := range []struct {
		in   int
		want string
	}{{rsa.PSSSaltLengthAuto, "222"}, {rsa.PSSSaltLengthEqualsHash, "32"}, {222, "222"}, {20, "20"}, {223, ""}, {-7, ""}} {
		r, err := s.request(&rsa.PSSOptions{SaltLength: tc.in, Hash: crypto.SHA256})
		got := ""
		if err == nil {
			got = r.params["salt_length"].(string)
		}
		if got != tc.want {
			t.Errorf("salt %d -> %q (err %v), want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := s.request(crypto.MD5); err == nil {
		t.Error("MD5 accepted")
	}
	if _, err := s.Sign(nil, []byte("short"), crypto.SHA256); err == nil || !strings.Contains(err.Error(), "needs 32") {
		t.Errorf("short digest: %v", err)
	}
	if got := MaxPSSSaltLength(3072, crypto.SHA256); got != 350 {
		t.Errorf("max salt 3072 = %d", got)
	}
	if got := MaxPSSSaltLength(4096, crypto.SHA256); got != 478 {
		t.Errorf("max salt 4096 = %d", got)
	}
}

func TestFakeAnswerChecks(t *testing.T) {
	digest := sha256.Sum256([]byte("x"))
	for _, tc := range []struct {
		name  string
		setup func(*fakeTransit)
		want  string
	}{
		{"wrong version", func(f *fakeTransit) { f.answerVer = 2 }, "not the pinned 1"},
		{"server ignores pkcs1v15", func(f *fakeTransit) { f.alwaysPSS = true }, "does not verify"},
		{"garbage", func(f *fakeTransit) { f.garbage = true }, "does not verify"},
		{"403", func(f *fakeTransit) { f.forbidSign = true }, `needs "update" on "transit/sign/ca"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, srv := newFake(t)
			s := fakeSigner(t, f, srv, 1)
			tc.setup(f)
			_, err := s.Sign(nil, digest[:], crypto.SHA256)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if tc.name == "403" {
				var pe *PermissionError
				if !errors.As(err, &pe) {
					t.Errorf("403 is not a *PermissionError: %T", err)
				}
			}
		})
	}
}

func TestFakeNewSignerRefusals(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(*fakeTransit)
		version int
		want    string
	}{
		{"exportable", func(f *fakeTransit) { f.exportable = true }, 0, "exportable"},
		{"future version", func(f *fakeTransit) {}, 3, "no version 3"},
		{"below min_encryption_version", func(f *fakeTransit) { f.minEncrypt = 2 }, 1, "min_encryption_version 2"},
		{"trimmed", func(f *fakeTransit) { delete(f.keys, 1) }, 1, "no longer available"},
		{"not rsa", func(f *fakeTransit) { f.keyType = "ecdsa-p256" }, 0, `type "ecdsa-p256"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, srv := newFake(t)
			tc.setup(f)
			client, err := Login(context.Background(), Config{Address: srv.URL, Token: "t"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = NewSigner(context.Background(), client, "transit", "ca", tc.version)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "transit/keys/ca") {
				t.Fatalf("err = %v, want it to contain %q and the key path", err, tc.want)
			}
		})
	}
	_, srv := newFake(t)
	client, _ := Login(context.Background(), Config{Address: srv.URL, Token: "t"})
	_, err := NewSigner(context.Background(), client, "transit", "nokey", 0)
	if !errors.Is(err, ErrKeyNotFound) || !strings.Contains(err.Error(), "transit/keys/nokey") {
		t.Errorf("missing key: %v", err)
	}
}

func TestParseSignature(t *testing.T) {
	v, sig, err := ParseSignature("vault:v12:" + base64.StdEncoding.EncodeToString([]byte{1, 2, 3}))
	if err != nil || v != 12 || len(sig) != 3 {
		t.Fatalf("got %d %x %v", v, sig, err)
	}
	for _, bad := range []string{"", "vault:v1", "vault:1:AAAA", "vault:vx:AAAA", "vault:v0:AAAA", "vault:v1:!!", "x:v1:AAAA", "vault:v1:AA:AA"} {
		if _, _, err := ParseSignature(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestUnreachableIsQuickAndClear(t *testing.T) {
	addr := closedAddr(t)
	start := time.Now()
	_, err := Login(context.Background(), Config{Address: addr, Token: "t"})
	took := time.Since(start)
	if err == nil {
		t.Fatal("login to a closed port succeeded")
	}
	t.Logf("took %v: %v", took, err)
	if !strings.Contains(err.Error(), "cannot reach vault at "+addr) {
		t.Errorf("error does not name the address: %v", err)
	}
	if took > 10*time.Second {
		t.Errorf("took %v", took)
	}
}

func TestHangingServerTimesOut(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() { // accept, never answer
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	start := time.Now()
	_, err = Login(context.Background(), Config{Address: "http://" + l.Addr().String(), Token: "t", Timeout: time.Second})
	took := time.Since(start)
	if err == nil {
		t.Fatal("login to a silent server succeeded")
	}
	t.Logf("took %v: %v", took, err)
	if took > 5*time.Second {
		t.Errorf("took %v with a 1s timeout", took)
	}
	if !strings.Contains(err.Error(), l.Addr().String()) {
		t.Errorf("error does not name the address: %v", err)
	}
}

func TestLoginNeedsCredentials(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "")
	_, srv := newFake(t)
	_, err := Login(context.Background(), Config{Address: srv.URL})
	if err == nil || !strings.Contains(err.Error(), "no credentials") {
		t.Errorf("err = %v", err)
	}
	_, err = Login(context.Background(), Config{Address: srv.URL, AppRole: &AppRoleAuth{RoleID: "r", SecretID: "s"}, JWT: &JWTAuth{JWT: "j"}})
	if err == nil || !strings.Contains(err.Error(), "only one") {
		t.Errorf("err = %v", err)
	}
}
