package cvm

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// fixedTime is the mtime of every file Build writes into the drives'
// user_config and of every archive entry, so equal inputs give equal bytes.
var fixedTime = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// hashFile returns the size and hex SHA-256 of a file, reading it once.
func hashFile(p string) (int64, string, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// copyFile copies src to dst (mode 0644) and returns the copy's File.
func copyFile(src, dst string) (File, error) {
	in, err := os.Open(src)
	if err != nil {
		return File{}, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return File{}, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return File{}, err
	}
	if err := os.Chmod(dst, 0o644); err != nil {
		return File{}, err
	}
	return File{File: filepath.Base(dst), Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// digestDir computes kit.DigestTree's value (every path, mode and content
// hash, sorted, hashed) while streaming files instead of loading them.
// known holds hex SHA-256 of files already hashed, by slash path. Symlinks
// count by their target text.
func digestDir(dir string, known map[string]string) (string, error) {
	var entries []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			entries = append(entries, fmt.Sprintf("%s\x00%o\x00%s", rel, uint32(info.Mode().Perm())|1<<20, emptySHA))
			return nil
		}
		sum, ok := known[rel]
		switch {
		case ok:
		case info.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256([]byte(t))
			sum = hex.EncodeToString(s[:])
		default:
			if _, sum, err = hashFile(p); err != nil {
				return err
			}
		}
		entries = append(entries, fmt.Sprintf("%s\x00%o\x00%s", rel, uint32(info.Mode().Perm()), sum))
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(entries)
	h := sha256.New()
	for _, e := range entries {
		h.Write([]byte(e))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

var emptySHA = func() string { s := sha256.Sum256(nil); return hex.EncodeToString(s[:]) }()

// mkdirAll makes dir (a slash path) and its missing parents, mode 0755.
func (t *tree) mkdirAll(dir string) error {
	if dir == "." || dir == "" {
		return nil
	}
	root, err := os.OpenRoot(t.dir)
	if err != nil {
		return err
	}
	defer root.Close()
	parts := strings.Split(dir, "/")
	for i := 1; i <= len(parts); i++ {
		d := strings.Join(parts[:i], "/")
		fi, err := root.Lstat(d)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("/%s is not a directory", d)
			}
			continue
		}
		if err := root.Mkdir(d, 0o700); err != nil {
			return err
		}
		if err := root.Chmod(d, stagedPerm(kindDir, 0o755)); err != nil {
			return err
		}
		t.meta[d] = &inodeMeta{kind: kindDir, perm: 0o755, mtime: fixedTime.Unix()}
	}
	return nil
}

// copyIn copies the host file or directory src into the tree at dst (a
// slash path, whose parents are made as needed), recording owner root and
// the fixed mtime for each entry.
func (t *tree) copyIn(src, dst string) error {
	if err := t.mkdirAll(path.Dir(dst)); err != nil {
		return fmt.Errorf("cannot add /%s: %w", dst, err)
	}
	if _, err := os.Lstat(filepath.Join(t.dir, filepath.FromSlash(dst))); err == nil {
		return fmt.Errorf("cannot add /%s: the image has it already", dst)
	}
	mtime := fixedTime.Unix()
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		name := dst
		if rel != "." {
			name = dst + "/" + filepath.ToSlash(rel)
		}
		target := filepath.Join(t.dir, filepath.FromSlash(name))
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		perm := info.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		m := &inodeMeta{perm: perm, mtime: mtime}
		switch {
		case info.IsDir():
			m.kind = kindDir
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
			if err := os.Chmod(target, stagedPerm(kindDir, perm)); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			m.kind = kindFile
			if _, err := copyFile(p, target); err != nil {
				return err
			}
			if err := os.Chmod(target, stagedPerm(kindFile, perm)); err != nil {
				return err
			}
			t.bytes += info.Size()
		case info.Mode()&fs.ModeSymlink != 0:
			m.kind, m.perm = kindSymlink, 0o777
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(l, target); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s is a %s: only files, directories and symlinks are copied", p, info.Mode().Type())
		}
		t.meta[name] = m
		return nil
	})
}

// addFile adds a regular file with the given content to the tree, making
// missing parent directories (mode 0755).
func (t *tree) addFile(name string, data []byte, perm fs.FileMode) error {
	if err := t.mkdirAll(path.Dir(name)); err != nil {
		return fmt.Errorf("cannot add /%s: %w", name, err)
	}
	root, err := os.OpenRoot(t.dir)
	if err != nil {
		return err
	}
	defer root.Close()
	mtime := fixedTime.Unix()
	if fi, err := root.Lstat(name); err == nil {
		if fi.IsDir() {
			return fmt.Errorf("cannot add /%s: a directory is in the way", name)
		}
		if err := root.Remove(name); err != nil {
			return err
		}
	}
	if err := root.WriteFile(name, data, 0o600); err != nil {
		return err
	}
	if err := root.Chmod(name, stagedPerm(kindFile, perm)); err != nil {
		return err
	}
	t.meta[name] = &inodeMeta{kind: kindFile, perm: perm, mtime: mtime}
	t.bytes += int64(len(data))
	return nil
}

// writeTGZ packs dir as prefix/<entries> into a temp file in parent and
// returns its name; entries are sorted, owned by root, stamped fixedTime.
func writeTGZ(dir, prefix, parent string, mode os.FileMode) (string, error) {
	f, err := os.CreateTemp(parent, ".archive.tmp-*")
	if err != nil {
		return "", err
	}
	name := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(name)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	// BestSpeed: an encrypted root is incompressible, and the default
	// level spends 16 s per GB finding that out (BestSpeed: 1.7 s).
	gz, err := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	if err != nil {
		return "", err
	}
	tw := tar.NewWriter(gz)
	hdr := func(name string, fi fs.FileInfo) *tar.Header {
		h := &tar.Header{Name: name, Mode: int64(fi.Mode().Perm()), ModTime: fixedTime, Format: tar.FormatPAX}
		if fi.IsDir() {
			h.Typeflag, h.Name = tar.TypeDir, name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, fi.Size()
		}
		return h
	}
	parts := strings.Split(prefix, "/")
	for i := range parts {
		h := &tar.Header{Typeflag: tar.TypeDir, Name: strings.Join(parts[:i+1], "/") + "/", Mode: 0o755, ModTime: fixedTime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return "", err
		}
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if !fi.IsDir() && !fi.Mode().IsRegular() {
			return fmt.Errorf("archive: %s is not a regular file", rel)
		}
		if err := tw.WriteHeader(hdr(prefix+"/"+filepath.ToSlash(rel), fi)); err != nil {
			return err
		}
		if fi.IsDir() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("archive: %w", err)
	}
	for _, c := range []io.Closer{tw, gz} {
		if err := c.Close(); err != nil {
			return "", err
		}
	}
	if err := bw.Flush(); err != nil {
		return "", err
	}
	if err := f.Chmod(mode); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	ok = true
	return name, nil
}
