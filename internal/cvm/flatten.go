package cvm

import (
	"archive/tar"
	"context"
	"errors"
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

// Entry kinds of a tree.
const (
	kindDir     = 'd'
	kindFile    = 'f'
	kindSymlink = 'l'
	kindChar    = 'c'
	kindBlock   = 'b'
	kindFifo    = 'p'
)

// inodeMeta is what an entry should have in the image. Ownership, special
// mode bits, device nodes and timestamps cannot all be given to the staging
// directory without privileges, so they are recorded here and applied to
// the ext4 image with debugfs.
type inodeMeta struct {
	kind     byte
	perm     fs.FileMode // permission and setuid/setgid/sticky bits
	uid, gid int
	mtime    int64
	major    int64
	minor    int64
}

// tree is a staging directory for mkfs.ext4 -d plus the metadata of each
// entry, keyed by slash path relative to the root ("" is the root).
type tree struct {
	dir   string
	meta  map[string]*inodeMeta
	bytes int64 // regular-file bytes, for the size check
}

func newTree(dir string, rootMTime int64) *tree {
	return &tree{dir: dir, meta: map[string]*inodeMeta{
		"": {kind: kindDir, perm: 0o755, mtime: rootMTime},
	}}
}

// stagedPerm is the mode an entry gets in the staging directory: owner
// access is added so an unprivileged mkfs can read and descend into it;
// special bits are left to debugfs.
func stagedPerm(kind byte, perm fs.FileMode) fs.FileMode {
	p := perm.Perm()
	if kind == kindDir {
		return p | 0o700
	}
	return p | 0o600
}

// PathError is a layer entry that would land outside the image root.
type PathError struct {
	Layer string
	Name  string
	Why   string
}

func (e *PathError) Error() string {
	return fmt.Sprintf("docker_archive: layer %s: entry %q %s: refusing path traversal", e.Layer, e.Name, e.Why)
}

// cleanEntryName validates a layer member name and returns it as a clean
// relative slash path ("" for the root).
func cleanEntryName(layer, name string) (string, error) {
	if strings.ContainsRune(name, 0) {
		return "", &PathError{layer, name, "contains a NUL byte"}
	}
	if strings.HasPrefix(name, "/") {
		return "", &PathError{layer, name, "is absolute"}
	}
	n := strings.TrimSuffix(name, "/")
	for strings.HasPrefix(n, "./") {
		n = n[2:]
	}
	if n == "" || n == "." {
		return "", nil
	}
	for _, c := range strings.Split(n, "/") {
		if c == ".." {
			return "", &PathError{layer, name, "contains .."}
		}
	}
	return path.Clean(n), nil
}

// flattener applies layers into a staging tree confined by os.Root, so no
// entry, symlink or hardlink can write outside it.
type flattener struct {
	t       *tree
	root    *os.Root
	layer   string
	created map[string]bool // entries made by the current layer
}

// Flatten applies the layers of the image in the docker-save archive at
// archivePath into the directory dest (created if missing; it should be
// empty) and returns the image config. Whiteouts (.wh.<name>) and opaque
// directories (.wh..wh..opq) are honoured; modes, symlinks and hardlinks
// are kept. File ownership, setuid/setgid/sticky bits and device nodes need
// privileges and are not applied to dest (Build applies them inside the
// image). Entries with absolute paths or ".." are refused (*PathError).
func Flatten(ctx context.Context, archivePath, dest string) (*ImageConfig, error) {
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return nil, err
	}
	cfg, _, err := flattenImage(ctx, archivePath, dest, filepath.Dir(filepath.Clean(dest)))
	return cfg, err
}

// flattenImage flattens into stage; tmpDir holds a decompressed copy of a
// compressed archive while it is read.
func flattenImage(ctx context.Context, archivePath, stage, tmpDir string) (*ImageConfig, *tree, error) {
	a, err := openImageArchive(archivePath, tmpDir)
	if err != nil {
		return nil, nil, err
	}
	defer a.Close()
	cfg, layers, err := a.image()
	if err != nil {
		return nil, nil, err
	}
	root, err := os.OpenRoot(stage)
	if err != nil {
		return nil, nil, err
	}
	defer root.Close()
	fl := &flattener{t: newTree(stage, 0), root: root}
	for i, l := range layers {
		sr, err := a.open(l)
		if err != nil {
			return nil, nil, err
		}
		fl.layer = fmt.Sprintf("%d (%s)", i+1, l)
		if err := fl.apply(ctx, sr); err != nil {
			return nil, nil, err
		}
	}
	if err := fl.finish(); err != nil {
		return nil, nil, err
	}
	return cfg, fl.t, nil
}

