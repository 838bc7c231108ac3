package dashboard

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var testEntries = []zipEntry{
	{Name: "kit/", Mode: 0o755},
	{Name: "kit/startup/", Mode: 0o755},
	{Name: "kit/startup/start.sh", Mode: 0o755, Data: []byte("#!/bin/sh\necho started\n")},
	{Name: "kit/startup/client.key", Mode: 0o600, Data: bytes.Repeat([]byte("secret key material "), 200)},
	{Name: "kit/empty.txt", Mode: 0o644, Data: nil},
}

// openEncrypted decrypts each file of a ZipCrypto zip with password in Go
// (independently of unzip) and returns name → contents.
func openEncrypted(t *testing.T, data []byte, password string) (map[string][]byte, error) {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, f := range zr.File {
		if strings.HasSuffix(f.Name, "/") {
			out[f.Name] = nil
			continue
		}
		if f.Flags&1 == 0 {
			t.Fatalf("%s is not encrypted", f.Name)
		}
		rc, err := f.OpenRaw()
		if err != nil {
			return nil, err
		}
		body, _ := io.ReadAll(rc)
		newZipCrypto([]byte(password)).decrypt(body)
		check := byte(f.CRC32 >> 24)
		if f.Flags&0x8 != 0 { // data descriptor: the check byte is the DOS time's high byte
			check = byte(f.ModifiedTime >> 8)
		}
		if body[11] != check {
			return nil, errWrongPassword
		}
		var plain []byte
		switch f.Method {
		case zip.Store:
			plain = body[12:]
		case zip.Deflate:
			if plain, err = io.ReadAll(flate.NewReader(bytes.NewReader(body[12:]))); err != nil {
				return nil, err
			}
		default:
			t.Fatalf("%s: method %d", f.Name, f.Method)
		}
		if crc32.ChecksumIEEE(plain) != f.CRC32 {
			return nil, strErr(f.Name + ": CRC mismatch")
		}
		out[f.Name] = plain
	}
	return out, nil
}

type strErr string

func (e strErr) Error() string { return string(e) }

const errWrongPassword = strErr("wrong password")

func TestZipCryptoRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	if err := writeEncryptedZip(&buf, testEntries, "Pin1234", time.Now()); err != nil {
		t.Fatal(err)
	}
	got, err := openEncrypted(t, buf.Bytes(), "Pin1234")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range testEntries {
		if !bytes.Equal(got[e.Name], e.Data) {
			t.Errorf("%s: got %q", e.Name, got[e.Name])
		}
	}
	if _, err := openEncrypted(t, buf.Bytes(), "wrong"); err == nil {
		t.Fatal("wrong password opened the zip")
	}
}

// TestZipCryptoUnzip: Debian's unzip (Info-ZIP, what NVFlare users run)
// opens our zips with -P and refuses a wrong password.
func TestZipCryptoUnzip(t *testing.T) {
	unzip, err := exec.LookPath("unzip")
	if err != nil {
		t.Skip("unzip not on PATH (Debian package unzip)")
	}
	var buf bytes.Buffer
	if err := writeEncryptedZip(&buf, testEntries, "Pin1234", time.Now()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	zipPath := filepath.Join(dir, "kit.zip")
	if err := os.WriteFile(zipPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if b, err := exec.Command(unzip, "-q", "-P", "Pin1234", zipPath, "-d", out).CombinedOutput(); err != nil {
		t.Fatalf("unzip -P: %v\n%s", err, b)
	}
	for _, e := range testEntries {
		p := filepath.Join(out, e.Name)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(e.Name, "/") {
			continue
		}
		got, _ := os.ReadFile(p)
		if !bytes.Equal(got, e.Data) {
			t.Errorf("%s differs after unzip", e.Name)
		}
		if fi.Mode().Perm() != e.Mode.Perm() {
			t.Errorf("%s: mode %v, want %v", e.Name, fi.Mode().Perm(), e.Mode.Perm())
		}
	}
	if b, err := exec.Command(unzip, "-t", "-P", "Pin1234", zipPath).CombinedOutput(); err != nil {
		t.Fatalf("unzip -t: %v\n%s", err, b)
	}
	if b, err := exec.Command(unzip, "-t", "-P", "wrong", zipPath).CombinedOutput(); err == nil {
		t.Fatalf("unzip accepted a wrong password:\n%s", b)
	}
}
