package launch

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzKitTar is an uncompressed kit archive: entries prefix/<file> for
// the seed manifest's files and launch.json, then extra.
func fuzzKitTar(prefix string, extra ...*tar.Header) []byte {
	m, files := fuzzManifest()
	lj, _ := json.Marshal(m)
	files["launch.json"] = lj
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: prefix + "/", Typeflag: tar.TypeDir, Mode: 0o755})
	for _, n := range []string{"launch.json", "OVMF.fd", "vmlinuz", "initrd.img", "root.qcow2", "applog.qcow2"} {
		tw.WriteHeader(&tar.Header{Name: prefix + "/" + n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(files[n]))})
		tw.Write(files[n])
	}
	for _, h := range extra {
		tw.WriteHeader(h)
		if h.Size > 0 {
			tw.Write(bytes.Repeat([]byte{'x'}, int(h.Size)))
		}
	}
	tw.Close()
	return b.Bytes()
}

func gzipBytes(b []byte) []byte {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(b)
	zw.Close()
	return gz.Bytes()
}

// FuzzUnpack: an upload is a tar.gz from a certificate holder. Whatever
// the tar holds (the harness gzips it, so the fuzzer works on tar
// structure, not on gzip checksums), Unpack must not panic, must write
// nothing outside dest, and must leave no symlink, device or other
// special file, nor anything readable by others, even when it fails.
func FuzzUnpack(f *testing.F) {
	good := fuzzKitTar("site-1/cvm_0a1b2c3d")
	if _, _, err := Unpack(bytes.NewReader(gzipBytes(good)), filepath.Join(f.TempDir(), "u"), 1<<20); err != nil {
		f.Fatalf("the seed kit archive is refused: %v", err)
	}
	f.Add(good)
	f.Add(fuzzKitTar("k", &tar.Header{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1}))
	f.Add(fuzzKitTar("k", &tar.Header{Name: "k/link", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}))
	f.Add(fuzzKitTar("k", &tar.Header{Name: "k/hard", Typeflag: tar.TypeLink, Linkname: "../../x"}))
	f.Add(fuzzKitTar("k", &tar.Header{Name: "k/evil.sh", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 3}))
	f.Add(fuzzKitTar("k", &tar.Header{Name: "k/launch.json", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2}))
	f.Add(fuzzKitTar("a", &tar.Header{Name: "b/launch.json", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2}))
	f.Add(fuzzKitTar("k", &tar.Header{Name: "k/dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}))
	f.Add(fuzzKitTar("/abs"))
	f.Add(fuzzKitTar(`k\..\..`))
	f.Add(fuzzKitTar("a/b/c/d/e/f"))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, tarBytes []byte) {
		parent := t.TempDir()
		dest := filepath.Join(parent, "upload")
		kitDir, m, err := Unpack(bytes.NewReader(gzipBytes(tarBytes)), dest, 1<<20)
		if ents, _ := os.ReadDir(parent); len(ents) != 1 || ents[0].Name() != "upload" {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("Unpack wrote beside dest: %v", names)
		}
		filepath.WalkDir(dest, func(p string, d fs.DirEntry, werr error) error {
			if werr != nil {
				t.Fatalf("walk: %v", werr)
			}
			fi, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case fi.Mode().IsRegular():
				if fi.Mode().Perm()&0o077 != 0 || fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
					t.Fatalf("%s has mode %v", p, fi.Mode())
				}
			case fi.IsDir():
				if fi.Mode().Perm()&0o077 != 0 {
					t.Fatalf("%s has mode %v", p, fi.Mode())
				}
			default:
				t.Fatalf("%s is a %v", p, fi.Mode().Type())
			}
			return nil
		})
		if err != nil {
			return
		}
		rel, rerr := filepath.Rel(dest, kitDir)
		if rerr != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
			t.Fatalf("kit folder %s is outside dest %s", kitDir, dest)
		}
		if m == nil || CheckManifest(m) != nil {
			t.Fatalf("accepted a kit without a valid manifest: %+v", m)
		}
		if err := VerifyFiles(kitDir, m, true); err != nil {
			t.Fatalf("accepted a kit whose files do not match: %v", err)
		}
	})
}
