package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServe builds flare-dashboard, starts `serve` on a free port of
// 127.0.0.1, logs in with the printed password, and stops it with SIGTERM.
func TestServe(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "flare-dashboard")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := exec.Command(bin).Run(); err == nil {
		t.Fatal("no subcommand accepted")
	}
	if err := exec.Command(bin, "serve").Run(); err == nil {
		t.Fatal("serve without --folder accepted")
	}
	if err := exec.Command(bin, "serve", "--folder", dir+"/x", "--cred", "a@b.c:pw").Run(); err == nil {
		t.Fatal("two-part --cred accepted")
	}
	if err := exec.Command(bin, "serve", "--folder", dir+"/x", "--key-pool", "-1").Run(); err == nil {
		t.Fatal("--key-pool -1 accepted")
	}

	cmd := exec.Command(bin, "serve", "--folder", filepath.Join(dir, "dash"), "--port", "0")
	cmd.Env = append(os.Environ(), "NVFL_CREDENTIAL=")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	defer func() {
		_ = cmd.Process.Kill()
	}()
	lines := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		done <- cmd.Wait()
	}()
	var password, addr string
	deadline := time.After(30 * time.Second)
	for addr == "" {
		select {
		case l, open := <-lines:
			if !open {
				t.Fatal("flare-dashboard exited early")
			}
			if m := regexp.MustCompile(`password (\S+) `).FindStringSubmatch(l); m != nil {
				password = m[1]
			}
			if m := regexp.MustCompile(`listening on http://(\S+)`).FindStringSubmatch(l); m != nil {
				addr = m[1]
			}
		case <-deadline:
			t.Fatal("no listening line within 30s")
		}
	}
	if password == "" || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("password %q addr %q", password, addr)
	}
	body := `{"email":"admin@nvidia.com","password":"` + password + `"}`
	resp, err := http.Post("http://"+addr+"/nvflare-dashboard/api/v1/login", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	json.NewDecoder(resp.Body).Decode(&r)
	resp.Body.Close()
	if resp.StatusCode != 200 || r["status"] != "ok" {
		t.Fatalf("login: %d %v", resp.StatusCode, r)
	}
	// The default key pool is on: its gauge and counters are in /metrics.
	resp, err = http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"flare_dashboard_key_pool_keys ", "flare_dashboard_key_pool_hits_total 0", "flare_dashboard_key_pool_misses_total 0"} {
		if !strings.Contains(string(metrics), m) {
			t.Errorf("/metrics has no %q", m)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit within 15s of SIGTERM")
	}
}
