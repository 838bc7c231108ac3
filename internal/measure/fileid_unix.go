//go:build unix

package measure

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// statID identifies the open file's current contents: device, inode, size,
// mtime and ctime. ctime cannot be set by a user, so a rewrite (even one that
// restores size and mtime) gives a new identity, except within one clock
// tick: the caller handles that (see racyWindow).
func statID(f *os.File) (fileID, time.Time, bool) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fileID{}, time.Time{}, false
	}
	ctime := time.Unix(int64(st.Ctim.Sec), int64(st.Ctim.Nsec))
	return fileID{
		dev:   uint64(st.Dev),
		ino:   uint64(st.Ino),
		size:  int64(st.Size),
		mtime: time.Unix(int64(st.Mtim.Sec), int64(st.Mtim.Nsec)).UnixNano(),
		ctime: ctime.UnixNano(),
	}, ctime, true
}
