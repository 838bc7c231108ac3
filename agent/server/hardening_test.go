package server

// Issue 11 items 4 (least privilege on reads, status page Host check,
// JSON bodies only as application/json) and 5 (timeouts, upload limits,
// partial uploads deleted).

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/client"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// tlsOf is the client TLS configuration of a new certificate.
func (f *fixture) tlsOf(name string, subj pki.Subject) *tls.Config {
	f.t.Helper()
	cfg, err := client.TLSConfigFromKit(writeKit(f.t, f.ca, filepath.Join(f.dir, name), "client", subj))
	if err != nil {
		f.t.Fatal(err)
	}
	return cfg
}

func do(t *testing.T, hc *http.Client, method, url, ct string, body io.Reader, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReadAccess: console logs, CVM lists, a CVM's full status and
// /metrics are for project_admin and org_admin/lead of the site's org;
// every other certificate of the project gets 403 there, and may still
// fetch attestation reports and a CVM's attestation-related status.
func TestReadAccess(t *testing.T) {
	now := time.Now().UTC()
	f := newFixture(t, func(stateDir string) {
		writeRecord(t, stateDir, api.CVM{ID: "0a1b2c3d-aaaaaa", KitID: "0a1b2c3d", KitDir: "/srv/kits/site-1/cvm_0a1b2c3d", Participant: "site-1",
			Role: "server", Mode: api.ModeSimulated, Accel: "tcg", State: api.StateStopped, CreatedAt: now, LaunchedBy: "admin@org-a",
			LastError: "the guest powered itself off", ExpectedMeasurement: strings.Repeat("ab", 48)})
	})
	const id = "0a1b2c3d-aaaaaa"
	for _, tc := range []struct {
		name string
		subj pki.Subject
		read bool
	}{
		{"project_admin of another org", pki.Subject{CommonName: "pa@z", Organization: "org-z", Role: "project_admin"}, true},
		{"org_admin of the site's org", pki.Subject{CommonName: "oa@a", Organization: "org-a", Role: "org_admin"}, true},
		{"lead of the site's org", pki.Subject{CommonName: "lead@a", Organization: "org-a", Role: "lead"}, true},
		{"org_admin of another org", pki.Subject{CommonName: "oa@b", Organization: "org-b", Role: "org_admin"}, false},
		{"lead of another org", pki.Subject{CommonName: "lead@b", Organization: "org-b", Role: "lead"}, false},
		{"member of the site's org", pki.Subject{CommonName: "m@a", Organization: "org-a", Role: "member"}, false},
		{"site certificate (no role)", pki.Subject{CommonName: "site-2", Organization: "org-a"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.tlsOf(strings.ReplaceAll(tc.name, " ", "_"), tc.subj)
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
			want := map[bool]int{true: 200, false: 403}[tc.read]
			for _, path := range []string{"/v1/cvms", "/v1/cvms/" + id + "/logs", "/metrics"} {
				code, body := do(t, hc, "GET", f.https.URL+path, "", nil)
				if code != want {
					t.Errorf("GET %s: %d, want %d: %s", path, code, want, body)
				}
				if code == 403 && !strings.Contains(body, "org_admin or lead of org") {
					t.Errorf("GET %s: the 403 does not say who may: %s", path, body)
				}
				if code == 200 && path != "/metrics" && !strings.Contains(body, id) {
					t.Errorf("GET %s: %s", path, body)
				}
			}
			// Any certificate of the project: health, the CVM's
			// attestation-related status, attestation.
			c := client.New(f.https.URL, cfg)
			ctx := context.Background()
			if _, err := c.Health(ctx); err != nil {
				t.Errorf("health: %v", err)
			}
			v, err := c.Get(ctx, id)
			if err != nil || v.KitID != "0a1b2c3d" || v.Participant != "site-1" || v.ExpectedMeasurement == "" || v.State != api.StateStopped {
				t.Errorf("get: %+v %v", v, err)
			}
			if full := v.KitDir != "" || v.LaunchedBy != "" || v.LastError != ""; full != tc.read {
				t.Errorf("get: kit_dir %q, launched_by %q, last_error %q: full status %v, want %v", v.KitDir, v.LaunchedBy, v.LastError, full, tc.read)
			}
			_, err = c.Attest(ctx, id, bytes.Repeat([]byte{1}, 32))
			if client.StatusCode(err) != http.StatusServiceUnavailable {
				t.Errorf("attestation of a stopped CVM: %v, want 503 (allowed, not running)", err)
			}
		})
	}
}

// TestStatusPageHost: the status page answers only to this agent's names
// (DNS rebinding: a page whose name resolves to 127.0.0.1 must not read it).
func TestStatusPageHost(t *testing.T) {
	f := newFixture(t, nil)
	plain := httptest.NewServer(f.srv.StatusHandler())
	defer plain.Close()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(plain.URL, "http://"))
	for host, want := range map[string]int{
		"127.0.0.1:" + port:                  200,
		"localhost:" + port:                  200,
		"LOCALHOST.:" + port:                 200,
		"[::1]:" + port:                      200,
		"site-1:" + port:                     200, // the CN of the agent's certificate
		"evil.example:" + port:               403,
		"rebind.attacker.example":            403,
		"127.0.0.1.nip.io:" + port:           403,
		"site-1.evil.example:" + port:        403,
		"localhost.attacker.example:" + port: 403,
	} {
		code, body := do(t, http.DefaultClient, "GET", plain.URL+"/", "", nil, "Host", host)
		if code != want {
			t.Errorf("Host %s: %d, want %d: %.200s", host, code, want, body)
		}
		if code == 403 && !strings.Contains(body, "unknown host") {
			t.Errorf("Host %s: %s", host, body)
		}
	}
	// The same page on the mTLS listener.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: f.tlsOf("pa", pki.Subject{CommonName: "pa", Role: "project_admin"})}}
	if code, _ := do(t, hc, "GET", f.https.URL+"/", "", nil, "Host", "evil.example"); code != 403 {
		t.Errorf("mTLS status page, Host evil.example: %d, want 403", code)
	}
	if code, _ := do(t, hc, "GET", f.https.URL+"/", "", nil); code != 200 {
		t.Errorf("mTLS status page: %d, want 200", code)
	}
}

