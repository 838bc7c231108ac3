package vaultca

// Tests against a real Vault or OpenBao server: VAULT_ADDR and a root
// VAULT_TOKEN. `make vault-test` starts an OpenBao dev server on 127.0.0.1
// (scripts/bao-dev.sh) and runs them; without VAULT_ADDR they skip, unless
// VAULTCA_REQUIRE_SERVER=1 (set by the make target) turns the skip into a
// failure.

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// requireServer skips unless VAULT_ADDR names a server to test against. The
// tests create keys, policies, roles and auth mounts, so a VAULT_ADDR that
// is not on loopback (say, a team Vault exported in a shell) is used only
// when VAULTCA_REQUIRE_SERVER=1 says it is a test server.
func requireServer(t testing.TB) {
	t.Helper()
	addr := os.Getenv("VAULT_ADDR")
	required := os.Getenv("VAULTCA_REQUIRE_SERVER") != ""
	if addr != "" && (required || isLoopback(addr)) {
		return
	}
	msg := "VAULT_ADDR is not set: this test needs a real Vault/OpenBao server with a root VAULT_TOKEN; " +
		"run `make vault-test` (starts an OpenBao dev server on 127.0.0.1)"
	if addr != "" {
		msg = "VAULT_ADDR=" + addr + " is not a loopback address: not running tests that create keys, policies " +
			"and auth mounts there; set VAULTCA_REQUIRE_SERVER=1 if it is a test server, or run `make vault-test`"
	}
	if required {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func isLoopback(addr string) bool {
	u, err := url.Parse(addr)
	if err != nil {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}

func rootClient(t testing.TB) *api.Client {
	t.Helper()
	requireServer(t)
	c, err := Login(context.Background(), Config{})
	if err != nil {
		t.Fatalf("root login from VAULT_ADDR/VAULT_TOKEN: %v", err)
	}
	ensureMount(t, c, "transit")
	return c
}

func ensureMount(t testing.TB, c *api.Client, path string) {
	t.Helper()
	mounts, err := c.Sys().ListMounts()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mounts[path+"/"]; ok {
		return
	}
	if err := c.Sys().Mount(path, &api.MountInput{Type: "transit"}); err != nil && !strings.Contains(err.Error(), "already in use") {
		t.Fatal(err)
	}
}

func ensureAuth(t testing.TB, c *api.Client, path, typ string) {
	t.Helper()
	auths, err := c.Sys().ListAuth()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := auths[path+"/"]; ok {
		return
	}
	if err := c.Sys().EnableAuthWithOptions(path, &api.EnableAuthOptions{Type: typ}); err != nil && !strings.Contains(err.Error(), "already in use") {
		t.Fatal(err)
	}
}

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

// uniqueName makes key, policy and role names that do not collide across
// runs against the same server.
func uniqueName(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	n := strings.Trim(nonName.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(n) > 40 {
		n = n[:40]
	}
	return n + "-" + hex.EncodeToString(b[:])
}

func newKey(t testing.TB, c *api.Client, params map[string]any) string {
	t.Helper()
	name := uniqueName(t)
	if _, err := c.Logical().Write("transit/keys/"+name, params); err != nil {
		t.Fatal(err)
	}
	return name
}

// tokenWith returns a token whose only policy (besides default) is hcl.
func tokenWith(t testing.TB, c *api.Client, hcl string) string {
	t.Helper()
	p := uniqueName(t)
	if err := c.Sys().PutPolicy(p, hcl); err != nil {
		t.Fatal(err)
	}
	sec, err := c.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{p}, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	return sec.Auth.ClientToken
}

func clientWithToken(t testing.TB, token string) *api.Client {
	t.Helper()
	c, err := Login(context.Background(), Config{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestServerCreateKeyAndSignRootCert(t *testing.T) {
	ctx := context.Background()
	root := rootClient(t)
	name := uniqueName(t)

	info, warnings, err := EnsureKey(ctx, root, "transit", name, KeyTypeRSA2048)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Created || len(warnings) != 0 || info.LatestVersion != 1 || info.Exportable || info.Type != KeyTypeRSA2048 {
		t.Fatalf("created key: %+v, warnings %q", info, warnings)
	}
	// The private key cannot come out.
	if _, err := root.Logical().Read("transit/export/signing-key/" + name); err == nil {
		t.Fatal("export/signing-key worked on the CA key")
	}
	// Second call adopts it.
	info2, warnings, err := EnsureKey(ctx, root, "transit", name, KeyTypeRSA2048)
	if err != nil || info2.Created || len(warnings) != 1 || !strings.Contains(warnings[0], "adopted") {
		t.Fatalf("re-ensure: %+v %q %v", info2, warnings, err)
	}

	signer, err := NewSigner(ctx, root, "transit", name, 0)
	if err != nil {
		t.Fatal(err)
	}
	if signer.KeyVersion() != 1 || !signer.Public().(*rsa.PublicKey).Equal(info.PublicKeys[1]) {
		t.Fatalf("signer pinned %d", signer.KeyVersion())
	}

	// A self-signed root straight through x509.CreateCertificate.
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "vault root"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if cert.SignatureAlgorithm != x509.SHA256WithRSA {
		t.Fatalf("signature algorithm %v", cert.SignatureAlgorithm)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Fatal(err)
	}
	tbs := sha256.Sum256(cert.RawTBSCertificate)
	if err := rsa.VerifyPKCS1v15(signer.Public().(*rsa.PublicKey), crypto.SHA256, tbs[:], cert.Signature); err != nil {
		t.Fatalf("not PKCS#1 v1.5/SHA-256: %v", err)
	}

	// The provider's own path: an NVFlare-style root and a leaf.
	rootCert, err := pki.NewRootCA(signer, "proj", pki.ValidityFor(now, 30), pki.Profile{})
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := pki.CA{Cert: rootCert, Signer: signer}.Issue(pki.LeafRequest{
		Subject:   pki.Subject{CommonName: "site-1", Organization: "org"},
		PublicKey: &leafKey.PublicKey, DNSNames: []string{"site-1"}, Validity: pki.ValidityFor(now, 30),
	})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(rootCert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("leaf does not chain to the Transit root: %v", err)
	}
}

func TestServerPSSMaxSalt(t *testing.T) {
	ctx := context.Background()
	root := rootClient(t)
	for _, tc := range []struct {
		typ     string
		maxSalt int
	}{{KeyTypeRSA2048, 222}, {KeyTypeRSA3072, 350}, {KeyTypeRSA4096, 478}} {
		t.Run(tc.typ, func(t *testing.T) {
			name := uniqueName(t)
			if _, _, err := EnsureKey(ctx, root, "transit", name, tc.typ); err != nil {
				t.Fatal(err)
			}
			s, err := NewSigner(ctx, root, "transit", name, 0)
			if err != nil {
				t.Fatal(err)
			}
			pub := s.Public().(*rsa.PublicKey)
			// As internal/kit.SignContent: sha256 of the file, PSS with
			// SaltLength Auto (NVFlare's PSS.MAX_LENGTH).
			data := []byte("fed_server.json contents")
			digest := sha256.Sum256(data)
			sig, err := s.Sign(rand.Reader, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256})
			if err != nil {
				t.Fatal(err)
			}
			if err := rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}); err != nil {
				t.Errorf("verify with auto salt: %v", err)
			}
			if err := rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: tc.maxSalt}); err != nil {
				t.Errorf("verify with explicit salt %d: %v", tc.maxSalt, err)
			}
			if err := rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}); err == nil {
				t.Errorf("signature also verifies with a 32-byte salt: salt is not the maximum")
			}
			if tc.typ != KeyTypeRSA2048 {
				return
			}
			// Explicit max and equals-hash.
			sig, err = s.Sign(nil, digest[:], &rsa.PSSOptions{SaltLength: 222, Hash: crypto.SHA256})
			if err != nil {
				t.Fatal(err)
			}
			if err := rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: 222}); err != nil {
				t.Error(err)
			}
			sig, err = s.Sign(nil, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
			if err != nil {
				t.Fatal(err)
			}
			if err := rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: 32}); err != nil {
				t.Error(err)
			}
			if _, err := s.Sign(nil, digest[:], &rsa.PSSOptions{SaltLength: 223, Hash: crypto.SHA256}); err == nil {
				t.Error("salt 223 accepted")
			}
			// Go's x509 asks for PSS with equals-hash and verifies it.
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "pss"},
				NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), SignatureAlgorithm: x509.SHA256WithRSAPSS}
			if _, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, s); err != nil {
				t.Errorf("PSS certificate: %v", err)
			}
			// One batch request for several files.
			var digests [][]byte
			for i := 0; i < 5; i++ {
				d := sha256.Sum256([]byte(fmt.Sprint("file ", i)))
				digests = append(digests, d[:])
			}
			sigs, err := s.SignDigests(ctx, digests, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256})
			if err != nil {
				t.Fatal(err)
			}
			for i := range sigs {
				if err := rsa.VerifyPSS(pub, crypto.SHA256, digests[i], sigs[i], &rsa.PSSOptions{SaltLength: 222}); err != nil {
					t.Errorf("batch item %d: %v", i, err)
				}
			}
		})
	}
}

