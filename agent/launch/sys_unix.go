//go:build unix

package launch

import "syscall"

// Open flags for kit files: never follow a final symlink, never block on
// a FIFO.
const (
	oNoFollow = syscall.O_NOFOLLOW
	oNonBlock = syscall.O_NONBLOCK
	oCloExec  = syscall.O_CLOEXEC
)

// newSession starts a child in its own session.
func newSession() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }

// signalPID sends sig to pid.
func signalPID(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }
