//go:build linux

package launch

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/agenttest"
)

// TestStartSandboxed starts a real QEMU the way the agent does (Start with
// -sandbox SandboxArg, no -daemonize) and checks that it runs under a
// seccomp filter in its own session, that QMP greets, and that a QEMU that
// fails early reports its own error. QEMU 7.2 (Debian 12) accepts every
// key of SandboxArg.
func TestStartSandboxed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts QEMU; not in -short")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		agenttest.SkipOrFail(t, "qemu-system-x86_64 not found: apt-get install qemu-system-x86")
	}
	dir, err := os.MkdirTemp("", "fsbx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock, pidFile := filepath.Join(dir, "qmp.sock"), filepath.Join(dir, "qemu.pid")
	args := []string{"-name", "flare-sandbox-test", "-machine", "none", "-accel", "tcg", "-nodefaults", "-display", "none",
		"-qmp", "unix:" + sock + ",server=on,wait=off", "-pidfile", pidFile, "-sandbox", SandboxArg}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pid, err := Start(ctx, qemu, args, pidFile)
	if err != nil {
		t.Fatalf("QEMU with -sandbox %s: %v", SandboxArg, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "\nSeccomp:\t2\n") {
		t.Errorf("QEMU pid %d runs without a seccomp filter (want Seccomp: 2):\n%s", pid, status)
	}
	if sid, err := getsid(pid); err != nil || sid != pid {
		t.Errorf("QEMU is not a session leader: sid %d, %v", sid, err)
	}
	if !Alive(pid, sock) {
		t.Errorf("Alive(%d) is false for the running QEMU", pid)
	}
	// The agent's own QMP connection after Start's probe connection.
	if !qmpGreets(sock) {
		t.Error("QMP does not greet a second connection")
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !WaitExit(ctx, pid, sock, 10*time.Second) {
		t.Error("QEMU did not end on SIGTERM")
	}

	// An early failure carries QEMU's message, from qemu.log.
	bad := append(append([]string(nil), args...), "-drive", "if=none,id=d0,file="+filepath.Join(dir, "missing.qcow2")+",format=qcow2")
	if _, err := Start(ctx, qemu, bad, pidFile); err == nil || !strings.Contains(err.Error(), "missing.qcow2") {
		t.Errorf("a QEMU that cannot open its drive: err %v, want QEMU's message naming the file", err)
	}

	// -daemonize and spawn=deny do not mix (QEMU dies of SIGSYS forking):
	// the reason Start detaches QEMU itself.
	os.Remove(sock)
	out, err := exec.CommandContext(ctx, qemu, append(args, "-daemonize")...).CombinedOutput()
	if err == nil {
		if p, err := ReadPIDFile(pidFile); err == nil {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		t.Logf("note: this QEMU daemonizes under -sandbox %s (%s)", SandboxArg, out)
	}
}

func getsid(pid int) (int, error) {
	r, _, e := syscall.RawSyscall(syscall.SYS_GETSID, uintptr(pid), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
