package kit

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/flarekit/terraform-provider-flare/internal/atomicfile"
)

// Write puts the kit at <parent>/<name>. It builds the whole tree in a
// temporary sibling directory and swaps it in with one rename, so a reader
// sees the old kit or the new one, never a mix; an error leaves the old kit.
func (k *Kit) Write(parent string) (string, error) {
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("create output directory: %w", err)
	}
	final := filepath.Join(parent, k.Name)
	tmp, err := os.MkdirTemp(parent, "."+k.Name+".tmp-")
	if err != nil {
		return "", fmt.Errorf("write kit %s: %w", k.Name, err)
	}
	defer os.RemoveAll(tmp) // after a swap this holds the old kit
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	for _, d := range k.Dirs {
		if err := os.MkdirAll(filepath.Join(tmp, d), 0o755); err != nil {
			return "", err
		}
	}
	for _, f := range k.Files {
		p := filepath.Join(tmp, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, f.Data, f.Mode); err != nil {
			return "", fmt.Errorf("write kit %s: %w", k.Name, err)
		}
		// WriteFile's mode is filtered by umask; the kit's modes are not.
		if err := os.Chmod(p, f.Mode); err != nil {
			return "", err
		}
	}
	if err := atomicfile.ReplaceDir(tmp, final); err != nil {
		return "", fmt.Errorf("write kit %s: %w", k.Name, err)
	}
	return final, nil
}

// Digest identifies the kit's content: every path, mode and file hash.
func (k *Kit) Digest() string {
	entries := make([]string, 0, len(k.Files)+len(k.Dirs))
	for _, d := range k.Dirs {
		entries = append(entries, entryLine(d, fs.ModeDir|0o755, nil))
	}
	for _, f := range k.Files {
		entries = append(entries, entryLine(f.Path, f.Mode, f.Data))
	}
	return digestOf(entries)
}

// DigestDir computes Digest from a kit on disk. Any edited, added, deleted
// or re-moded file changes it.
func DigestDir(dir string) (string, error) {
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
