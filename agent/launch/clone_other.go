//go:build !linux

package launch

import (
	"errors"
	"os"
)

// cloneFile: no reflinks here; the caller copies.
func cloneFile(dst, src *os.File) error { return errors.ErrUnsupported }