func TestServerPinnedVersionAfterRotation(t *testing.T) {
	ctx := context.Background()
	root := rootClient(t)
	name := uniqueName(t)
	if _, _, err := EnsureKey(ctx, root, "transit", name, KeyTypeRSA2048); err != nil {
		t.Fatal(err)
	}
	s1, err := NewSigner(ctx, root, "transit", name, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("transit/keys/"+name+"/rotate", nil); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("after rotation"))
	sig, err := s1.Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if s1.KeyVersion() != 1 {
		t.Fatalf("pinned %d", s1.KeyVersion())
	}
	if err := rsa.VerifyPKCS1v15(s1.Public().(*rsa.PublicKey), crypto.SHA256, digest[:], sig); err != nil {
		t.Fatalf("v1 signer after rotation: %v", err)
	}
	// Pinning 1 explicitly gives the same key; 0 now means 2.
	again, err := NewSigner(ctx, root, "transit", name, 1)
	if err != nil || !again.Public().(*rsa.PublicKey).Equal(s1.Public()) {
		t.Fatalf("pinned v1 again: %v", err)
	}
	s2, err := NewSigner(ctx, root, "transit", name, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s2.KeyVersion() != 2 || s2.Public().(*rsa.PublicKey).Equal(s1.Public()) {
		t.Fatalf("v2 signer: version %d, same key as v1: %v", s2.KeyVersion(), s2.Public().(*rsa.PublicKey).Equal(s1.Public()))
	}
	if err := rsa.VerifyPKCS1v15(s2.Public().(*rsa.PublicKey), crypto.SHA256, digest[:], sig); err == nil {
		t.Fatal("v1 signature verifies under v2")
	}
	if _, err := NewSigner(ctx, root, "transit", name, 3); err == nil || !strings.Contains(err.Error(), "no version 3") {
		t.Fatalf("v3: %v", err)
	}
	// Raising min_encryption_version past the pin: clear errors.
	if _, err := root.Logical().Write("transit/keys/"+name+"/config", map[string]any{"min_encryption_version": 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Sign(nil, digest[:], crypto.SHA256); err == nil || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("sign below min_encryption_version: %v", err)
	} else {
		t.Logf("sign below min_encryption_version: %v", err)
	}
	if _, err := NewSigner(ctx, root, "transit", name, 1); err == nil || !strings.Contains(err.Error(), "min_encryption_version 2") {
		t.Fatalf("new signer below min_encryption_version: %v", err)
	}
}

func TestServerAdoptRefusals(t *testing.T) {
	ctx := context.Background()
	root := rootClient(t)
	for _, tc := range []struct {
		name   string
		params map[string]any
		want   string // key type to ask for
		err    string // "" = adopt
	}{
		{"exportable", map[string]any{"type": "rsa-2048", "exportable": true}, KeyTypeRSA2048, "is exportable"},
		{"plaintext backup", map[string]any{"type": "rsa-2048", "allow_plaintext_backup": true}, KeyTypeRSA2048, "allow_plaintext_backup"},
		{"wrong type", map[string]any{"type": "rsa-3072"}, KeyTypeRSA2048, `set the key type to "rsa-3072"`},
		{"not rsa", map[string]any{"type": "ecdsa-p256"}, "", `type "ecdsa-p256"`},
		{"any rsa type", map[string]any{"type": "rsa-3072"}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := newKey(t, root, tc.params)
			info, warnings, err := EnsureKey(ctx, root, "transit", name, tc.want)
			if tc.err == "" {
				if err != nil || info.Created || len(warnings) == 0 {
					t.Fatalf("adopt: %+v %q %v", info, warnings, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "transit/keys/"+name) {
				t.Fatalf("err = %v, want %q and the key path", err, tc.err)
			}
			t.Logf("refused: %v", err)
		})
	}
	// Transit's create on an existing name returns the old key unchanged
	// (exportable=false is not applied): EnsureKey must still refuse.
	name := newKey(t, root, map[string]any{"type": "rsa-2048", "exportable": true})
	if _, err := root.Logical().Write("transit/keys/"+name, map[string]any{"type": "rsa-2048", "exportable": false}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := EnsureKey(ctx, root, "transit", name, KeyTypeRSA2048); err == nil {
		t.Fatal("exportable key adopted after a re-create")
	}
	// auto-rotating and deletable keys are adopted with warnings.
	name = newKey(t, root, map[string]any{"type": "rsa-2048", "auto_rotate_period": "24h"})
	if _, err := root.Logical().Write("transit/keys/"+name+"/config", map[string]any{"deletion_allowed": true}); err != nil {
		t.Fatal(err)
	}
	_, warnings, err := EnsureKey(ctx, root, "transit", name, "")
	if err != nil || len(warnings) != 3 || !strings.Contains(warnings[1], "24h0m0s") || !strings.Contains(warnings[2], "deletion_allowed") {
		t.Fatalf("warnings %q, err %v", warnings, err)
	}
}

func signerPolicy(name string) string {
	return fmt.Sprintf(`path "transit/keys/%[1]s" { capabilities = ["read"] }
path "transit/sign/%[1]s" { capabilities = ["update"] }
`, name)
}

func TestServerAppRoleLogin(t *testing.T) {
	ctx := context.Background()
	root := rootClient(t)
	ensureAuth(t, root, "approle", "approle")
	name := uniqueName(t)
	if _, _, err := EnsureKey(ctx, root, "transit", name, KeyTypeRSA2048); err != nil {
		t.Fatal(err)
	}
	if err := root.Sys().PutPolicy(name, signerPolicy(name)); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/approle/role/"+name, map[string]any{"token_policies": []string{name}, "token_ttl": "10m"}); err != nil {
		t.Fatal(err)
	}
	rid, err := root.Logical().Read("auth/approle/role/" + name + "/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := root.Logical().Write("auth/approle/role/"+name+"/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{AppRole: &AppRoleAuth{RoleID: rid.Data["role_id"].(string), SecretID: sid.Data["secret_id"].(string)}}

	client, err := Login(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if client.Token() == os.Getenv("VAULT_TOKEN") {
		t.Fatal("still using VAULT_TOKEN")
	}
	// Adopt (read only) and sign with the AppRole's token.
	if _, _, err := EnsureKey(ctx, client, "transit", name, KeyTypeRSA2048); err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(ctx, client, "transit", name, 0)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("approle"))
	if _, err := s.Sign(nil, digest[:], crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	cfg.AppRole.SecretID = "wrong"
	if _, err := Login(ctx, cfg); err == nil || !strings.Contains(err.Error(), "auth/approle/login") {
		t.Fatalf("bad secret id: %v", err)
	} else {
		t.Logf("bad secret id: %v", err)
	}
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func makeJWT(t testing.TB, key *rsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT"})
	c, _ := json.Marshal(claims)
	signing := b64url(h) + "." + b64url(c)
	d := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + b64url(sig)
}

func TestServerJWTLogin(t *testing.T) {
	ctx := context.Background()
	root := rootClient(t)
	name := uniqueName(t)
	mount := "jwt-" + name // own mount: its config is per mount
	ensureAuth(t, root, mount, "jwt")
	t.Cleanup(func() { _ = root.Sys().DisableAuth(mount) })
	issuer, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&issuer.PublicKey)
	pubPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if _, err := root.Logical().Write("auth/"+mount+"/config", map[string]any{"jwt_validation_pubkeys": []string{pubPEM}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := EnsureKey(ctx, root, "transit", name, KeyTypeRSA2048); err != nil {
		t.Fatal(err)
	}
	if err := root.Sys().PutPolicy(name, signerPolicy(name)); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/"+mount+"/role/ci", map[string]any{
		"role_type": "jwt", "user_claim": "sub", "bound_audiences": []string{"flare-test"},
		"token_policies": []string{name}, "token_ttl": "10m",
	}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	token := makeJWT(t, issuer, map[string]any{"sub": "pipeline", "aud": "flare-test", "iat": now, "nbf": now - 5, "exp": now + 300})
	client, err := Login(ctx, Config{JWT: &JWTAuth{Role: "ci", JWT: token, MountPath: mount}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(ctx, client, "transit", name, 0)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("jwt"))
	if _, err := s.Sign(nil, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256}); err != nil {
		t.Fatal(err)
	}
	wrongAud := makeJWT(t, issuer, map[string]any{"sub": "pipeline", "aud": "other", "iat": now, "exp": now + 300})
	if _, err := Login(ctx, Config{JWT: &JWTAuth{Role: "ci", JWT: wrongAud, MountPath: mount}}); err == nil {
		t.Fatal("JWT with the wrong audience logged in")
	} else {
		t.Logf("wrong audience: %v", err)
	}
}

func TestServerPermissionDiagnostics(t *testing.T) {
	ctx := context.Background()
	root := rootClient(t)
	name := uniqueName(t)
	if _, _, err := EnsureKey(ctx, root, "transit", name, KeyTypeRSA2048); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("403"))

	// read on the key but no sign permission.
	readOnly := clientWithToken(t, tokenWith(t, root, fmt.Sprintf(`path "transit/keys/%s" { capabilities = ["read"] }
path "transit/keys/%s-new" { capabilities = ["read"] }`, name, name)))
	s, err := NewSigner(ctx, readOnly, "transit", name, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Sign(nil, digest[:], crypto.SHA256)
	var pe *PermissionError
	if !errors.As(err, &pe) || pe.Capability != "update" || pe.Path != "transit/sign/"+name {
		t.Fatalf("sign without permission: %v", err)
	}
	if !strings.Contains(err.Error(), `path "transit/sign/`+name+`" { capabilities = ["update"] }`) {
		t.Errorf("no policy snippet: %v", err)
	}
	t.Logf("sign: %v", err)

	// Creating needs update on the key path.
	_, _, err = EnsureKey(ctx, readOnly, "transit", name+"-new", KeyTypeRSA2048)
	if !errors.As(err, &pe) || pe.Capability != "update" || pe.Path != "transit/keys/"+name+"-new" {
		t.Fatalf("create without permission: %v", err)
	}
	t.Logf("create: %v", err)

	// No read on the key at all.
	nothing := clientWithToken(t, tokenWith(t, root, `path "sys/nothing" { capabilities = ["read"] }`))
	_, err = NewSigner(ctx, nothing, "transit", name, 0)
	if !errors.As(err, &pe) || pe.Capability != "read" || pe.Path != "transit/keys/"+name {
		t.Fatalf("read without permission: %v", err)
	}
	t.Logf("read: %v", err)

	// A bad token is caught at login.
	if _, err := Login(ctx, Config{Token: "not-a-token"}); err == nil || !strings.Contains(err.Error(), "rejected the token") {
		t.Fatalf("bad token: %v", err)
	}
}

func TestServerGoesAway(t *testing.T) {
	ctx := context.Background()
	root := rootClient(t)
	name := uniqueName(t)
	if _, _, err := EnsureKey(ctx, root, "transit", name, KeyTypeRSA2048); err != nil {
		t.Fatal(err)
	}
	client, err := root.Clone()
	if err != nil {
		t.Fatal(err)
	}
	client.SetToken(root.Token())
	s, err := NewSigner(ctx, client, "transit", name, 0)
	if err != nil {
		t.Fatal(err)
	}
	addr := closedAddr(t)
	if err := client.SetAddress(addr); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("down"))
	start := time.Now()
	_, err = s.Sign(nil, digest[:], crypto.SHA256)
	if err == nil || !strings.Contains(err.Error(), "cannot reach vault at "+addr) || !strings.Contains(err.Error(), "transit/keys/"+name) {
		t.Fatalf("err = %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("took %v", took)
	}
	t.Logf("server down: %v", err)
}

func TestServerOpen(t *testing.T) {
	ctx := context.Background()
	root := rootClient(t)
	name := uniqueName(t)
	cfg := Config{KeyName: name, KeyType: KeyTypeRSA2048} // address and token from the environment
	s, info, warnings, err := Open(ctx, cfg)
	if err != nil || !info.Created || len(warnings) != 0 || s.KeyVersion() != 1 || s.KeyPath() != "transit/keys/"+name {
		t.Fatalf("open: %v %+v %q", err, info, warnings)
	}
	if _, err := root.Logical().Write("transit/keys/"+name+"/rotate", nil); err != nil {
		t.Fatal(err)
	}
	cfg.KeyVersion = s.KeyVersion() // as stored in state
	again, info, warnings, err := Open(ctx, cfg)
	if err != nil || info.Created || info.LatestVersion != 2 || again.KeyVersion() != 1 || !again.Public().(*rsa.PublicKey).Equal(s.Public()) {
		t.Fatalf("reopen: %v %+v %q", err, info, warnings)
	}
}

// Benchmarks: one Sign through Transit on loopback (`make vault-bench`).

func benchSigner(b *testing.B, typ string) *Signer {
	root := rootClient(b)
	name := uniqueName(b)
	if _, _, err := EnsureKey(context.Background(), root, "transit", name, typ); err != nil {
		b.Fatal(err)
	}
	s, err := NewSigner(context.Background(), root, "transit", name, 0)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func BenchmarkTransitSignPKCS1v15(b *testing.B) {
	s := benchSigner(b, KeyTypeRSA2048)
	digest := sha256.Sum256([]byte("tbs"))
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Sign(nil, digest[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTransitSignPSS(b *testing.B) {
	s := benchSigner(b, KeyTypeRSA2048)
	digest := sha256.Sum256([]byte("file"))
	opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256}
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Sign(nil, digest[:], opts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTransitSignPSSBatch16(b *testing.B) {
	s := benchSigner(b, KeyTypeRSA2048)
	digests := make([][]byte, 16)
	for i := range digests {
		d := sha256.Sum256([]byte(fmt.Sprint(i)))
		digests[i] = d[:]
	}
	opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256}
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.SignDigests(context.Background(), digests, opts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/16, "ns/signature")
}

func BenchmarkTransitSignPKCS1v15RSA4096(b *testing.B) {
	s := benchSigner(b, KeyTypeRSA4096)
	digest := sha256.Sum256([]byte("tbs"))
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Sign(nil, digest[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLocalSignPKCS1v15 is the in-process baseline (local key, as the
// embedded CA does) for comparison.
func BenchmarkLocalSignPKCS1v15(b *testing.B) {
	key := testKeys(b)[0]
	digest := sha256.Sum256([]byte("tbs"))
	b.ResetTimer()
	for b.Loop() {
		if _, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}
