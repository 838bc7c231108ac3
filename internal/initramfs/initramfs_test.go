package initramfs

import (
	"bytes"
	"compress/gzip"
	"io"
	"os/exec"
	"strings"
	"testing"
)

func TestWrite(t *testing.T) {
	var b bytes.Buffer
	err := Write(&b, []Entry{
		{Name: "init", Mode: 0o755, Data: []byte("#!/bin/sh\n")},
		{Name: "/lib/modules/x.ko", Mode: 0o644, Data: []byte("12345")},
		{Name: "bin/sh", Link: "busybox"},
	})
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&b)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(zr)
	if !bytes.HasPrefix(raw, []byte("070701")) || !bytes.Contains(raw, []byte("TRAILER!!!")) || len(raw)%4 != 0 {
		t.Fatalf("not a newc archive (%d bytes)", len(raw))
	}
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("no cpio tool to list the archive")
	}
	cmd := exec.Command(cpio, "-t", "-v")
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	for _, want := range []string{"-rwxr-xr-x", " init", "drwxr-xr-x", " lib/modules", " lib/modules/x.ko", "bin/sh -> busybox"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("cpio listing lacks %q:\n%s", want, out)
		}
	}
}
