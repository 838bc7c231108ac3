package kbs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/attest/simulated"
	"github.com/flarekit/terraform-provider-flare/kbs"
	"github.com/flarekit/terraform-provider-flare/kbs/client"
	"github.com/flarekit/terraform-provider-flare/kbs/kbstest"
	"github.com/flarekit/terraform-provider-flare/kbs/rcar"
)

var (
	measA = bytes.Repeat([]byte{0xaa}, 48)
	measB = bytes.Repeat([]byte{0xbb}, 48)
	pathA = kbs.ResourcePath{Repo: "default", Type: "flare-root", Tag: "kit-a"}
	pathB = kbs.ResourcePath{Repo: "default", Type: "flare-root", Tag: "kit-b"}
)

func hexOf(b []byte) string {
	const d = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, d[c>>4], d[c&15])
	}
	return string(out)
}

// testKey is one RSA key for the manual protocol steps (keygen is slow).
var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// devices are cached per option set (the fake AMD chain costs ~30 ms).
var (
	devMu sync.Mutex
	devs  = map[string]*simulated.Device{}
)

func device(t testing.TB, meas []byte, policy uint64) *simulated.Device {
	t.Helper()
	devMu.Lock()
	defer devMu.Unlock()
	k := hexOf(meas) + "/" + string(rune(policy>>16))
	if d, ok := devs[k]; ok {
		return d
	}
	d, err := simulated.New(simulated.Options{Measurement: meas, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	devs[k] = d
	return d
}

// setup: a simulated broker with kit A's and kit B's keys and policies.
func setup(t testing.TB, o kbs.Options) *kbstest.KBS {
	t.Helper()
	k := kbstest.Start(t, o)
	ctx := context.Background()
	for _, x := range []struct {
		p    kbs.ResourcePath
		meas []byte
		sec  string
	}{{pathA, measA, "secret-of-kit-a"}, {pathB, measB, "secret-of-kit-b"}} {
		if err := k.Store.PutSecret(ctx, x.p, []byte(x.sec)); err != nil {
			t.Fatal(err)
		}
		if err := k.Store.PutPolicy(ctx, x.p, kbs.Policy{Measurements: []string{hexOf(x.meas)}}); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

func get(t testing.TB, k *kbstest.KBS, qp client.QuoteProvider, path string) ([]byte, error) {
	t.Helper()
	return client.GetResource(context.Background(), client.Options{URL: k.URL, RootCAs: k.CAPool, QuoteProvider: qp, Path: path, KeyBits: 2048})
}

func wantKBSError(t *testing.T, err error, step string, status int, typ string) {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) || e.Step != step || e.Status != status || e.Type != typ {
		t.Fatalf("got %v, want %s HTTP %d %s", err, step, status, typ)
	}
}

func TestProtocolRelease(t *testing.T) {
	k := setup(t, kbs.Options{Simulated: true})
	start := time.Now()
	got, err := client.GetResource(context.Background(), client.Options{
		URL: k.URL, RootCAs: k.CAPool, QuoteProvider: device(t, measA, 0).QuoteProvider(), Path: pathA.String(),
	})
	t.Logf("GetResource with RSA-3072: %s", time.Since(start))
	if err != nil || string(got) != "secret-of-kit-a" {
		t.Fatalf("release: %q %v", got, err)
	}
	if n := k.Server.Releases("simulated"); n != 1 {
		t.Fatalf("simulated releases %d", n)
	}
	if k.Server.Releases("sev-snp") != 0 {
		t.Fatal("a simulated release counted as sev-snp")
	}
	logs := k.Logs()
	if !strings.Contains(logs, "released to a SIMULATED guest") || !strings.Contains(logs, `"mode":"simulated"`) {
		t.Fatalf("release not logged as simulated:\n%s", logs)
	}
	if strings.Contains(logs, "secret-of-kit-a") {
		t.Fatal("the secret is in the logs")
	}
	// metrics
	resp, err := k.Client().Get(k.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`flare_kbs_releases_total{mode="simulated"} 1`, `flare_kbs_attestations_total{result="ok",mode="simulated"} 1`, `flare_kbs_requests_total{endpoint="auth",code="200"} 1`} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %s:\n%s", want, m)
		}
	}
	for _, p := range []string{"/healthz", "/openapi.yaml"} {
		resp, err := k.Client().Get(k.URL + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", p, err, resp)
		}
		resp.Body.Close()
	}
}

func TestProtocolRefusals(t *testing.T) {
	k := setup(t, kbs.Options{Simulated: true})
	t.Run("wrong measurement", func(t *testing.T) {
		_, err := get(t, k, device(t, bytes.Repeat([]byte{0xcc}, 48), 0).QuoteProvider(), pathA.String())
		wantKBSError(t, err, "resource", 401, "PolicyDeny")
	})
	t.Run("other kit's path", func(t *testing.T) {
		// A valid attestation of kit B cannot fetch kit A's key.
		_, err := get(t, k, device(t, measB, 0).QuoteProvider(), pathA.String())
		wantKBSError(t, err, "resource", 401, "PolicyDeny")
		got, err := get(t, k, device(t, measB, 0).QuoteProvider(), pathB.String())
		if err != nil || string(got) != "secret-of-kit-b" {
			t.Fatalf("kit B's own key: %q %v", got, err)
		}
	})
	t.Run("debug policy", func(t *testing.T) {
		_, err := get(t, k, device(t, measA, 0xb0000).QuoteProvider(), pathA.String())
		wantKBSError(t, err, "attest", 401, "AttestationError")
	})
	t.Run("no policy record", func(t *testing.T) {
		_, err := get(t, k, device(t, measA, 0).QuoteProvider(), "default/flare-root/kit-unknown")
		wantKBSError(t, err, "resource", 401, "PolicyDeny")
	})
	t.Run("policy but no secret", func(t *testing.T) {
		p := kbs.ResourcePath{Repo: "default", Type: "flare-root", Tag: "kit-nosecret"}
		if err := k.Store.PutPolicy(context.Background(), p, kbs.Policy{Measurements: []string{hexOf(measA)}}); err != nil {
			t.Fatal(err)
		}
		_, err := get(t, k, device(t, measA, 0).QuoteProvider(), p.String())
		wantKBSError(t, err, "resource", 401, "PluginInternalError")
	})
	t.Run("invalid path", func(t *testing.T) {
		for _, p := range []string{"default/flare-root/..", "default/flare-root/%2e%2e", "default/a%2Fb/c", "default/flare-root/.hidden"} {
			resp, err := k.Client().Get(k.URL + "/kbs/v0/resource/" + p)
			if err != nil {
				t.Fatal(err)
			}
			info := problem(t, resp)
			if resp.StatusCode != 404 || info.Type != rcar.ErrorTypePrefix+"InvalidRequestPath" {
				t.Errorf("%s: %d %+v", p, resp.StatusCode, info)
			}
		}
		resp, _ := k.Client().Get(k.URL + "/kbs/v0/resource/a/b")
		if resp.StatusCode != 404 {
			t.Errorf("two-part path: %d", resp.StatusCode)
		}
		resp.Body.Close()
	})
	t.Run("no token", func(t *testing.T) {
		resp, err := k.Client().Get(k.URL + "/kbs/v0/resource/" + pathA.String())
		if err != nil {
			t.Fatal(err)
		}
		if info := problem(t, resp); resp.StatusCode != 401 || !strings.HasSuffix(info.Type, "/TokenNotFound") {
			t.Fatalf("%d %+v", resp.StatusCode, info)
		}
	})
	if strings.Contains(k.Logs(), "secret-of-kit") {
		t.Fatal("a secret is in the logs")
	}
}

func TestSimulatedRefusedWithoutSimulatedMode(t *testing.T) {
	k := setup(t, kbs.Options{Simulated: false})
	_, err := get(t, k, device(t, measA, 0).QuoteProvider(), pathA.String())
	wantKBSError(t, err, "attest", 401, "AttestationError")
	if !strings.Contains(err.Error(), "certificate_chain") && !strings.Contains(err.Error(), "simulated") {
		t.Fatalf("reason: %v", err)
	}
	if k.Server.Releases("sev-snp")+k.Server.Releases("simulated") != 0 {
		t.Fatal("released")
	}
}

func problem(t testing.TB, resp *http.Response) rcar.ErrorInformation {
	t.Helper()
	defer resp.Body.Close()
	var info rcar.ErrorInformation
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatalf("error body is not RFC 7807 JSON: %s", b)
	}
	return info
}

