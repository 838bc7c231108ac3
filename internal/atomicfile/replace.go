package atomicfile

import (
	"errors"
	"io/fs"
	"os"
)

// replaceDirTwoSteps moves final aside, then dir into place, restoring
// final if the second step fails.
func replaceDirTwoSteps(dir, final string) error {
	old := dir + ".old"
	if err := os.Rename(final, old); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return os.Rename(dir, final)
		}
		return err
	}
	if err := os.Rename(dir, final); err != nil {
		_ = os.Rename(old, final)
		return err
	}
	return os.RemoveAll(old)
}