// TestJSONBodies: a browser form can send text/plain with a body that
// happens to be JSON followed by "=..." (review finding 12): JSON
// endpoints want Content-Type application/json (415) and exactly one JSON
// value (400); uploads want an archive type; browsers' cross-site
// requests are refused.
func TestJSONBodies(t *testing.T) {
	f := newFixture(t, nil)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: f.tlsOf("pa", pki.Subject{CommonName: "pa", Role: "project_admin"})}}
	u := f.https.URL
	for _, tc := range []struct {
		what, method, path, ct, body string
		hdr                          []string
		code                         int
		msg                          string
	}{
		{"form text/plain launch", "POST", "/v1/cvms", "text/plain", `{"kit_dir":"/nonexistent"}=`, nil, 415, "Content-Type: application/json"},
		{"urlencoded launch", "POST", "/v1/cvms", "application/x-www-form-urlencoded", `{"kit_dir":"/nonexistent"}`, nil, 415, "got application/x-www-form-urlencoded"},
		{"no content type", "POST", "/v1/cvms", "", `{"kit_dir":"/nonexistent"}`, nil, 415, "got none"},
		{"trailing value", "POST", "/v1/cvms", "application/json", `{"kit_dir":"/nonexistent"} {"kit_dir":"/etc"}`, nil, 400, "data after the JSON value"},
		{"trailing garbage", "POST", "/v1/cvms", "application/json", `{"kit_dir":"/nonexistent"}=`, nil, 400, "data after the JSON value"},
		{"json launch", "POST", "/v1/cvms", "application/json; charset=utf-8", "{\"kit_dir\":\"/nonexistent\"}\n", nil, 400, "kit_dir"},
		{"form text/plain attestation", "POST", "/v1/cvms/nope/attestation", "text/plain", `{"nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`, nil, 415, "application/json"},
		{"json attestation", "POST", "/v1/cvms/nope/attestation", "application/json", `{"nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`, nil, 404, `\"nope\"`},
		{"multipart upload", "POST", "/v1/cvms/upload", "multipart/form-data; boundary=x", "--x--", nil, 415, "application/gzip"},
		{"cross-site browser", "POST", "/v1/cvms", "application/json", `{"kit_dir":"/nonexistent"}`, []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}, 403, "cross-origin"},
	} {
		code, body := do(t, hc, tc.method, u+tc.path, tc.ct, strings.NewReader(tc.body), tc.hdr...)
		if code != tc.code || !strings.Contains(body, tc.msg) {
			t.Errorf("%s: %d %s, want %d naming %q", tc.what, code, strings.TrimSpace(body), tc.code, tc.msg)
		}
	}
}

