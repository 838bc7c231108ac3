package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/flarekit/terraform-provider-flare/agent/api"
)

func hasMsg(list []string, subs ...string) bool {
	for _, m := range list {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(m, s)
		}
		if ok {
			return true
		}
	}
	return false
}

// TestCheckRuntime: what probe reports with devices and state dirs the
// test controls.
func TestCheckRuntime(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	os.WriteFile(notDir, nil, 0o600)
	env := runtimeEnv{UID: 0, GID: 0, KVMDevice: filepath.Join(dir, "kvm"), SEVDevice: filepath.Join(dir, "sev"),
		StateDir: filepath.Join(notDir, "state"), Mode: api.ModeAuto}
	r := checkRuntime(context.Background(), env)
	if !hasMsg(r.Warnings, "running as root") {
		t.Errorf("root is not a warning: %+v", r)
	}
	if !hasMsg(r.Problems, env.KVMDevice, "missing") {
		t.Errorf("missing kvm device not a problem: %+v", r)
	}
	if !hasMsg(r.Warnings, env.SEVDevice, "missing") || hasMsg(r.Problems, env.SEVDevice) {
		t.Errorf("missing sev in mode auto must be a warning only: %+v", r)
	}
	if !hasMsg(r.Problems, "state_dir", "not writable") {
		t.Errorf("unwritable state_dir not a problem: %+v", r)
	}
	if r.Sandbox != "not checked" {
		t.Errorf("sandbox: %q", r.Sandbox)
	}

	env.Mode = api.ModeSNP
	if r := checkRuntime(context.Background(), env); !hasMsg(r.Problems, env.SEVDevice, "mode snp") {
		t.Errorf("missing sev in mode snp must be a problem: %+v", r)
	}

	// Present devices and a fresh 0700 state dir: nothing to report but
	// the group-readable state dir below.
	for _, d := range []string{env.KVMDevice, env.SEVDevice} {
		os.WriteFile(d, nil, 0o660)
	}
	env.UID, env.Mode = os.Geteuid()+1, api.ModeAuto // "not root" for the check
	env.StateDir = filepath.Join(dir, "state")
	r = checkRuntime(context.Background(), env)
	if len(r.Problems) != 0 || len(r.Warnings) != 0 {
		t.Errorf("nothing missing, yet: %+v", r)
	}
	os.Mkdir(env.StateDir, 0o755)
	if r := checkRuntime(context.Background(), env); !hasMsg(r.Warnings, "state_dir", "0755") {
		t.Errorf("a 0755 state dir is not a warning: %+v", r)
	}
	env.KitDir = filepath.Join(dir, "no-kit")
	if r := checkRuntime(context.Background(), env); !hasMsg(r.Problems, "agent kit", env.KitDir) {
		t.Errorf("an unreadable kit is not a problem: %+v", r)
	}
}

// TestProbeUnprivileged runs the built flare-agent probe as an unprivileged
// user (nobody), as the systemd unit would run the agent: without the kvm
// group and with a state dir it cannot write it names both; with the kvm
// group and its own 0700 state dir it reports nothing, and QEMU starts
// under its seccomp sandbox as that user. Needs root (to switch users),
// setpriv, /dev/kvm and QEMU; skipped otherwise.
func TestProbeUnprivileged(t *testing.T) {
	if testing.Short() {
		t.Skip("builds flare-agent and starts QEMU; not in -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run probe as another user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("no setpriv (util-linux)")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("no qemu-system-x86_64")
	}
	kvm, err := user.LookupGroup("kvm")
	if err != nil {
		t.Skip("no kvm group")
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/dev/kvm", &st); err != nil || st.Mode&0o006 != 0 {
		t.Skip("no /dev/kvm, or one everybody may open")
	}
	base, err := os.MkdirTemp("", "fprobe")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o711)
	bin := filepath.Join(base, "flare-agent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	rootOnly := filepath.Join(base, "root-only")
	os.Mkdir(rootOnly, 0o700)
	own := filepath.Join(base, "state")
	os.Mkdir(own, 0o700)
	os.Chown(own, 65534, 65534)

	run := func(groups string, stateDir string) (runtimeReport, error) {
		t.Helper()
		args := []string{"--reuid=65534", "--regid=65534", "--clear-groups"}
		if groups != "" {
			args = []string{"--reuid=65534", "--regid=65534", "--groups=" + groups}
		}
		cmd := exec.Command(setpriv, append(args, bin, "probe", "--strict", "--state-dir", stateDir)...)
		cmd.Env = append(os.Environ(), "TMPDIR="+own)
		out, err := cmd.Output()
		var res struct {
			Runtime runtimeReport `json:"runtime"`
		}
		if jerr := json.Unmarshal(out, &res); jerr != nil {
			t.Fatalf("probe output: %v\n%s", jerr, out)
		}
		return res.Runtime, err
	}

	r, err := run("", filepath.Join(rootOnly, "state"))
	if err == nil {
		t.Errorf("--strict exited 0 with problems: %+v", r)
	}
	if r.UID != 65534 || hasMsg(r.Warnings, "running as root") {
		t.Errorf("not run as nobody: %+v", r)
	}
	if !hasMsg(r.Problems, "/dev/kvm", "not in group kvm") {
		t.Errorf("missing kvm group not named: %+v", r.Problems)
	}
	if !hasMsg(r.Problems, "state_dir", "not writable") {
		t.Errorf("unwritable state dir not named: %+v", r.Problems)
	}

	r, err = run(kvm.Gid, own)
	if err != nil || len(r.Problems) != 0 {
		t.Errorf("as nobody with group kvm and its own state dir: %v, %+v", err, r)
	}
	if r.Sandbox != "ok" {
		t.Errorf("QEMU under -sandbox as nobody: %q", r.Sandbox)
	}
}
