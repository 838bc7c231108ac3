package dashboard

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var testEntries = []zipEntry{
	{Name: "kit/", Mode: 0o755},
	{Name: "kit/startup/", Mode: 0o755},
	{Name: "kit/startup/start.sh", Mode: 0o755, Data: []byte("#!/bin/sh\necho started\n")},
	{Name: "kit/startup/client.key", Mode: 0o600, Data: bytes.Repeat([]byte("secret key material "), 200)},
	{Name: "kit/empty.txt", Mode: 0o644, Data: nil},
}

// unzipWithPIN opens a PIN zip with Debian's unzip (Info-ZIP, what NVFlare
// users run) and returns name → contents, files only, with their modes.
func unzipWithPIN(t *testing.T, data []byte, pin string) (map[string][]byte, map[string]os.FileMode, error) {
	t.Helper()
	unzip, err := exec.LookPath("unzip")
	if err != nil {
		t.Fatal("unzip not on PATH (Debian package unzip; make test installs it)")
	}
	dir := t.TempDir()
	zipPath := filepath.Join(dir, "kit.zip")
	if err := os.WriteFile(zipPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if b, err := exec.Command(unzip, "-q", "-P", pin, zipPath, "-d", out).CombinedOutput(); err != nil {
		return nil, nil, strErr(strings.TrimSpace(string(b)) + ": " + err.Error())
	}
	files, modes := map[string][]byte{}, map[string]os.FileMode{}
	err = filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(out, p)
		b, err := os.ReadFile(p)
		fi, _ := d.Info()
		files[filepath.ToSlash(rel)], modes[filepath.ToSlash(rel)] = b, fi.Mode().Perm()
		return err
	})
	return files, modes, err
}

type strErr string

func (e strErr) Error() string { return string(e) }

// TestPINZip: `unzip -P` opens the kit zip with the PIN, keeps contents and
// modes, and refuses a wrong PIN; every entry is encrypted.
func TestPINZip(t *testing.T) {
	data, err := writePINZip(testEntries, "Pin1234")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("secret key material")) {
		t.Fatal("the key is readable in the zip without the PIN")
	}
	files, modes, err := unzipWithPIN(t, data, "Pin1234")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range testEntries {
		if strings.HasSuffix(e.Name, "/") {
			continue
		}
		if !bytes.Equal(files[e.Name], e.Data) {
			t.Errorf("%s differs after unzip", e.Name)
		}
		if modes[e.Name] != e.Mode.Perm() {
			t.Errorf("%s: mode %v, want %v", e.Name, modes[e.Name], e.Mode.Perm())
		}
	}
	if _, _, err := unzipWithPIN(t, data, "wrong"); err == nil {
		t.Fatal("unzip accepted a wrong PIN")
	}
}

func TestPINZipRefusesPathsOutside(t *testing.T) {
	if _, err := writePINZip([]zipEntry{{Name: "../evil", Data: []byte("x")}}, "Pin1234"); err == nil {
		t.Fatal("an entry outside the kit was zipped")
	}
}
