package launch

import (
	"os"

	"golang.org/x/sys/unix"
)

// cloneFile makes dst a reflink of src (FICLONE) where the file system
// supports it.
func cloneFile(dst, src *os.File) error { return unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())) }
