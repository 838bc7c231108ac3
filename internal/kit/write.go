package kit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/flarekit/terraform-provider-flare/internal/atomicfile"
)

// Write puts the kit at <parent>/<name>. A new kit is built whole in a
// temporary sibling directory and renamed into place. An existing kit is
// updated in place, because a running site keeps its logs, job workspaces
// and local overrides in the kit: startup/ (only ever ours) is swapped in
// with one atomic exchange, each other managed file is replaced atomically,
// and files of ours the new kit no longer has are removed. Nothing else in
// the directory is touched.
func (k *Kit) Write(parent string) (string, error) {
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("create output directory: %w", err)
	}
	final := filepath.Join(parent, k.Name)
	if _, err := os.Stat(final); err == nil {
		return final, k.update(final)
	}
	tmp, err := os.MkdirTemp(parent, "."+k.Name+".tmp-")
	if err != nil {
		return "", fmt.Errorf("write kit %s: %w", k.Name, err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := k.writeTree(tmp, func(File) bool { return true }); err != nil {
		return "", fmt.Errorf("write kit %s: %w", k.Name, err)
	}
	if err := atomicfile.ReplaceDir(tmp, final); err != nil {
		return "", fmt.Errorf("write kit %s: %w", k.Name, err)
	}
	return final, nil
}

// writeTree writes the kit's directories and the files keep selects under root.
func (k *Kit) writeTree(root string, keep func(File) bool) error {
	for _, d := range k.Dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	for _, f := range k.Files {
		if !keep(f) {
			continue
		}
		p := filepath.Join(root, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.Data, f.Mode); err != nil {
			return err
		}
		// WriteFile's mode is filtered by umask; the kit's modes are not.
		if err := os.Chmod(p, f.Mode); err != nil {
			return err
		}
	}
	return nil
}

func inStartup(f File) bool { return strings.HasPrefix(f.Path, "startup/") }

func (k *Kit) update(final string) error {
	// Files of ours in local/ are the ones its old signature.json lists.
	oldLocal := managedLocal(final)
	tmp, err := os.MkdirTemp(final, ".startup.tmp-")
	if err != nil {
		return fmt.Errorf("update kit %s: %w", k.Name, err)
	}
	defer os.RemoveAll(tmp)
	if err := k.writeTree(tmp, inStartup); err != nil {
		return fmt.Errorf("update kit %s: %w", k.Name, err)
	}
	if err := atomicfile.ReplaceDir(filepath.Join(tmp, "startup"), filepath.Join(final, "startup")); err != nil {
		return fmt.Errorf("update kit %s: %w", k.Name, err)
	}
	keep := map[string]bool{}
	for _, d := range k.Dirs {
		if err := os.MkdirAll(filepath.Join(final, d), 0o755); err != nil {
			return err
		}
	}
	for _, f := range k.Files {
		keep[f.Path] = true
		if inStartup(f) {
			continue
		}
		if err := atomicfile.Write(filepath.Join(final, filepath.FromSlash(f.Path)), f.Data, f.Mode); err != nil {
			return fmt.Errorf("update kit %s: %w", k.Name, err)
		}
	}
	for _, rel := range append(oldLocal, ccSignatures...) {
		if !keep[rel] {
			_ = os.Remove(filepath.Join(final, filepath.FromSlash(rel)))
		}
	}
	return nil
}

// ccSignatures are the signature.json files only a CC kit has (it is
// signed in every folder): managed when present, removed when a kit stops
// being a CC kit.
var ccSignatures = []string{SignatureFile, "transfer/" + SignatureFile}

// managedLocal lists local/ files the kit at dir manages: those its
// local/signature.json signs, and signature.json itself.
func managedLocal(dir string) []string {
	out := []string{"local/" + SignatureFile}
	raw, err := os.ReadFile(filepath.Join(dir, "local", SignatureFile))
	if err != nil {
		return out
	}
	var sigs map[string]string
	if json.Unmarshal(raw, &sigs) != nil {
		return out
	}
	for name := range sigs {
		if name == filepath.Base(name) {
			out = append(out, "local/"+name)
		}
	}
	return out
}

// Digest identifies the kit's content: every file's path, mode and hash.
func (k *Kit) Digest() string {
	entries := make([]string, 0, len(k.Files))
	for _, f := range k.Files {
		entries = append(entries, entryLine(f.Path, f.Mode, f.Data))
	}
	return digestOf(entries)
}

// DigestDir computes Digest from a kit on disk, over the files the kit
// manages: everything in startup/, local/signature.json and the files it
// signs, and readme.txt. An edit, a deletion or a mode change of one of
// them changes the digest; what the running site writes beside them (logs,
// job workspaces, pid files, local overrides) does not.
func DigestDir(dir string) (string, error) {
	if _, err := os.Stat(dir); err != nil {
		return "", err
	}
	var paths []string
	startup, err := os.ReadDir(filepath.Join(dir, "startup"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	for _, e := range startup {
		paths = append(paths, "startup/"+e.Name())
	}
	paths = append(paths, managedLocal(dir)...)
	for _, rel := range append([]string{"readme.txt"}, ccSignatures...) {
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(rel))); err == nil {
			paths = append(paths, rel)
		}
	}
	entries := make([]string, 0, len(paths))
	for _, rel := range paths {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		info, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			entries = append(entries, rel+"\x00missing")
			continue
		}
		if err != nil {
			return "", err
		}
		var data []byte
		if !info.IsDir() {
			if data, err = os.ReadFile(p); err != nil {
				return "", err
			}
		}
		entries = append(entries, entryLine(rel, info.Mode(), data))
	}
	return digestOf(entries), nil
}

// DigestTree digests every path, mode and file under dir: for trees that
// are wholly ours, such as CVM kits.
func DigestTree(dir string) (string, error) {
	var entries []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		var data []byte
		if !d.IsDir() {
			if data, err = os.ReadFile(p); err != nil {
				return err
			}
			entries = append(entries, entryLine(filepath.ToSlash(rel), info.Mode().Perm(), data))
			return nil
		}
		entries = append(entries, entryLine(filepath.ToSlash(rel), fs.ModeDir|info.Mode().Perm(), nil))
		return nil
	})
	if err != nil {
		return "", err
	}
	return digestOf(entries), nil
}

func entryLine(p string, mode fs.FileMode, data []byte) string {
	sum := sha256.Sum256(data)
	return fmt.Sprintf("%s\x00%o\x00%x", p, uint32(mode.Perm())|dirBit(mode), sum)
}

func dirBit(m fs.FileMode) uint32 {
	if m.IsDir() {
		return 1 << 20
	}
	return 0
}

func digestOf(entries []string) string {
	sort.Strings(entries)
	h := sha256.New()
	for _, e := range entries {
		h.Write([]byte(e))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}
