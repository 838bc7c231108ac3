package launch

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Start runs QEMU with args and returns its pid once QEMU is up (its QMP
// socket sends the greeting), or QEMU's error output if it ends first.
//
// QEMU runs under -sandbox with spawn=deny and elevateprivileges=deny
// (SandboxArg), which forbid fork and setsid: -daemonize cannot be used
// with them (QEMU 7.2 dies of SIGSYS). So the agent detaches QEMU itself:
// a new session (the daemon must not get the agent's signals: a ^C of a
// foreground agent, systemd stopping the agent's unit with
// KillMode=process), stdin /dev/null, stdout and stderr appended to
// qemu.log beside the pid file, and a goroutine that reaps it while the
// agent runs; after the agent ends, init (or the unit's cgroup) does.
// Args that still carry -daemonize (older state.json) are run the old way.
func Start(ctx context.Context, qemu string, args []string, pidFile string) (int, error) {
	_ = os.Remove(pidFile)
	if slices.Contains(args, "-daemonize") {
		return startDaemonize(ctx, qemu, args, pidFile)
	}
	logPath := filepath.Join(filepath.Dir(pidFile), "qemu.log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("QEMU log: %w", err)
	}
	defer logf.Close()
	off, _ := logf.Seek(0, io.SeekEnd)
	// Not CommandContext: QEMU outlives the request that started it.
	cmd := exec.Command(qemu, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = newSession()
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("QEMU failed to start: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	output := func() string {
		b, _ := os.ReadFile(logPath)
		if int64(len(b)) >= off {
			b = b[off:]
		}
		return trimOut(b)
	}
	fail := func(err error) (int, error) {
		_ = cmd.Process.Kill()
		<-exited
		return 0, err
	}
	sock := qmpSocketOf(args)
	deadline := time.Now().Add(StartTimeout)
	for {
		select {
		case err := <-exited:
			return 0, fmt.Errorf("QEMU failed to start: %v: %s", err, output())
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
		if sock == "" || qmpGreets(sock) {
			break
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("QEMU did not answer on QMP within %s: %s", StartTimeout, output()))
		}
	}
	if pid, err := ReadPIDFile(pidFile); err != nil || pid != cmd.Process.Pid {
		return fail(fmt.Errorf("QEMU started but its pid file %s: pid %d, %v (expected %d)", pidFile, pid, err, cmd.Process.Pid))
	}
	return cmd.Process.Pid, nil
}

// StartTimeout bounds how long Start waits for QEMU's QMP greeting.
var StartTimeout = 60 * time.Second

// qmpSocketOf returns the unix socket path of the -qmp argument.
func qmpSocketOf(args []string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] != "-qmp" || !strings.HasPrefix(args[i+1], "unix:") {
			continue
		}
		v := strings.TrimPrefix(args[i+1], "unix:")
		var b strings.Builder
		for j := 0; j < len(v); j++ {
			if v[j] == ',' {
				if j+1 < len(v) && v[j+1] == ',' {
					b.WriteByte(',')
					j++
					continue
				}
				break
			}
			b.WriteByte(v[j])
		}
		return b.String()
	}
	return ""
}

// qmpGreets reports whether QEMU's QMP socket accepts a connection and
// sends its greeting (it does so once the machine is set up and the main
// loop runs). The connection is closed before capabilities negotiation;
// QEMU then listens again for the agent's own connection.
func qmpGreets(sock string) bool {
	c, err := net.DialTimeout("unix", sock, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.Contains(line, `"QMP"`)
}

// startDaemonize runs QEMU with -daemonize: QEMU sets up the machine,
// opens its sockets and then forks into the background, so when it
// returns without error QMP is listening.
func startDaemonize(ctx context.Context, qemu string, args []string, pidFile string) (int, error) {
	cmd := exec.CommandContext(ctx, qemu, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = newSession()
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
	if err := signalPID(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
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
	return signalPID(pid, syscall.SIGKILL)
}
