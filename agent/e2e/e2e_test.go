// Package e2e_test runs flare-agent for real: it builds a busybox guest
// (Debian cloud kernel, an initramfs with the static `flare-agent guest
// --simulated` responder), a CVM kit with internal/cvm.Build, starts
// `flare-agent serve` on 127.0.0.1 with certificates from a test CA, and
// drives it through agent/client: launch, attest, kill -9 and re-attach,
// crash and restart, upload, stop.
package e2e_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/agenttest"
	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/client"
	"github.com/flarekit/terraform-provider-flare/internal/cvm"
	"github.com/flarekit/terraform-provider-flare/internal/kit"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

func TestAgentEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a QEMU guest (about a minute); not in -short")
	}
	tStart := time.Now()
	e := newEnv(t, "20s")
	base, bin, p, res := e.base, e.bin, e.p, e.res
	measurement, hostData, url, statusPort, cfgPath, logFile, adminTLS := e.measurement, e.hostData, e.url, e.statusPort, e.cfgPath, e.logFile, e.adminTLS
	agent := e.agent
	t.Logf("setup (agent build, guest initramfs, CVM kit %s, agent start) took %s", res.ID, time.Since(tStart).Round(time.Millisecond))
	orgAdminKit := p.kit(t, "orgadmin", "client", pki.Subject{CommonName: "oa@org-a.example", Organization: "org-a", Role: "org_admin"})
	otherOrgAdmin := p.kit(t, "otheradmin", "client", pki.Subject{CommonName: "oa@org-b.example", Organization: "org-b", Role: "org_admin"})
	memberKit := p.kit(t, "member", "client", pki.Subject{CommonName: "m@org-a.example", Organization: "org-a", Role: "member"})

	admin := client.New(url, adminTLS)
	ctx := ctxT(t, 10*time.Minute)

	h, err := admin.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.EffectiveMode != api.ModeSimulated || h.Site != "site-1" || h.Org != "org-a" {
		t.Fatalf("health %+v", h)
	}
	if !h.SNP.Available {
		t.Logf("SEV-SNP unavailable, as expected here: %s", strings.Join(h.SNP.Reasons, "; "))
		if !strings.Contains(strings.Join(h.SNP.Reasons, " "), "9.1") && strings.HasPrefix(h.QEMUVersion, "7.") {
			t.Errorf("reasons do not name the QEMU 9.1 requirement: %v", h.SNP.Reasons)
		}
	}

	// The agent never serves with a participant's startup kit: the old
	// kit_dir and a startup kit given as agent_kit_dir are refused with
	// how to get an agent kit.
	for name, line := range map[string]string{"kit_dir": "kit_dir: " + e.siteKit, "agent_kit_dir": "agent_kit_dir: " + e.siteKit} {
		bad := filepath.Join(base, "bad-"+name+".yaml")
		cfgText := fmt.Sprintf("listen: 127.0.0.1:%d\nstate_dir: %s\n%s\nmode: simulated\n", agenttest.FreePort(t), filepath.Join(base, "bad-state"), line)
		if err := os.WriteFile(bad, []byte(cfgText), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "serve", "--config", bad).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "flare_agent_identity") || !strings.Contains(string(out), "participant's startup kit") {
			t.Errorf("serve with the site's startup kit as %s: %v\n%s", name, err, out)
		}
	}

	// Authorization: members and another org's admin may neither list
	// CVMs nor launch (they may attest, below).
	for name, kitDir := range map[string]string{"member": memberKit, "org_admin of org-b": otherOrgAdmin} {
		c, err := client.FromKit(url, kitDir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.List(ctx); client.StatusCode(err) != http.StatusForbidden {
			t.Errorf("%s list: %v, want 403", name, err)
		}
		_, err = c.Launch(ctx, res.Dir)
		if client.StatusCode(err) != http.StatusForbidden {
			t.Errorf("%s launch: got %v, want 403", name, err)
		} else {
			t.Logf("%s launch refused: %v", name, err)
		}
	}
	// A certificate from another CA does not get in at all.
	foreign := newPKI(t, filepath.Join(base, "foreign"))
	foreignKit := foreign.kit(t, "intruder", "client", pki.Subject{CommonName: "x", Organization: "org-a", Role: "project_admin"})
	fc, err := client.FromKit(url, foreignKit)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fc.List(ctx); err == nil {
		t.Error("a certificate from another CA was accepted")
	}

	// Launch (as org_admin of the site's org) and wait for the responder.
	orgAdmin, err := client.FromKit(url, orgAdminKit)
	if err != nil {
		t.Fatal(err)
	}
	tLaunch := time.Now()
	c1, err := orgAdmin.Launch(ctx, res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	launchRT := time.Since(tLaunch)
	if c1.State != api.StateRunning || c1.Mode != api.ModeSimulated || c1.PID == 0 || c1.Launch == nil {
		t.Fatalf("launched CVM %+v", c1)
	}
	t.Logf("launch: HTTP round trip %s; agent: verify %.1f ms, QEMU start %.1f ms, QMP %.1f ms, total %.1f ms (agent overhead beyond QEMU %.1f ms)",
		launchRT.Round(time.Microsecond), c1.Launch.VerifyMillis, c1.Launch.QEMUMillis, c1.Launch.QMPMillis, c1.Launch.TotalMillis,
		c1.Launch.TotalMillis-c1.Launch.QEMUMillis)
	if _, err := admin.Launch(ctx, res.Dir); client.StatusCode(err) != http.StatusConflict {
		t.Errorf("second launch of a running kit: %v, want 409", err)
	}
	ready := waitReady(t, ctx, admin, c1.ID, 3*time.Minute)
	t.Logf("guest responder ready %s after launch", time.Since(tLaunch).Round(time.Millisecond))
	if ready.PID != c1.PID {
		t.Fatalf("QEMU pid changed from %d to %d before any crash", c1.PID, ready.PID)
	}

	// Attestation.
	v := attestOK(t, ctx, admin, c1.ID, measurement, hostData)
	t.Logf("attestation: fetch %.1f ms, verify %.1f ms; measurement %s, chip %s…", v.FetchMillis, v.VerifyMillis, v.Measurement, v.ChipID[:16])
	var fetch, verify []float64
	for i := 0; i < 5; i++ {
		v := attestOK(t, ctx, admin, c1.ID, measurement, hostData)
		fetch, verify = append(fetch, v.FetchMillis), append(verify, v.VerifyMillis)
	}
	t.Logf("attestation x5: fetch ms %v, verify ms %v", fetch, verify)
	// A member may read attestations.
	member, _ := client.FromKit(url, memberKit)
	if _, err := member.Attest(ctx, c1.ID, randBytes(32)); err != nil {
		t.Errorf("member attestation: %v", err)
	}
	if _, err := member.Logs(ctx, c1.ID, 10); client.StatusCode(err) != http.StatusForbidden {
		t.Errorf("member console log: %v, want 403", err)
	}
	if v, err := member.Get(ctx, c1.ID); err != nil || v.KitID != c1.KitID || v.KitDir != "" || v.LaunchedBy != "" {
		t.Errorf("member get: %+v %v, want the attestation-related status only", v, err)
	}
	if _, err := admin.Attest(ctx, c1.ID, []byte("short")); client.StatusCode(err) != http.StatusBadRequest {
		t.Errorf("short nonce: %v, want 400", err)
	}
	if _, err := admin.Attest(ctx, "nope-123456", randBytes(32)); !client.IsNotFound(err) {
		t.Errorf("unknown CVM: %v, want 404", err)
	}
	logs, err := admin.Logs(ctx, c1.ID, 50)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(logs.Lines, "\n"), "serving attestation requests") {
		t.Errorf("console log tail lacks the responder's line:\n%s", strings.Join(logs.Lines, "\n"))
	}

	// Status page (plain HTTP on loopback) in headless Chromium.
	t.Run("status page in chromium", func(t *testing.T) {
		dom := chromiumDOM(t, fmt.Sprintf("http://127.0.0.1:%d/", statusPort))
		for _, want := range []string{c1.ID, "simulated", "site-1", "responder up", "verified"} {
			if !strings.Contains(dom, want) {
				t.Errorf("status page lacks %q", want)
			}
		}
	})
	// Metrics.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: adminTLS.Clone()}}
	resp, err := hc.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`flare_agent_launches_total{mode="simulated",result="ok"} 1`, `flare_agent_cvms{mode="simulated",state="running"} 1`, "flare_agent_attestation_seconds_bucket"} {
		if !bytes.Contains(mb, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}
	resp, err = hc.Get(url + "/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ob, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(ob, []byte("/v1/cvms/{id}/attestation")) {
		t.Error("openapi.yaml not served")
	}

	// kill -9 the agent: QEMU lives on; a new agent re-attaches.
	agent.Kill9()
	if !agenttest.Alive(c1.PID) {
		t.Fatal("QEMU died with the agent")
	}
	time.Sleep(300 * time.Millisecond)
	tRe := time.Now()
	agent = agenttest.StartAgent(t, bin, cfgPath, logFile, url+"/healthz", adminTLS)
	t.Cleanup(agent.Term)
	t.Logf("agent restarted and healthy in %s", time.Since(tRe).Round(time.Millisecond))
	after, err := admin.Get(ctx, c1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.State != api.StateRunning || after.PID != c1.PID || !after.GuestReady || after.QEMUStatus != "running" {
		t.Fatalf("after re-attach: %+v (want running, pid %d, guest ready)", after, c1.PID)
	}
	if l, _ := admin.List(ctx); len(l) != 1 {
		t.Fatalf("after re-attach the agent lists %d CVMs, want 1", len(l))
	}
	attestOK(t, ctx, admin, c1.ID, measurement, hostData)
	t.Logf("re-attached to QEMU pid %d; attestation verified", after.PID)

	// Crash: kill QEMU behind the agent's back; on-failure relaunches it.
	if err := syscall.Kill(c1.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	tCrash := time.Now()
	var restarted *api.CVM
	for time.Since(tCrash) < time.Minute {
		c, err := admin.Get(ctx, c1.ID)
		if err == nil && c.Restarts == 1 && c.PID != 0 && c.PID != c1.PID && c.State == api.StateRunning {
			restarted = c
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if restarted == nil {
		c, _ := admin.Get(ctx, c1.ID)
		t.Fatalf("QEMU was not restarted after a crash: %+v", c)
	}
	t.Logf("crash detected and QEMU relaunched (pid %d → %d) in %s; last error %q", c1.PID, restarted.PID,
		time.Since(tCrash).Round(time.Millisecond), restarted.LastError)
	waitReady(t, ctx, admin, c1.ID, 3*time.Minute)
	attestOK(t, ctx, admin, c1.ID, measurement, hostData)

	// Clean stop: system_powerdown; the guest powers off (power button).
	tStop := time.Now()
	st, err := orgAdmin.Stop(ctx, c1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != api.StateStopped {
		t.Fatalf("after stop: %+v", st)
	}
	t.Logf("stopped in %s", time.Since(tStop).Round(time.Millisecond))
	if pids := agenttest.QEMUPIDs(base); len(pids) != 0 {
		t.Fatalf("QEMU processes left after stop: %v", pids)
	}
	if _, err := admin.Attest(ctx, c1.ID, randBytes(32)); client.StatusCode(err) != http.StatusServiceUnavailable {
		t.Errorf("attesting a stopped CVM: %v, want 503", err)
	}

	// Upload: a tampered archive is refused; the real one launches.
	tgz, err := os.ReadFile(res.Archive)
	if err != nil {
		t.Fatal(err)
	}
	flipLast := func(b []byte) []byte { b[len(b)-1] ^= 1; return b }
	moreMemory := func(b []byte) []byte {
		return bytes.Replace(b, []byte(`"memory_mib": 512`), []byte(`"memory_mib": 4096`), 1)
	}
	foreignSigned := func(b []byte) []byte {
		var files []kit.File
		for _, f := range cvm.SignedFiles {
			data, err := os.ReadFile(filepath.Join(res.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, kit.File{Path: f, Data: data})
		}
		sigs, err := kit.SignFolder(files, foreign.ca.Signer)
		if err != nil {
			t.Fatal(err)
		}
		return sigs
	}
	for _, bad := range []struct {
		what, file string
		change     func([]byte) []byte
		want       string
	}{
		{"initrd changed", "initrd.img", flipLast, "initrd.img has SHA-256"},
		{"launch.json changed", "launch.json", moreMemory, "launch.json: signature does not verify"},
		{"signed by another project", kit.SignatureFile, foreignSigned, "not signed by project"},
	} {
		_, err := admin.Upload(ctx, bytes.NewReader(tamperArchive(t, tgz, bad.file, bad.change)))
		if client.StatusCode(err) != http.StatusBadRequest || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("upload, %s: %v, want 400 naming %q", bad.what, err, bad.want)
		} else {
			t.Logf("upload, %s: refused: %v", bad.what, err)
		}
	}
	if _, err := member.Upload(ctx, bytes.NewReader(tgz)); client.StatusCode(err) != http.StatusForbidden {
		t.Errorf("member upload: %v, want 403", err)
	}
	tUp := time.Now()
	c2, err := admin.Upload(ctx, bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("upload of %d KiB verified and launched in %s (kit files verified in %.1f ms)", len(tgz)>>10, time.Since(tUp).Round(time.Millisecond), c2.Launch.VerifyMillis)
	waitReady(t, ctx, admin, c2.ID, 3*time.Minute)
	attestOK(t, ctx, admin, c2.ID, measurement, hostData)
	if _, err := admin.Stop(ctx, c2.ID); err != nil {
		t.Fatal(err)
	}
	if pids := agenttest.QEMUPIDs(base); len(pids) != 0 {
		t.Fatalf("QEMU processes left after the second stop: %v", pids)
	}
	t.Logf("end-to-end total %s", time.Since(tStart).Round(time.Millisecond))
}

func waitReady(t *testing.T, ctx context.Context, c *client.Client, id string, d time.Duration) *api.CVM {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	v, err := c.WaitReady(wctx, id)
	if err != nil {
		logs, _ := c.Logs(ctx, id, 40)
		var l string
		if logs != nil {
			l = strings.Join(logs.Lines, "\n")
		}
		t.Fatalf("%v\nconsole:\n%s", err, l)
	}
	return v
}

func attestOK(t *testing.T, ctx context.Context, c *client.Client, id, measurement, hostData string) *api.Verdict {
	t.Helper()
	nonce := randBytes(32)
	v, err := c.Attest(ctx, id, nonce)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Verified || !v.Simulated || v.Mode != api.ModeSimulated || v.Measurement != measurement || v.HostData != hostData ||
		!bytes.Equal(v.Nonce, nonce) || len(v.Evidence) == 0 {
		t.Fatalf("verdict: verified %v simulated %v mode %s measurement %s host_data %s reasons %v",
			v.Verified, v.Simulated, v.Mode, v.Measurement, v.HostData, v.Reasons)
	}
	return v
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func randHex(n int) string { return hex.EncodeToString(randBytes(n)) }

// chromiumDOM renders url in headless Chromium and returns the DOM; it
// skips when no chromium is installed.
func chromiumDOM(t *testing.T, url string) string {
	t.Helper()
	var bin string
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		agenttest.SkipOrFail(t, "chromium is not installed (apt-get install chromium; `make agent-e2e-deps` does)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
		"--user-data-dir="+t.TempDir(), "--dump-dom", url)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, tailLines(stderr.String(), 20))
	}
	if !strings.Contains(out.String(), "<table") {
		t.Fatalf("chromium DOM has no table:\n%s", out.String())
	}
	return out.String()
}

func tailLines(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
