package dashboard

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnit: flare-dashboard.service passes `systemd-analyze verify`
// with no warning (ExecStart pointed at an existing file) and runs serve
// on the state directory.
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("flare-dashboard.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart=/usr/bin/flare-dashboard serve --folder /var/lib/flare-dashboard ") {
		t.Fatal("ExecStart does not serve /var/lib/flare-dashboard")
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not on PATH (Debian package systemd)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "flare-dashboard.service")
	os.WriteFile(p, []byte(strings.ReplaceAll(string(unit), "/usr/bin/flare-dashboard", self)), 0o644)
	out, err := exec.Command(sa, "verify", p).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