func (fl *flattener) apply(ctx context.Context, r io.Reader) error {
	dr, closer, err := decompressor(r, "docker_archive: layer "+fl.layer)
	if err != nil {
		return err
	}
	defer closer()
	fl.created = map[string]bool{}
	tr := tar.NewReader(dr)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("docker_archive: layer %s: %w", fl.layer, err)
		}
		if err := fl.entry(hdr, tr); err != nil {
			return err
		}
	}
}

func (fl *flattener) entry(hdr *tar.Header, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		return nil
	}
	name, err := cleanEntryName(fl.layer, hdr.Name)
	if err != nil {
		return err
	}
	base, dir := path.Base(name), path.Dir(name)
	if dir == "." {
		dir = ""
	}
	if name == "" {
		if hdr.Typeflag == tar.TypeDir {
			fl.t.meta[""] = &inodeMeta{kind: kindDir, perm: modeOf(hdr), uid: hdr.Uid, gid: hdr.Gid, mtime: hdr.ModTime.Unix()}
		}
		return nil
	}

	// Whiteouts (OCI image spec, layer.md).
	if base == ".wh..wh..opq" {
		if err := fl.opaque(dir); err != nil {
			return err
		}
		return fl.parents(dir, hdr.ModTime.Unix()) // the directory itself stays
	}
	if strings.HasPrefix(base, ".wh..wh.") {
		return nil // aufs bookkeeping (.wh..wh.plnk and the like)
	}
	if strings.HasPrefix(base, ".wh.") {
		target := path.Join(dir, strings.TrimPrefix(base, ".wh."))
		if base == ".wh." || path.Base(target) == ".." || path.Base(target) == "." {
			return &PathError{fl.layer, hdr.Name, "is a whiteout of no name"}
		}
		if !fl.created[target] {
			return fl.remove(target)
		}
		return nil
	}

	if err := fl.parents(dir, hdr.ModTime.Unix()); err != nil {
		return err
	}
	// What is there now is replaced, except a directory by a directory.
	if fi, err := fl.root.Lstat(name); err == nil {
		if !(fi.IsDir() && hdr.Typeflag == tar.TypeDir) {
			if err := fl.remove(name); err != nil {
				return err
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fl.fail(name, err)
	} else {
		delete(fl.t.meta, name) // a device node lives in meta only
	}
	fl.created[name] = true

	m := &inodeMeta{perm: modeOf(hdr), uid: hdr.Uid, gid: hdr.Gid, mtime: hdr.ModTime.Unix()}
	switch hdr.Typeflag {
	case tar.TypeDir:
		m.kind = kindDir
		if err := fl.root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fl.fail(name, err)
		}
		if err := fl.root.Chmod(name, stagedPerm(kindDir, m.perm)); err != nil {
			return fl.fail(name, err)
		}
	case tar.TypeReg, tar.TypeRegA:
		m.kind = kindFile
		f, err := fl.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fl.fail(name, err)
		}
		n, err := io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fl.fail(name, err)
		}
		fl.t.bytes += n
		if err := fl.root.Chmod(name, stagedPerm(kindFile, m.perm)); err != nil {
			return fl.fail(name, err)
		}
	case tar.TypeSymlink:
		m.kind, m.perm = kindSymlink, 0o777
		// The target is read inside the guest; it is not followed here
		// except through os.Root, which stays inside the staging tree.
		if err := fl.root.Symlink(hdr.Linkname, name); err != nil {
			return fl.fail(name, err)
		}
	case tar.TypeLink:
		target, err := cleanEntryName(fl.layer, hdr.Linkname)
		if err != nil || target == "" {
			return &PathError{fl.layer, hdr.Name, fmt.Sprintf("hardlinks to %q", hdr.Linkname)}
		}
		if tm, ok := fl.t.meta[target]; ok && (tm.kind == kindChar || tm.kind == kindBlock || tm.kind == kindFifo) {
			c := *tm // device nodes exist only in meta: make another node
			fl.t.meta[name] = &c
			return nil
		}
		if err := fl.root.Link(target, name); err != nil {
			return fl.fail(name, fmt.Errorf("hardlink to %s: %w", target, err))
		}
		if tm, ok := fl.t.meta[target]; ok {
			fl.t.meta[name] = tm // one inode, one metadata
			return nil
		}
		m.kind = kindFile
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		m.kind = map[byte]byte{tar.TypeChar: kindChar, tar.TypeBlock: kindBlock, tar.TypeFifo: kindFifo}[hdr.Typeflag]
		m.major, m.minor = hdr.Devmajor, hdr.Devminor
	default:
		return fmt.Errorf("docker_archive: layer %s: entry %q has unsupported type %q", fl.layer, hdr.Name, hdr.Typeflag)
	}
	fl.t.meta[name] = m
	return nil
}

