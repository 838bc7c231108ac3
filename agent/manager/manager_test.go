package manager

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/config"
	"github.com/flarekit/terraform-provider-flare/agent/launch"
)

func writeState(t *testing.T, stateDir string, r record) {
	t.Helper()
	dir := filepath.Join(stateDir, "cvms", r.CVM.ID)
	os.MkdirAll(dir, 0o700)
	r.QMPSocket = filepath.Join(dir, "qmp.sock")
	r.PIDFile = filepath.Join(dir, "qemu.pid")
	b, _ := json.Marshal(r)
	if err := os.WriteFile(filepath.Join(dir, "state.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRecoverDeadQEMU: CVMs whose QEMU ended while the agent was down get
// the restart policy; a stop in progress completes.
func TestRecoverDeadQEMU(t *testing.T) {
	for _, tc := range []struct {
		policy    string
		rec       record
		wantState string
		restarts  int
	}{
		{config.RestartNever, record{CVM: api.CVM{ID: "a-1", State: api.StateRunning, PID: 999999}}, api.StateCrashed, 0},
		{config.RestartOnFailure, record{CVM: api.CVM{ID: "a-2", State: api.StateRunning, PID: 999999}, QEMU: "/bin/false", Args: []string{"-x"}}, api.StateFailed, 1},
		{config.RestartOnFailure, record{CVM: api.CVM{ID: "a-3", State: api.StateRunning, PID: 999999, Restarts: 3}}, api.StateCrashed, 3},
		{config.RestartOnFailure, record{CVM: api.CVM{ID: "a-4", State: api.StateStopping, PID: 999999}, StopRequested: true}, api.StateStopped, 0},
		{config.RestartNever, record{CVM: api.CVM{ID: "a-5", State: api.StateRunning, PID: 999999}, ShutdownReason: "guest-shutdown"}, api.StateStopped, 0},
		{config.RestartNever, record{CVM: api.CVM{ID: "a-6", State: api.StateStopped}}, api.StateStopped, 0},
	} {
		t.Run(tc.rec.CVM.ID, func(t *testing.T) {
			dir := t.TempDir()
			cfg := &config.Config{StateDir: dir, Mode: api.ModeSimulated, Restart: config.Restart{Policy: tc.policy, MaxRestarts: 3}}
			writeState(t, dir, tc.rec)
			m := New(cfg, &launch.Host{QEMU: "/bin/false"}, AttestVerifier{}, testLogger(t), nil)
			if err := m.Recover(context.Background()); err != nil {
				t.Fatal(err)
			}
			var got api.CVM
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				got, _ = m.Get(tc.rec.CVM.ID)
				if got.State == tc.wantState {
					break
				}
			}
			m.Close()
			if got.State != tc.wantState || got.Restarts != tc.restarts {
				t.Fatalf("state %s restarts %d (%s), want %s, %d", got.State, got.Restarts, got.LastError, tc.wantState, tc.restarts)
			}
			// The outcome is on disk.
			b, _ := os.ReadFile(filepath.Join(dir, "cvms", tc.rec.CVM.ID, "state.json"))
			var r record
			json.Unmarshal(b, &r)
			if r.CVM.State != tc.wantState {
				t.Fatalf("state.json says %s", r.CVM.State)
			}
			t.Logf("%s: %s", got.State, got.LastError)
		})
	}
}

func TestStopNotRunning(t *testing.T) {
	dir := t.TempDir()
	cfg := &config.Config{StateDir: dir, Mode: api.ModeSimulated, Restart: config.Restart{Policy: config.RestartNever}}
	writeState(t, dir, record{CVM: api.CVM{ID: "b-1", State: api.StateStopped}})
	m := New(cfg, &launch.Host{}, AttestVerifier{}, testLogger(t), nil)
	if err := m.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := m.Stop(context.Background(), "b-1")
	if err != nil || got.State != api.StateStopped {
		t.Fatalf("%+v %v", got, err)
	}
	if _, err := m.Stop(context.Background(), "nope"); err == nil {
		t.Fatal("unknown CVM stopped")
	}
}

// TestSNPUnavailable: mode snp on a host without SEV-SNP refuses launches
// and says why.
func TestSNPUnavailable(t *testing.T) {
	h := &launch.Host{QEMU: "/usr/bin/qemu-system-x86_64", QEMUVersionText: "7.2.22",
		SNP: api.SNPSupport{Reasons: []string{"QEMU 7.2.22 (/usr/bin/qemu-system-x86_64) has no sev-snp-guest object: SEV-SNP needs QEMU 9.1 or newer", "/dev/sev is missing"}}}
	m := New(&config.Config{StateDir: t.TempDir(), Mode: api.ModeSNP}, h, AttestVerifier{}, testLogger(t), nil)
	if mode, err := m.Mode(); mode != "" || err == nil {
		t.Fatalf("mode %q err %v", mode, err)
	}
	_, err := m.Launch(context.Background(), t.TempDir(), "admin", false, false)
	if err == nil || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "QEMU 9.1") || !strings.Contains(err.Error(), "/dev/sev") {
		t.Fatalf("launch: %v", err)
	}
	t.Log(err)
}
