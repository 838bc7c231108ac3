package measure

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"testing/iotest"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/measure/measuretest"
)

func TestCache(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no caching without ctime")
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	opts := Options{
		OVMFPath:   write("OVMF.fd", measuretest.Firmware{Size: 256 << 10}.Build()),
		KernelPath: write("vmlinuz", []byte("kernel one")),
		InitrdPath: write("initrd", []byte("initrd")),
		Cmdline:    "quiet", VCPUs: 2, VCPUType: "EPYC-Milan",
	}
	uncached := digest(t, opts)

	// Files younger than racyWindow are never cached.
	c := NewCache(0)
	opts.Cache = c
	if digest(t, opts) != uncached || digest(t, opts) != uncached || c.Hits() != 0 {
		t.Fatalf("fresh files were cached: %d hits", c.Hits())
	}

	defer func(w time.Duration) { racyWindow = w }(racyWindow)
	racyWindow = -time.Hour // every file counts as old enough
	if digest(t, opts) != uncached {
		t.Fatal("first cached digest differs")
	}
	if digest(t, opts) != uncached || c.Hits() != 3 {
		t.Fatalf("second digest: %d hits, want 3 (OVMF, kernel, initrd)", c.Hits())
	}
	// Other vCPU settings reuse the file work.
	o4 := opts
	o4.VCPUs, o4.VCPUType = 4, "EPYC-Genoa"
	o4nc := o4
	o4nc.Cache = nil
	if digest(t, o4) != digest(t, o4nc) || c.Hits() != 6 {
		t.Fatalf("vcpus=4: %d hits", c.Hits())
	}

	// A rewrite with the same size changes ctime: a miss, and the new digest.
	time.Sleep(20 * time.Millisecond)
	write("vmlinuz", []byte("kernel two"))
	nc := opts
	nc.Cache = nil
	fresh := digest(t, nc)
	if fresh == uncached {
		t.Fatal("kernel change did not change the digest")
	}
	if got := digest(t, opts); got != fresh {
		t.Fatal("cache served a stale kernel hash")
	}
	// A replaced file (new inode) at the same path is a miss too.
	time.Sleep(20 * time.Millisecond)
	tmp := write("OVMF.new", measuretest.Firmware{Size: 256 << 10, Seed: 9}.Build())
	if err := os.Rename(tmp, opts.OVMFPath); err != nil {
		t.Fatal(err)
	}
	if digest(t, opts) != digest(t, nc) {
		t.Fatal("cache served a replaced OVMF")
	}

	// Eviction keeps the size bound.
	small := NewCache(1)
	opts.Cache = small
	digest(t, opts)
	if len(small.entries) != 1 || len(small.order) != 1 {
		t.Fatalf("cache of 1 holds %d", len(small.entries))
	}
}

func TestHashPipelined(t *testing.T) {
	for _, n := range []int{0, 1, 1 << 20, 1<<20 + 1, 3<<20 + 12345} {
		data := measuretest.Firmware{Size: (n + 4095) &^ 4095, NoFooter: true}.Build()[:n]
		h := sha256.New()
		if err := hashPipelined(h, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
			t.Errorf("%d bytes: wrong digest", n)
		}
	}
	boom := errors.New("disk on fire")
	r := io.MultiReader(bytes.NewReader(make([]byte, 3<<20)), iotest.ErrReader(boom))
	if err := hashPipelined(sha256.New(), r); !errors.Is(err, boom) {
		t.Fatalf("error %v, want %v", err, boom)
	}
}
