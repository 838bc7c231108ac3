package kit

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/atomicfile"
)

// Archive formats a kit can also be packed as.
const (
	ArchiveNone = "none"
	ArchiveTGZ  = "tgz"
	ArchiveZIP  = "zip"
)

// archiveTime is the fixed mtime in archives, so the same kit always packs
// to the same bytes and an unchanged kit never looks changed.
var archiveTime = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// WriteArchive packs the kit into <parent>/<name>.<format> atomically and
// returns the path. Entries sit under <name>/ as a site unpacks them.
func (k *Kit) WriteArchive(parent, format string) (string, error) {
	var buf bytes.Buffer
	var err error
	switch format {
	case ArchiveTGZ:
		err = k.tgz(&buf)
	case ArchiveZIP:
		err = k.zip(&buf)
	default:
		return "", fmt.Errorf("archive %q: use %s, %s or %s", format, ArchiveNone, ArchiveTGZ, ArchiveZIP)
	}
	if err != nil {
		return "", err
	}
	p := filepath.Join(parent, k.Name+"."+format)
	return p, atomicfile.Write(p, buf.Bytes(), 0o600)
}

func (k *Kit) tgz(buf *bytes.Buffer) error {
	gz := gzip.NewWriter(buf)
	tw := tar.NewWriter(gz)
	for _, d := range k.Dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: k.Name + "/" + d + "/", Mode: 0o755, ModTime: archiveTime}); err != nil {
			return err
		}
	}
	for _, f := range k.Files {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: k.Name + "/" + f.Path, Mode: int64(f.Mode.Perm()), Size: int64(len(f.Data)), ModTime: archiveTime}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

func (k *Kit) zip(buf *bytes.Buffer) error {
	zw := zip.NewWriter(buf)
	for _, d := range k.Dirs {
		h := &zip.FileHeader{Name: k.Name + "/" + d + "/", Modified: archiveTime}
		h.SetMode(fs.ModeDir | 0o755)
		if _, err := zw.CreateHeader(h); err != nil {
			return err
		}
	}
	for _, f := range k.Files {
		h := &zip.FileHeader{Name: k.Name + "/" + f.Path, Method: zip.Deflate, Modified: archiveTime}
		h.SetMode(f.Mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		if _, err := w.Write(f.Data); err != nil {
			return err
		}
	}
	return zw.Close()
}

// RemoveArchives deletes <parent>/<name>.tgz and .zip except the format
// keep (pass ArchiveNone to remove both).
func RemoveArchives(parent, name, keep string) {
	for _, format := range []string{ArchiveTGZ, ArchiveZIP} {
		if format != keep {
			_ = os.Remove(filepath.Join(parent, name+"."+format))
		}
	}
}
