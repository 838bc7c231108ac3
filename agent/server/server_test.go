package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/client"
	"github.com/flarekit/terraform-provider-flare/agent/config"
	"github.com/flarekit/terraform-provider-flare/agent/launch"
	"github.com/flarekit/terraform-provider-flare/agent/manager"
	"github.com/flarekit/terraform-provider-flare/internal/agentid"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

type fixture struct {
	t     *testing.T
	dir   string
	ca    pki.CA
	srv   *Server
	mgr   *manager.Manager
	https *httptest.Server
}

func writeKit(t *testing.T, ca pki.CA, dir, base string, subj pki.Subject) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(pki.LeafRequest{Subject: subj, PublicKey: &key.PublicKey, Validity: pki.ValidityFor(time.Now(), 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := filepath.Join(dir, "startup")
	os.MkdirAll(s, 0o755)
	os.WriteFile(filepath.Join(s, "rootCA.pem"), pki.CertPEM(ca.Cert), 0o644)
	os.WriteFile(filepath.Join(s, base+".crt"), pki.CertPEM(cert), 0o644)
	os.WriteFile(filepath.Join(s, base+".key"), pki.KeyPEM(key), 0o600)
	return dir
}

// writeAgentKit writes the agent kit flare_agent_identity would for site.
func writeAgentKit(t *testing.T, ca pki.CA, dir, site, org string) string {
	t.Helper()
	cert, key, err := agentid.Issue(ca, site, org, []string{"127.0.0.1"}, pki.ValidityFor(time.Now(), 1), pki.Profile{})
	if err != nil {
		t.Fatal(err)
	}
	if err := agentid.WriteKit(dir, cert, key, ca.Cert); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestLoadIdentityRefusesParticipantKits: the agent never serves with a
// participant's certificate and key, and says how to get an agent kit.
func TestLoadIdentityRefusesParticipantKits(t *testing.T) {
	ca, dir := newCA(t), t.TempDir()
	site := writeKit(t, ca, filepath.Join(dir, "site-1"), "client", pki.Subject{CommonName: "site-1", Organization: "org-a"})
	for _, d := range []string{site, filepath.Join(site, "startup")} {
		if _, err := LoadIdentity(d); err == nil || !strings.Contains(err.Error(), "participant's startup kit") || !strings.Contains(err.Error(), "flare_agent_identity") {
			t.Errorf("%s: %v", d, err)
		}
	}
	// A participant's certificate and key copied under agent kit names.
	fake := filepath.Join(dir, "fake")
	os.MkdirAll(fake, 0o755)
	for from, to := range map[string]string{"rootCA.pem": agentid.RootFile, "client.crt": agentid.CertFile, "client.key": agentid.KeyFile} {
		b, _ := os.ReadFile(filepath.Join(site, "startup", from))
		os.WriteFile(filepath.Join(fake, to), b, 0o600)
	}
	if _, err := LoadIdentity(fake); err == nil || !strings.Contains(err.Error(), `"site-1" (role ""), not an agent certificate`) {
		t.Errorf("participant certificate as agent.crt: %v", err)
	}
	// An agent kit signed by another CA than its rootCA.pem.
	other := writeAgentKit(t, newCA(t), filepath.Join(dir, "other"), "site-1", "org-a")
	os.WriteFile(filepath.Join(other, agentid.RootFile), pki.CertPEM(ca.Cert), 0o644)
	if _, err := LoadIdentity(other); err == nil || !strings.Contains(err.Error(), "not signed by its rootCA.pem") {
		t.Errorf("foreign agent kit: %v", err)
	}
	id, err := LoadIdentity(writeAgentKit(t, ca, filepath.Join(dir, "agent"), "site-1", "org-a"))
	if err != nil || id.Site != "site-1" || id.Org != "org-a" {
		t.Fatalf("agent kit: %+v %v", id, err)
	}
}

func newCA(t *testing.T) pki.CA {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRootCA(key, "p", pki.ValidityFor(time.Now(), 1), pki.Profile{})
	if err != nil {
		t.Fatal(err)
	}
	return pki.CA{Cert: root, Signer: key}
}

// newFixture serves the API over mTLS with a manager whose QEMU is
// /bin/false; setup may write state before the manager recovers it.
func newFixture(t *testing.T, setup func(stateDir string)) *fixture {
	return newFixtureWith(t, "", setup)
}

// newFixtureWith adds extra lines to agent.yaml.
func newFixtureWith(t *testing.T, extra string, setup func(stateDir string)) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), ca: newCA(t)}
	writeAgentKit(t, f.ca, filepath.Join(f.dir, "agent"), "site-1", "org-a")
	cfg, err := config.Parse([]byte("listen: 127.0.0.1:0\nstate_dir: state\nagent_kit_dir: agent\nmode: simulated\nqemu: /bin/false\n"+extra), f.dir)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(cfg.StateDir)
	}
	id, err := LoadIdentity(cfg.AgentKitDir)
	if err != nil {
		t.Fatal(err)
	}
	host := &launch.Host{QEMU: "/bin/false", QEMUVersionText: "7.2.22",
		SNP: api.SNPSupport{Reasons: []string{"QEMU 7.2.22 has no sev-snp-guest object: SEV-SNP needs QEMU 9.1 or newer"}, CBitPos: 51}}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := prometheus.NewRegistry()
	f.mgr = manager.New(cfg, host, manager.AttestVerifier{}, log, reg)
	if err := f.mgr.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.srv = New(cfg, id, f.mgr, log, reg, []byte("openapi: 3.0.3\n"))
	f.https = httptest.NewUnstartedServer(f.srv.Handler())
	f.https.TLS = id.TLSConfig()
	f.https.StartTLS()
	t.Cleanup(f.https.Close)
	return f
}

