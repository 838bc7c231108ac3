package launch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Start runs QEMU with args (which include -daemonize and -pidfile). QEMU
// sets up the machine, opens its sockets and then forks into the
// background, so when Start returns without error QMP is listening. It
// returns the daemon's pid from the pid file.
func Start(ctx context.Context, qemu string, args []string, pidFile string) (int, error) {
	_ = os.Remove(pidFile)
	cmd := exec.CommandContext(ctx, qemu, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	// A new session: the daemon must not get the agent's signals (a ^C of
	// a foreground agent, systemd stopping the agent's unit with
	// KillMode=process).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("QEMU failed to start: %v: %s", err, trimOut(stderr.Bytes()))
	}
	pid, err := ReadPIDFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("QEMU started but its pid file: %w", err)
	}
	return pid, nil
}

// ReadPIDFile reads QEMU's -pidfile.
func ReadPIDFile(p string) (int, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("%s holds %q, not a pid", p, strings.TrimSpace(string(b)))
	}
	return pid, nil
}

// Alive reports whether pid is a live (not zombie) process whose command
// line contains marker (the CVM's QMP socket path), so a recycled pid is
// not mistaken for the CVM's QEMU.
func Alive(pid int, marker string) bool {
	if pid <= 1 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err == nil {
		// pid (comm) S ...: the state follows the last ')'.
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
			if s := stat[i+2]; s == 'Z' || s == 'X' {
				return false
			}
		}
	}
	if marker == "" {
		return true
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return errors.Is(err, os.ErrPermission)
	}
	return bytes.Contains(cmdline, []byte(marker))
}

// WaitExit polls until pid is gone or timeout passes; it reports whether
// the process ended.
func WaitExit(ctx context.Context, pid int, marker string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if !Alive(pid, marker) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return !Alive(pid, marker)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Kill sends SIGKILL to pid if it is still the CVM's QEMU.
func Kill(pid int, marker string) error {
	if !Alive(pid, marker) {
		return nil
	}
	return syscall.Kill(pid, syscall.SIGKILL)
}
