//go:build !unix

package launch

import (
	"errors"
	"runtime"
	"syscall"
)

// The agent runs on Linux only; these stubs let the provider, which uses
// this package's launch.json checks, build for every platform.
const (
	oNoFollow = 0
	oNonBlock = 0
	oCloExec  = 0
)

func newSession() *syscall.SysProcAttr { return nil }

func signalPID(int, syscall.Signal) error {
	return errors.New("launch: signals are not supported on " + runtime.GOOS)
}
