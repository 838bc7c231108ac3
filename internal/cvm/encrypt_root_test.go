package cvm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildEncryptRootFailsClosed: encrypt_root with a qemu-img that has
// no luks driver is an error, not a kit with a plaintext root and a note.
// The qemu-img on PATH is a wrapper that hides luks from --help and runs
// the real one for everything else.
func TestBuildEncryptRootFailsClosed(t *testing.T) {
	tl := needTools(t)
	bin := t.TempDir()
	wrapper := "#!/bin/sh\n" +
		"if [ \"$1\" = --help ]; then echo 'Supported formats: qcow2 raw'; exit 0; fi\n" +
		"exec " + tl.qemuImg + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "qemu-img"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))

	fx := newFixture(t)
	fx.in.Config.EncryptRoot = true
	fx.in.luksIterTimeMS = 10
	res, err := Build(context.Background(), fx.in)
	if err == nil {
		t.Fatalf("built a kit (root encrypted: %v, notes %q) although qemu-img cannot encrypt", res.RootEncrypted, res.Notes)
	}
	if !strings.Contains(err.Error(), "encrypt_root") || !strings.Contains(err.Error(), "luks") {
		t.Errorf("error does not say why: %v", err)
	}
	// Nothing is left behind.
	if entries, _ := os.ReadDir(filepath.Join(fx.in.OutputDir, fx.in.ParticipantName)); len(entries) != 0 {
		names := make([]string, len(entries))
		for i, e := range entries {
			names[i] = e.Name()
		}
		t.Errorf("output dir holds %v after the failed build", names)
	}

	// Without encrypt_root the same qemu-img builds a kit (the wrapper
	// only hides luks).
	fx.in.Config.EncryptRoot = false
	if _, err := Build(context.Background(), fx.in); err != nil {
		t.Fatalf("plain build through the wrapper: %v", err)
	}
}
