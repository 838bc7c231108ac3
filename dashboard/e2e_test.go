package dashboard

import (
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKitsStartNVFlare (opt-in: FLARE_DASHBOARD_E2E=1, `make
// dashboard-e2e`): kits downloaded from our Dashboard start a real NVFlare
// 2.9 server and client on 127.0.0.1, and the admin kit of the project
// admin logs in with NVFlare's FLARE API and sees the client.
func TestKitsStartNVFlare(t *testing.T) {
	if os.Getenv("FLARE_DASHBOARD_E2E") != "1" {
		t.Skip("set FLARE_DASHBOARD_E2E=1 (make dashboard-e2e) to start NVFlare from the Dashboard's kits")
	}
	py := nvflarePython(t)
	unzip, err := exec.LookPath("unzip")
	if err != nil {
		t.Fatal("unzip not on PATH")
	}
	cred, _ := ParseCredential("admin@nvidia.com:pw:nvidia")
	s, err := Open(t.TempDir(), &cred, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	c := client{t, ts.URL}
	api := ts.URL + "/api/v1"
	admin := c.login("admin@nvidia.com", "pw")
	port := freePort(t)
	if st, r := c.do("PATCH", "/api/v1/project", admin, map[string]any{"short_name": "e2e", "server1": "localhost",
		"server_props": map[string]any{"fed_learn_port": port}, "frozen": true}); st != 200 {
		t.Fatalf("freeze: %d %v", st, r)
	}
	if st, _ := c.do("POST", "/api/v1/clients", admin, map[string]any{"name": "site-1", "organization": "nvidia",
		"capacity": map[string]any{"num_of_gpus": 0, "mem_per_gpu_in_GiB": 0}}); st != 201 {
		t.Fatal(st)
	}
	c.do("PATCH", "/api/v1/clients/1", admin, map[string]any{"approval_state": 100})

	run := t.TempDir()
	kits := map[string]string{}
	for name, path := range map[string]string{"server": "/servers/1/blob", "client": "/clients/1/blob", "admin": "/users/1/blob"} {
		resp, b := postBlob(t, api+path, admin, "e2epin")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		zipPath := filepath.Join(run, name+".zip")
		os.WriteFile(zipPath, b, 0o600)
		kits[name] = filepath.Join(run, name)
		if out, err := exec.Command(unzip, "-q", "-P", "e2epin", zipPath, "-d", kits[name]).CombinedOutput(); err != nil {
			t.Fatalf("unzip %s: %v\n%s", name, err, out)
		}
	}
	// The server keeps jobs under /tmp/nvflare by default: give this run its
	// own storage through local/resources.json, as a site customizes a kit.
	res, err := os.ReadFile(filepath.Join(kits["server"], "local", "resources.json.default"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(kits["server"], "local", "resources.json"),
		[]byte(strings.ReplaceAll(string(res), "/tmp/nvflare/", filepath.Join(run, "storage")+"/")), 0o644)

	env := append(os.Environ(), "PATH="+filepath.Dir(py)+string(os.PathListSeparator)+os.Getenv("PATH"), "PYTHONUNBUFFERED=1")
	start := func(name string) {
		log, _ := os.Create(filepath.Join(run, name+".log"))
		cmd := exec.Command(filepath.Join(kits[name], "startup", "sub_start.sh"), "--once")
		cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = kits[name], env, log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pgid := cmd.Process.Pid
		done := make(chan struct{})
		go func() { cmd.Wait(); log.Close(); close(done) }()
		t.Cleanup(func() {
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
			}
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			if t.Failed() {
				b, _ := os.ReadFile(filepath.Join(run, name+".log"))
				t.Logf("%s log (tail):\n%s", name, tail(string(b), 3000))
			}
		})
	}
	start("server")
	time.Sleep(2 * time.Second)
	start("client")

	script := fmt.Sprintf(`
import sys, time
from nvflare.fuel.flare_api.flare_api import Session
s = Session(username="admin@nvidia.com", startup_path=%q, secure_mode=True)
try:
    s.try_connect(60)
    deadline = time.time() + 90
    while time.time() < deadline:
        names = sorted(c.name for c in s.get_system_info().client_info)
        if "site-1" in names:
            print("clients:", names)
            sys.exit(0)
        time.sleep(1)
    print("site-1 never registered; clients:", names)
    sys.exit(1)
finally:
    s.close()
`, kits["admin"])
	cmd := exec.Command(py, "-c", script)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("admin session: %v\n%s", err, tail(string(out), 3000))
	}
	t.Logf("%s", strings.TrimSpace(tail(string(out), 500)))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
