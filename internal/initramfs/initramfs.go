// Package initramfs writes newc cpio archives, the format Linux unpacks as
// its initramfs, without the cpio tool: gzip-compressed for flare-agent's
// test guests (busybox, the guest responder), uncompressed for the CVM
// kits' per-kit initrd (flare-init), whose bytes are measured and must be
// the same for the same inputs whatever the compressor's version.
package initramfs

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
)

// Entry is one member: a directory (Dir), a symlink (Link) or a regular
// file (Data, or the host file Source).
type Entry struct {
	Name   string // path inside the archive, without leading /
	Mode   fs.FileMode
	Dir    bool
	Link   string
	Data   []byte
	Source string
}

// Write writes entries (parents created as needed, sorted) to w as
// cpio.gz.
func Write(w io.Writer, entries []Entry) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	if err := WriteCPIO(zw, entries); err != nil {
		return err
	}
	return zw.Close()
}

// WriteCPIO writes entries (parents created as needed, sorted) to w as an
// uncompressed cpio archive. Every member has mtime 0, uid and gid 0 and
// inode numbers in name order, so the same entries give the same bytes.
func WriteCPIO(w io.Writer, entries []Entry) error {
	all := map[string]Entry{}
	for _, e := range entries {
		e.Name = strings.TrimPrefix(path.Clean("/"+e.Name), "/")
		if e.Name == "" {
			continue
		}
		for d := path.Dir(e.Name); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := all[d]; !ok {
				all[d] = Entry{Name: d, Dir: true, Mode: 0o755}
			}
		}
		all[e.Name] = e
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	bw := bufio.NewWriterSize(w, 1<<20)
	cw := &cpioWriter{w: bw}
	for i, n := range names {
		if err := cw.add(uint32(i+1), all[n]); err != nil {
			return fmt.Errorf("initramfs: %s: %w", n, err)
		}
	}
	if err := cw.header(0, "TRAILER!!!", 0, 0, 1); err != nil {
		return err
	}
	return bw.Flush()
}

// WriteFile writes the archive to p.
func WriteFile(p string, entries []Entry) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	if err := Write(f, entries); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type cpioWriter struct {
	w   io.Writer
	off int64
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
)

func (c *cpioWriter) write(b []byte) error {
	n, err := c.w.Write(b)
	c.off += int64(n)
	return err
}

func (c *cpioWriter) pad() error {
	if r := c.off % 4; r != 0 {
		return c.write(make([]byte, 4-r))
	}
	return nil
}

func (c *cpioWriter) header(ino uint32, name string, mode uint32, size int64, nlink uint32) error {
	h := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, uint32(size), 0, 0, 0, 0, len(name)+1, 0)
	if err := c.write([]byte(h)); err != nil {
		return err
	}
	if err := c.write(append([]byte(name), 0)); err != nil {
		return err
	}
	return c.pad()
}

func (c *cpioWriter) add(ino uint32, e Entry) error {
	perm := uint32(e.Mode.Perm())
	switch {
	case e.Dir:
		return c.header(ino, e.Name, sIFDIR|perm, 0, 2)
	case e.Link != "":
		if err := c.header(ino, e.Name, sIFLNK|0o777, int64(len(e.Link)), 1); err != nil {
			return err
		}
		if err := c.write([]byte(e.Link)); err != nil {
			return err
		}
		return c.pad()
	}
	data := e.Data
	if e.Source != "" {
		var err error
		if data, err = os.ReadFile(e.Source); err != nil {
			return err
		}
	}
	if int64(len(data)) > 0xffffffff {
		return fmt.Errorf("file of %d bytes is too large for newc", len(data))
	}
	if err := c.header(ino, e.Name, sIFREG|perm, int64(len(data)), 1); err != nil {
		return err
	}
	if err := c.write(data); err != nil {
		return err
	}
	return c.pad()
}
