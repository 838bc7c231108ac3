package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteAndReplaceDir(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := Write(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "two" {
		t.Fatalf("content %q", b)
	}
	if info, _ := os.Stat(p); info.Mode().Perm() != 0o600 {
		t.Errorf("mode %o", info.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
	if err := Write(filepath.Join(dir, "missing", "f"), nil, 0o600); err == nil {
		t.Error("write into a missing directory succeeded")
	}

	final := filepath.Join(dir, "kit")
	for i, content := range []string{"old", "new"} {
		next := filepath.Join(dir, "next")
		os.Mkdir(next, 0o755)
		os.WriteFile(filepath.Join(next, "x"), []byte(content), 0o644)
		if err := ReplaceDir(next, final); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(final, "x")); string(b) != content {
			t.Fatalf("round %d: %q", i, b)
		}
		// After an exchange the old tree is left at next for the caller.
		os.RemoveAll(next)
	}
}