func (f *fixture) client(name string, subj pki.Subject) *client.Client {
	f.t.Helper()
	c, err := client.FromKit(f.https.URL, writeKit(f.t, f.ca, filepath.Join(f.dir, name), "client", subj))
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func TestAuthorization(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		subj   pki.Subject
		manage bool
	}{
		{"project_admin", pki.Subject{CommonName: "pa@x", Organization: "org-z", Role: "project_admin"}, true},
		{"org_admin of the site's org", pki.Subject{CommonName: "oa@a", Organization: "org-a", Role: "org_admin"}, true},
		{"org_admin of another org", pki.Subject{CommonName: "oa@b", Organization: "org-b", Role: "org_admin"}, false},
		{"lead", pki.Subject{CommonName: "lead@a", Organization: "org-a", Role: "lead"}, false},
		{"member", pki.Subject{CommonName: "m@a", Organization: "org-a", Role: "member"}, false},
		{"site certificate (no role)", pki.Subject{CommonName: "site-2", Organization: "org-a"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.client(strings.ReplaceAll(tc.name, " ", "_"), tc.subj)
			h, err := c.Health(ctx)
			if err != nil || h.EffectiveMode != api.ModeSimulated || h.Org != "org-a" || h.Site != "site-1" {
				t.Fatalf("health %+v %v", h, err)
			}
			_, err = c.Launch(ctx, "/nonexistent/kit")
			code := client.StatusCode(err)
			if tc.manage && code != http.StatusBadRequest {
				t.Errorf("launch: %v, want 400 (allowed, bad kit)", err)
			}
			if !tc.manage && code != http.StatusForbidden {
				t.Errorf("launch: %v, want 403", err)
			}
			_, err = c.Stop(ctx, "nope")
			if want := map[bool]int{true: 404, false: 403}[tc.manage]; client.StatusCode(err) != want {
				t.Errorf("stop: %v, want %d", err, want)
			}
			_, err = c.Upload(ctx, bytes.NewReader([]byte("not a tgz")))
			if want := map[bool]int{true: 400, false: 403}[tc.manage]; client.StatusCode(err) != want {
				t.Errorf("upload: %v, want %d", err, want)
			}
		})
	}
	// Another CA's admin cannot even connect.
	other := newCA(t)
	c, err := client.FromKit(f.https.URL, writeKit(t, other, filepath.Join(f.dir, "intruder"), "client",
		pki.Subject{CommonName: "pa@x", Organization: "org-a", Role: "project_admin"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.List(ctx); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}
	// A client that does not trust the agent's CA refuses it.
	ok := f.client("ok", pki.Subject{CommonName: "pa@x", Role: "project_admin"})
	if _, err := ok.Get(ctx, "nope"); !client.IsNotFound(err) {
		t.Fatalf("get unknown: %v", err)
	}
	var ce *client.Error
	_, err = ok.Get(ctx, "nope")
	if !asErr(err, &ce) || ce.Message == "" || !strings.Contains(ce.Error(), "404") {
		t.Fatalf("error %#v", err)
	}
}

func asErr(err error, target **client.Error) bool {
	e, ok := err.(*client.Error)
	if ok {
		*target = e
	}
	return ok
}

// stoppedRecord writes the state of a stopped CVM for Recover.
func writeRecord(t *testing.T, stateDir string, c api.CVM) {
	t.Helper()
	dir := filepath.Join(stateDir, "cvms", c.ID)
	os.MkdirAll(dir, 0o700)
	b, _ := json.Marshal(map[string]any{"cvm": c, "qmp_socket": filepath.Join(dir, "qmp.sock"), "console_log": filepath.Join(dir, "console.log")})
	if err := os.WriteFile(filepath.Join(dir, "state.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "console.log"), []byte("boot\r\nline 2\nserving attestation requests\n"), 0o600)
}

func TestStatusPageAndLogs(t *testing.T) {
	now := time.Now().UTC()
	f := newFixture(t, func(stateDir string) {
		writeRecord(t, stateDir, api.CVM{ID: "0a1b2c3d-aaaaaa", KitID: "0a1b2c3d", Participant: "site-1", Role: "server", Mode: api.ModeSimulated,
			Accel: "tcg", State: api.StateStopped, CreatedAt: now.Add(-time.Hour), StartedAt: &now, ExpectedMeasurement: strings.Repeat("ab", 48),
			LastVerdict: &api.Summary{Verified: true, Simulated: true, At: now}})
		writeRecord(t, stateDir, api.CVM{ID: "0a1b2c3d-bbbbbb", KitID: "0a1b2c3d", Participant: "site-1<script>", Role: "server", Mode: api.ModeSimulated,
			Accel: "tcg", State: api.StateCrashed, LastError: "QEMU exited without a stop request", CreatedAt: now})
	})
	c := f.client("reader", pki.Subject{CommonName: "lead@a", Organization: "org-a", Role: "lead"})
	ctx := context.Background()
	l, err := c.List(ctx)
	if err != nil || len(l) != 2 || l[0].ID != "0a1b2c3d-aaaaaa" {
		t.Fatalf("list %+v %v", l, err)
	}
	logs, err := c.Logs(ctx, "0a1b2c3d-aaaaaa", 2)
	if err != nil || len(logs.Lines) != 2 || logs.Lines[0] != "line 2" || !logs.Truncated {
		t.Fatalf("logs %+v %v", logs, err)
	}

	plain := httptest.NewServer(f.srv.StatusHandler())
	defer plain.Close()
	resp, err := http.Get(plain.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	resp.Body.Close()
	html := b.String()
	if strings.Contains(html, "<script>") {
		t.Fatal("status page does not escape")
	}
	for _, want := range []string{"0a1b2c3d-aaaaaa", "0a1b2c3d-bbbbbb", "simulated", "SEV-SNP is not available", "9.1"} {
		if !strings.Contains(html, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if r, _ := http.Get(plain.URL + "/v1/cvms"); r != nil && r.StatusCode != 404 {
		t.Errorf("the plain status listener serves the API: %d", r.StatusCode)
	}

	t.Run("chromium", func(t *testing.T) {
		var bin string
		for _, n := range []string{"chromium", "chromium-browser"} {
			if p, err := exec.LookPath(n); err == nil {
				bin = p
			}
		}
		if bin == "" {
			t.Skip("chromium is not installed (apt-get install chromium; `make agent-e2e` does)")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
			"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
			"--user-data-dir="+t.TempDir(), "--dump-dom", plain.URL+"/")
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("chromium: %v\n%s", err, stderr.String())
		}
		dom := out.String()
		if n := strings.Count(dom, `class="cvm"`); n != 2 {
			t.Fatalf("chromium sees %d CVM rows, want 2:\n%s", n, dom)
		}
		for _, want := range []string{"0a1b2c3d-aaaaaa", "crashed", "simulated", "verified (simulated)"} {
			if !strings.Contains(dom, want) {
				t.Errorf("rendered DOM lacks %q", want)
			}
		}
	})
}

func TestTailFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	os.WriteFile(p, []byte("a\nb\r\nc\n"), 0o644)
	if l, tr, _ := TailFile(p, 10, 1<<20); strings.Join(l, ",") != "a,b,c" || tr {
		t.Fatalf("%q %v", l, tr)
	}
	if l, tr, _ := TailFile(p, 2, 1<<20); strings.Join(l, ",") != "b,c" || !tr {
		t.Fatalf("%q %v", l, tr)
	}
	if l, tr, _ := TailFile(p, 10, 4); strings.Join(l, ",") != "c" || !tr { // reads "\r\nc\n": the partial first line is dropped
		t.Fatalf("%q %v", l, tr)
	}
}

func TestPinSite(t *testing.T) {
	f := newFixture(t, nil)
	kit := writeKit(t, f.ca, filepath.Join(f.dir, "pin"), "client", pki.Subject{CommonName: "m@a", Role: "member"})
	cfg, err := client.TLSConfigFromKit(kit)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := client.New(f.https.URL, client.PinSite(cfg, "site-1")).Health(ctx); err != nil {
		t.Fatalf("pinned to the right site: %v", err)
	}
	if _, err := client.New(f.https.URL, client.PinSite(cfg, "site-2")).Health(ctx); err == nil || !strings.Contains(err.Error(), `not the agent of site "site-2"`) {
		t.Fatalf("pinned to another site: %v", err)
	}
	// A participant's certificate (CN site-1) does not pass for site-1's agent.
	imp := httptest.NewUnstartedServer(f.srv.Handler())
	impKit := writeKit(t, f.ca, filepath.Join(f.dir, "imp"), "client", pki.Subject{CommonName: "site-1", Organization: "org-a"})
	impCert, err := tls.LoadX509KeyPair(filepath.Join(impKit, "startup", "client.crt"), filepath.Join(impKit, "startup", "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	imp.TLS = &tls.Config{Certificates: []tls.Certificate{impCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: f.srv.id.Pool}
	imp.StartTLS()
	defer imp.Close()
	if _, err := client.New(imp.URL, client.PinSite(cfg, "site-1")).Health(ctx); err == nil || !strings.Contains(err.Error(), "not a flare-agent certificate") {
		t.Fatalf("participant certificate as the agent: %v", err)
	}
}