// session drives the protocol by hand.
type session struct {
	t      *testing.T
	k      *kbstest.KBS
	hc     *http.Client
	cookie *http.Cookie
	nonce  string
}

func (s *session) post(path string, body any) *http.Response {
	s.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, s.k.URL+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if s.cookie != nil {
		req.AddCookie(s.cookie)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	return resp
}

func auth(t *testing.T, k *kbstest.KBS, version, tee string) (*session, *http.Response) {
	s := &session{t: t, k: k, hc: k.Client()}
	resp := s.post("/kbs/v0/auth", map[string]any{"version": version, "tee": tee, "extra-params": map[string]any{}})
	if resp.StatusCode == 200 {
		defer resp.Body.Close()
		var ch rcar.Challenge
		if err := json.NewDecoder(resp.Body).Decode(&ch); err != nil {
			t.Fatal(err)
		}
		if string(ch.ExtraParams) != `""` {
			t.Fatalf("extra-params %s", ch.ExtraParams)
		}
		s.nonce = ch.Nonce
		for _, c := range resp.Cookies() {
			if c.Name == rcar.SessionCookie {
				s.cookie = c
			}
		}
		if s.cookie == nil {
			t.Fatal("no session cookie")
		}
	}
	return s, resp
}

func attestation(t *testing.T, dev *simulated.Device, nonce string) rcar.Attestation {
	jwk := rcar.RSAPubKey(&testKey().PublicKey)
	rd, err := rcar.ReportData(nonce, jwk, "")
	if err != nil {
		t.Fatal(err)
	}
	q, err := dev.QuoteProvider().GetRawQuote(rd)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := rcar.SNPEvidenceFromQuote(q)
	if err != nil {
		t.Fatal(err)
	}
	evJSON, _ := json.Marshal(ev)
	return rcar.Attestation{RuntimeData: rcar.RuntimeData{Nonce: nonce, TeePubKey: jwk}, TeeEvidence: rcar.CompositeEvidence{PrimaryEvidence: evJSON}}
}

func TestProtocolHandshake(t *testing.T) {
	k := setup(t, kbs.Options{Simulated: true})
	dev := device(t, measA, 0)

	t.Run("version 0.3.0", func(t *testing.T) {
		_, resp := auth(t, k, "0.3.0", "snp")
		if info := problem(t, resp); resp.StatusCode != 401 || !strings.Contains(info.Detail, "Version Mismatch") {
			t.Fatalf("%d %+v", resp.StatusCode, info)
		}
	})
	t.Run("tee sample", func(t *testing.T) {
		_, resp := auth(t, k, "0.4.0", "sample")
		if info := problem(t, resp); resp.StatusCode != 401 || !strings.Contains(info.Detail, "sample") {
			t.Fatalf("%d %+v", resp.StatusCode, info)
		}
	})
	t.Run("bad json", func(t *testing.T) {
		resp, err := k.Client().Post(k.URL+"/kbs/v0/auth", "application/json", strings.NewReader("{"))
		if err != nil {
			t.Fatal(err)
		}
		if info := problem(t, resp); resp.StatusCode != 401 || !strings.HasSuffix(info.Type, "/SerdeError") {
			t.Fatalf("%d %+v", resp.StatusCode, info)
		}
		big := strings.NewReader(`{"version":"` + strings.Repeat("x", 2<<20) + `"}`)
		resp, err = k.Client().Post(k.URL+"/kbs/v0/auth", "application/json", big)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 401 {
			t.Fatalf("oversized body: %d", resp.StatusCode)
		}
		resp.Body.Close()
	})

	t.Run("replay", func(t *testing.T) {
		s, resp := auth(t, k, "0.4.0", "snp")
		resp.Body.Close()
		att := attestation(t, dev, s.nonce)
		resp = s.post("/kbs/v0/attest", att)
		if resp.StatusCode != 200 {
			t.Fatalf("first attest: %d %+v", resp.StatusCode, problem(t, resp))
		}
		var tok rcar.AttestationToken
		json.NewDecoder(resp.Body).Decode(&tok)
		resp.Body.Close()

		// Same session again: single use.
		resp = s.post("/kbs/v0/attest", att)
		if info := problem(t, resp); resp.StatusCode != 401 || !strings.Contains(info.Detail, "single use") {
			t.Fatalf("same session: %d %+v", resp.StatusCode, info)
		}
		// A new session, the old attestation as is: nonce differs.
		s2, resp := auth(t, k, "0.4.0", "snp")
		resp.Body.Close()
		resp = s2.post("/kbs/v0/attest", att)
		if info := problem(t, resp); resp.StatusCode != 401 || !strings.Contains(info.Detail, "nonce") {
			t.Fatalf("old nonce: %d %+v", resp.StatusCode, info)
		}
		// A new session, its nonce in runtime-data, the old report (bound to
		// the old nonce).
		s3, resp := auth(t, k, "0.4.0", "snp")
		resp.Body.Close()
		old := att
		old.RuntimeData.Nonce = s3.nonce
		resp = s3.post("/kbs/v0/attest", old)
		if info := problem(t, resp); resp.StatusCode != 401 || !strings.Contains(info.Detail, "report_data") {
			t.Fatalf("old report: %d %+v", resp.StatusCode, info)
		}

		// The first session still fetches with its cookie; the JWE opens
		// with its key only.
		req, _ := http.NewRequest(http.MethodGet, k.URL+"/kbs/v0/resource/"+pathA.String(), nil)
		req.AddCookie(s.cookie)
		resp, err := s.hc.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("resource: %v %v", err, resp.Status)
		}
		var jwe rcar.Response
		json.NewDecoder(resp.Body).Decode(&jwe)
		resp.Body.Close()
		if got, err := rcar.Open(testKey(), &jwe); err != nil || string(got) != "secret-of-kit-a" {
			t.Fatalf("open: %q %v", got, err)
		}
		other, _ := rsa.GenerateKey(rand.Reader, 2048)
		if _, err := rcar.Open(other, &jwe); !errors.Is(err, rcar.ErrJWE) {
			t.Fatalf("another key opened the JWE: %v", err)
		}

		// Bearer token, without the cookie.
		req, _ = http.NewRequest(http.MethodGet, k.URL+"/kbs/v0/resource/"+pathA.String(), nil)
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		resp, err = k.Client().Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("bearer: %v %v", err, resp.Status)
		}
		resp.Body.Close()
		req.Header.Set("Authorization", "Bearer "+tok.Token[:len(tok.Token)-4]+"AAAA")
		resp, _ = k.Client().Do(req)
		if info := problem(t, resp); resp.StatusCode != 401 || !strings.HasSuffix(info.Type, "/TokenVerifierError") {
			t.Fatalf("forged token: %d %+v", resp.StatusCode, info)
		}
		// The token names kit A's measurement: not kit B's key.
		req, _ = http.NewRequest(http.MethodGet, k.URL+"/kbs/v0/resource/"+pathB.String(), nil)
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		resp, _ = k.Client().Do(req)
		if info := problem(t, resp); resp.StatusCode != 401 || !strings.HasSuffix(info.Type, "/PolicyDeny") {
			t.Fatalf("kit B with kit A's token: %d %+v", resp.StatusCode, info)
		}
	})

	t.Run("expired session", func(t *testing.T) {
		now := time.Now()
		k2 := setup(t, kbs.Options{Simulated: true, Now: func() time.Time { return now }, SessionTTL: time.Minute})
		s, resp := auth(t, k2, "0.4.0", "snp")
		resp.Body.Close()
		now = now.Add(2 * time.Minute)
		resp = s.post("/kbs/v0/attest", attestation(t, dev, s.nonce))
		if info := problem(t, resp); resp.StatusCode != 401 || !strings.Contains(info.Detail, "expired") {
			t.Fatalf("%d %+v", resp.StatusCode, info)
		}
	})
}

