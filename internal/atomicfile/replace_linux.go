//go:build linux

package atomicfile

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// ReplaceDir moves the directory dir to final. If final exists, the two are
// exchanged atomically and the old tree ends up at dir (removed by the caller).
func ReplaceDir(dir, final string) error {
	err := unix.Renameat2(unix.AT_FDCWD, dir, unix.AT_FDCWD, final, unix.RENAME_EXCHANGE)
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.ENOENT) {
		return os.Rename(dir, final)
	}
	// Filesystems without RENAME_EXCHANGE.
	return replaceDirTwoSteps(dir, final)
}