func modeOf(hdr *tar.Header) fs.FileMode {
	m := fs.FileMode(hdr.Mode & 0o777)
	if hdr.Mode&04000 != 0 {
		m |= fs.ModeSetuid
	}
	if hdr.Mode&02000 != 0 {
		m |= fs.ModeSetgid
	}
	if hdr.Mode&01000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

func (fl *flattener) fail(name string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "escapes") {
		return &PathError{fl.layer, name, "resolves outside the image through a symlink"}
	}
	return fmt.Errorf("docker_archive: layer %s: %s: %w", fl.layer, name, err)
}

// parents creates missing parent directories of an entry (layers need
// not list them).
func (fl *flattener) parents(dir string, mtime int64) error {
	if dir == "" {
		return nil
	}
	var p string
	for _, c := range strings.Split(dir, "/") {
		p = path.Join(p, c)
		fi, err := fl.root.Lstat(p)
		if err == nil {
			if fi.IsDir() || fi.Mode()&fs.ModeSymlink != 0 {
				continue // a symlink is followed by os.Root, inside the tree
			}
			return fl.fail(p, errors.New("is a file, not a directory"))
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fl.fail(p, err)
		}
		if err := fl.root.Mkdir(p, 0o755); err != nil {
			return fl.fail(p, err)
		}
		if err := fl.root.Chmod(p, 0o755); err != nil {
			return fl.fail(p, err)
		}
		fl.t.meta[p] = &inodeMeta{kind: kindDir, perm: 0o755, mtime: mtime}
	}
	return nil
}

// remove deletes an entry and everything under it.
func (fl *flattener) remove(name string) error {
	fi, err := fl.root.Lstat(name)
	if err == nil {
		if err := fl.root.RemoveAll(name); err != nil {
			return fl.fail(name, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fl.fail(name, err)
	}
	delete(fl.t.meta, name)
	if fi == nil || fi.IsDir() {
		prefix := name + "/"
		for k := range fl.t.meta {
			if strings.HasPrefix(k, prefix) {
				delete(fl.t.meta, k)
			}
		}
	}
	return nil
}

// opaque hides what lower layers put in dir: its entries not made by the
// current layer go.
func (fl *flattener) opaque(dir string) error {
	prefix := dir + "/"
	if dir == "" {
		prefix = ""
	}
	var victims []string
	for k := range fl.t.meta {
		if k == "" || !strings.HasPrefix(k, prefix) {
			continue
		}
		child := k[len(prefix):]
		if i := strings.IndexByte(child, '/'); i >= 0 {
			child = child[:i]
		}
		if c := prefix + child; !fl.created[c] {
			victims = append(victims, c)
		}
	}
	sort.Strings(victims)
	for _, v := range victims {
		if err := fl.remove(v); err != nil {
			return err
		}
	}
	return nil
}

// finish gives the staging tree the recorded mtimes (directories last,
// deepest first, as adding entries touched them).
func (fl *flattener) finish() error {
	keys := sortedKeys(fl.t.meta)
	sort.SliceStable(keys, func(i, j int) bool { return strings.Count(keys[i], "/") > strings.Count(keys[j], "/") })
	for _, k := range keys {
		m := fl.t.meta[k]
		t := time.Unix(m.mtime, 0)
		switch m.kind {
		case kindChar, kindBlock, kindFifo:
			continue
		case kindSymlink:
			if err := lchtimes(filepath.Join(fl.t.dir, filepath.FromSlash(k)), t); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fl.fail(k, err)
			}
		default:
			name := k
			if name == "" {
				name = "."
			}
			if err := fl.root.Chtimes(name, t, t); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fl.fail(k, err)
			}
		}
	}
	return nil
}