// serveReal serves f's API with the server's own http.Server (timeouts
// from agent.yaml), as flare-agent serve does.
func serveReal(t *testing.T, f *fixture) string {
	t.Helper()
	hs := f.srv.HTTPServer(nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.ServeTLS(ln, "", "")
	t.Cleanup(func() { hs.Close() })
	return "https://" + ln.Addr().String()
}

// TestServerTimeouts: idle keep-alive connections, slow headers and slow
// bodies are cut off by the server (they were held forever).
func TestServerTimeouts(t *testing.T) {
	f := newFixtureWith(t, "read_header_timeout: 1s\nread_timeout: 2s\nidle_timeout: 1s\nwrite_timeout: 5s\n", nil)
	url := serveReal(t, f)
	cfg := f.tlsOf("pa", pki.Subject{CommonName: "pa", Role: "project_admin"})
	addr := strings.TrimPrefix(url, "https://")
	dial := func() *tls.Conn {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	closedWithin := func(what string, c *tls.Conn, d time.Duration) {
		t.Helper()
		t0 := time.Now()
		c.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, c)
		el := time.Since(t0)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: the server still holds the connection after %s", what, el.Round(time.Millisecond))
			return
		}
		t.Logf("%s: closed by the server after %s", what, el.Round(time.Millisecond))
	}
	// Idle after one request.
	c := dial()
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	closedWithin("idle keep-alive", c, 5*time.Second)
	// Headers that never end.
	c = dial()
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	closedWithin("slow headers", c, 5*time.Second)
	// A body that never ends.
	c = dial()
	fmt.Fprintf(c, "POST /v1/cvms/x/attestation HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"nonce\":")
	closedWithin("slow body", c, 6*time.Second)
}

// tgzKit is a gzipped tar with one file of n bytes (not a valid kit: it
// is refused after unpacking, which is all these tests need).
func tgzKit(n int) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "site-1/cvm_0a1b2c3d/root.qcow2", Mode: 0o600, Size: int64(n), Typeflag: tar.TypeReg})
	tw.Write(make([]byte, n))
	tw.Close()
	zw.Close()
	return b.Bytes()
}

