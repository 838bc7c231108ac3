package launch

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/flarekit/terraform-provider-flare/internal/cvm"
	"github.com/flarekit/terraform-provider-flare/internal/kit"
)

// kitExtras are files a kit folder has besides those launch.json lists.
var kitExtras = func() map[string]bool {
	m := map[string]bool{kit.SignatureFile: true}
	for _, f := range cvm.SignedFiles {
		m[f] = true
	}
	return m
}()

// Unpack extracts a CVM kit archive (the <participant>.tgz that
// flare_cvm_kit writes: entries <participant>/cvm_<id>/<file>) into dest,
// which must not exist, and returns the kit folder inside it. It accepts
// only regular files and directories, no absolute or escaping names, at
// most maxBytes unpacked. Then it checks the folder strictly: exactly one
// launch.json, no files besides the ones it lists (and the kit's own
// files, cvm.SignedFiles and signature.json), every listed file with its
// recorded size and SHA-256. The signature is checked at launch
// (VerifySignature), as for a kit launched by path.
func Unpack(r io.Reader, dest string, maxBytes int64) (string, *cvm.Manifest, error) {
	if err := os.Mkdir(dest, 0o700); err != nil {
		return "", nil, err
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		return "", nil, fmt.Errorf("kit archive is not gzip: %w", err)
	}
	tr := tar.NewReader(zr)
	var total int64
	var manifests []string
	files := map[string][]string{} // dir -> files
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", nil, fmt.Errorf("kit archive: %w", err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." {
			continue
		}
		if path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") || strings.Contains(name, "\\") {
			return "", nil, fmt.Errorf("kit archive: entry %q escapes the kit folder", h.Name)
		}
		if strings.Count(name, "/") > 4 {
			return "", nil, fmt.Errorf("kit archive: entry %q is nested too deep", h.Name)
		}
		p := filepath.Join(dest, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				return "", nil, err
			}
		case tar.TypeReg:
			total += h.Size
			if total > maxBytes {
				return "", nil, fmt.Errorf("kit archive unpacks to more than %d bytes (max_upload_bytes)", maxBytes)
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				return "", nil, err
			}
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return "", nil, fmt.Errorf("kit archive: %s: %w", name, err)
			}
			n, err := io.Copy(f, io.LimitReader(tr, h.Size))
			cerr := f.Close()
			if err == nil && n != h.Size {
				err = io.ErrUnexpectedEOF
			}
			if err == nil {
				err = cerr
			}
			if err != nil {
				return "", nil, fmt.Errorf("kit archive: %s: %w", name, err)
			}
			dir, base := path.Split(name)
			files[dir] = append(files[dir], base)
			if base == cvm.ManifestFile {
				manifests = append(manifests, dir)
			}
		default:
			return "", nil, fmt.Errorf("kit archive: entry %q is not a regular file or directory (type %q)", h.Name, h.Typeflag)
		}
	}
	if len(manifests) != 1 {
		return "", nil, fmt.Errorf("kit archive holds %d launch.json files, want exactly 1", len(manifests))
	}
	kitDir := filepath.Join(dest, filepath.FromSlash(manifests[0]))
	m, err := ReadManifest(kitDir)
	if err != nil {
		return "", nil, err
	}
	listed := map[string]bool{}
	for _, f := range Files(m) {
		listed[f.Name] = true
	}
	var extra []string
	for dir, names := range files {
		for _, n := range names {
			if dir != manifests[0] {
				extra = append(extra, dir+n)
			} else if !listed[n] && !kitExtras[n] {
				extra = append(extra, n)
			}
		}
	}
	if len(extra) > 0 {
		return "", nil, fmt.Errorf("kit archive holds files launch.json does not list: %s", strings.Join(extra, ", "))
	}
	if err := VerifyFiles(kitDir, m, true); err != nil {
		return "", nil, err
	}
	return kitDir, m, nil
}