func TestStoreAndPolicyValidation(t *testing.T) {
	for _, p := range []string{"a/b", "a/b/c/d", "../b/c", "a/./c", "a/b/.x", "a/b/", "a/-b/c", "a/b c/d", "a/b/" + strings.Repeat("x", 129)} {
		if _, err := kbs.ParseResourcePath(p); err == nil {
			t.Errorf("path %q accepted", p)
		}
	}
	if p, err := kbs.ParseResourcePath("default/flare-root/site-1.kit_2"); err != nil || p.Tag != "site-1.kit_2" {
		t.Fatal(p, err)
	}
	for name, pol := range map[string]kbs.Policy{
		"empty":     {},
		"short":     {Measurements: []string{"abcd"}},
		"debug":     {Measurements: []string{hexOf(measA)}, AllowDebug: true},
		"host data": {Measurements: []string{hexOf(measA)}, HostData: "12"},
		"min tcb":   {Measurements: []string{hexOf(measA)}, MinTCB: "zz"},
	} {
		if _, err := pol.Normalize(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	dir := t.TempDir()
	st, err := kbs.NewDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	testStore(t, st)
}

// testStore is the Store contract, for every implementation.
func testStore(t *testing.T, st kbs.Store) {
	ctx := context.Background()
	p := kbs.ResourcePath{Repo: "default", Type: "flare-root", Tag: "store-test"}
	if _, err := st.GetSecret(ctx, p); !errors.Is(err, kbs.ErrNotFound) {
		t.Fatalf("missing secret: %v", err)
	}
	if _, err := st.GetPolicy(ctx, p); !errors.Is(err, kbs.ErrNotFound) {
		t.Fatalf("missing policy: %v", err)
	}
	for _, secret := range [][]byte{[]byte("0123abcd passphrase"), {0xff, 0x00, 0x80, 0x01}} {
		if err := st.PutSecret(ctx, p, secret); err != nil {
			t.Fatal(err)
		}
		got, err := st.GetSecret(ctx, p)
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("secret round trip: %x %v", got, err)
		}
	}
	pol := kbs.Policy{Measurements: []string{strings.ToUpper(hexOf(measA)), hexOf(measB)}, HostData: strings.Repeat("Ab", 32), MinTCB: "0x1500000000000004"}
	if err := st.PutPolicy(ctx, p, pol); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetPolicy(ctx, p)
	if err != nil || len(got.Measurements) != 2 || got.Measurements[0] != hexOf(measA) || got.HostData != strings.Repeat("ab", 32) || got.MinTCB != "0x1500000000000004" || got.AllowDebug {
		t.Fatalf("policy round trip: %+v %v", got, err)
	}
	if err := st.PutPolicy(ctx, p, kbs.Policy{Measurements: []string{hexOf(measA)}, AllowDebug: true}); err == nil {
		t.Fatal("allow_debug stored")
	}
	if err := st.PutSecret(ctx, kbs.ResourcePath{Repo: "..", Type: "x", Tag: "y"}, []byte("x")); err == nil {
		t.Fatal("'..' accepted")
	}
	if err := st.DeleteSecret(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := st.DeletePolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteSecret(ctx, p); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
	if _, err := st.GetSecret(ctx, p); !errors.Is(err, kbs.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if _, err := st.GetPolicy(ctx, p); !errors.Is(err, kbs.ErrNotFound) {
		t.Fatalf("policy after delete: %v", err)
	}
}