func kitsLeft(t *testing.T, f *fixture) []string {
	t.Helper()
	ents, _ := os.ReadDir(f.mgr.KitsDir())
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestUploadLimits: uploads beyond max_concurrent_uploads get 429, beyond
// max_upload_bytes 413, beyond what is left of max_uploads_total_bytes
// 429; a stalled upload is cut off after upload_timeout; nothing of a
// refused, cut or abandoned upload stays on disk.
func TestUploadLimits(t *testing.T) {
	f := newFixtureWith(t, "max_upload_bytes: 1048576\nmax_uploads_total_bytes: 1572864\nmax_concurrent_uploads: 2\nupload_timeout: 2s\nread_timeout: 30s\n", nil)
	url := serveReal(t, f)
	cfg := f.tlsOf("pa", pki.Subject{CommonName: "pa", Role: "project_admin"})
	newClient := func() *http.Client { return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}} }
	post := func(hc *http.Client, body io.Reader, n int64) (int, string) {
		req, _ := http.NewRequest("POST", url+"/v1/cvms/upload", body)
		req.Header.Set("Content-Type", "application/gzip")
		req.ContentLength = n
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		var e api.Error
		json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Error
	}

	// Declared too large: refused before reading.
	if code, msg := post(newClient(), bytes.NewReader(make([]byte, 2<<20)), 2<<20); code != 413 || !strings.Contains(msg, "max_upload_bytes") {
		t.Errorf("2 MiB declared: %d %s, want 413", code, msg)
	}
	// Unpacks to more than max_upload_bytes alone.
	big := tgzKit(1100 << 10)
	if code, msg := post(newClient(), bytes.NewReader(big), int64(len(big))); code != 413 || !strings.Contains(msg, "1048576") {
		t.Errorf("unpacks to 1.1 MiB: %d %s, want 413", code, msg)
	}

	// Two slow uploads hold both slots (and 1.5 MiB of budget: the first
	// 1 MiB, the second the 0.5 MiB left).
	type slow struct {
		pw   *io.PipeWriter
		done chan [2]any
	}
	var slows []slow
	head := tgzKit(700 << 10)
	for i := 0; i < 2; i++ {
		pr, pw := io.Pipe()
		s := slow{pw, make(chan [2]any, 1)}
		go func() { code, msg := post(newClient(), pr, -1); s.done <- [2]any{code, msg} }()
		slows = append(slows, s)
		defer pw.Close()
		// The first bytes of a gzip stream: it is being unpacked.
		pw.Write(head[:10])
		for deadline := time.Now().Add(5 * time.Second); len(kitsLeft(t, f)) < i+1 && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if code, msg := post(newClient(), bytes.NewReader(head), int64(len(head))); code != 429 || !strings.Contains(msg, "max_concurrent_uploads") {
		t.Errorf("third upload: %d %s, want 429", code, msg)
	} else {
		t.Logf("third upload: 429 %s", msg)
	}
	// The second upload's 700 KiB file is more than the 512 KiB left.
	go slows[1].pw.Write(head[10:])
	r := <-slows[1].done
	if r[0] != 429 || !strings.Contains(r[1].(string), "max_uploads_total_bytes") {
		t.Errorf("second upload beyond the total: %v, want 429", r)
	} else {
		t.Logf("second upload: 429 %s", r[1])
	}
	// The first stalls: cut off after upload_timeout.
	r = <-slows[0].done
	if r[0] != http.StatusRequestTimeout && r[0] != 0 {
		t.Errorf("stalled upload: %v, want 408 or a closed connection", r)
	} else {
		t.Logf("stalled upload: %v", r)
	}
	// An upload whose client goes away mid-body.
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/cvms/upload", pr)
		req.Header.Set("Content-Type", "application/gzip")
		resp, err := newClient().Do(req)
		if err == nil {
			resp.Body.Close()
		}
	}()
	pw.Write(head[:len(head)/2])
	time.Sleep(300 * time.Millisecond)
	cancel()
	pw.Close()
	wg.Wait()
	for deadline := time.Now().Add(5 * time.Second); len(kitsLeft(t, f)) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if left := kitsLeft(t, f); len(left) > 0 {
		t.Errorf("partial uploads left in %s: %v", f.mgr.KitsDir(), left)
	}
	// The slots and the budget are free again.
	if code, msg := post(newClient(), bytes.NewReader(head), int64(len(head))); code != 400 || !strings.Contains(msg, "uploaded kit rejected") {
		t.Errorf("upload after the others: %d %s, want 400 (admitted, not a kit)", code, msg)
	}
}
