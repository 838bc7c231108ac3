package launch

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flarekit/terraform-provider-flare/agent/agenttest"
)

// TestCheckImage: qcow2 images made by qemu-img with a backing file, an
// external data file or both are refused, naming the host path; a plain
// image (and its LUKS-in-qcow2 kind) passes; headers with the corrupt bit
// or unknown incompatible features are refused.
func TestCheckImage(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		agenttest.SkipOrFail(t, "qemu-img is missing (apt-get install qemu-utils)")
	}
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret.raw")
	os.WriteFile(secret, make([]byte, 1<<20), 0o600)
	img := func(name string, args ...string) string {
		p := filepath.Join(dir, name)
		a := append([]string{"create", "-q", "-f", "qcow2"}, args...)
		if out, err := exec.Command("qemu-img", append(a, p, "16M")...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %v: %v\n%s", a, err, out)
		}
		return p
	}
	check := func(p, format string) error {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		return CheckImage(f, filepath.Base(p), format)
	}
	for _, tc := range []struct {
		name string
		path string
		want []string // empty: accepted
	}{
		{"plain", img("plain.qcow2"), nil},
		{"version 2", img("v2.qcow2", "-o", "compat=0.10"), nil},
		{"zstd compression, extended L2", img("zstd.qcow2", "-o", "compression_type=zstd,extended_l2=on"), nil},
		{"backing file", img("backing.qcow2", "-b", secret, "-F", "raw"), []string{"backing file", secret}},
		{"backing file, version 2", img("backing2.qcow2", "-o", "compat=0.10", "-b", secret, "-F", "raw"), []string{"backing file", secret}},
		{"data file", img("data.qcow2", "-o", "data_file="+filepath.Join(dir, "target.raw")), []string{"data file", filepath.Join(dir, "target.raw")}},
		{"raw data file", img("rawdata.qcow2", "-o", "data_file="+filepath.Join(dir, "t2.raw")+",data_file_raw=on"), []string{"data file", "raw external data"}},
		{"backing and data file", img("both.qcow2", "-b", secret, "-F", "raw", "-o", "data_file="+filepath.Join(dir, "t3.raw")), []string{"backing file", "data file"}},
	} {
		err := check(tc.path, "qcow2")
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != nil && err == nil:
			t.Errorf("%s: accepted", tc.name)
		case tc.want != nil:
			if !errors.Is(err, ErrExternalReference) {
				t.Errorf("%s: %v is not ErrExternalReference", tc.name, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: %q does not name %q", tc.name, err, w)
				}
			}
			t.Logf("%s: %v", tc.name, err)
		}
	}
	// Header bits: corrupt, unknown incompatible feature.
	for _, tc := range []struct {
		name string
		bit  uint64
		want string
	}{{"corrupt", 1 << 1, "corrupt"}, {"unknown feature", 1 << 40, "unknown incompatible"}} {
		p := img(strings.ReplaceAll(tc.name, " ", "_") + ".qcow2")
		f, _ := os.OpenFile(p, os.O_RDWR, 0)
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], tc.bit)
		f.WriteAt(b[:], 72)
		f.Close()
		if err := check(p, "qcow2"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// Not qcow2 at all while launch.json says qcow2; raw is not probed.
	if err := check(secret, "qcow2"); err == nil || !strings.Contains(err.Error(), "not a qcow2 image") {
		t.Errorf("raw as qcow2: %v", err)
	}
	if err := check(secret, "raw"); err != nil {
		t.Errorf("raw: %v", err)
	}
	if err := check(secret, "vmdk"); err == nil {
		t.Error("vmdk accepted")
	}
}
