package measure

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/measure/measuretest"
)

// benchInputs writes the benchmark inputs to MEASURE_BENCH_DIR (so that
// scripts/measure-bench.py can time sev-snp-measure on the very same files)
// or to a temporary directory.
func benchInputs(b *testing.B) (dir, kernel string) {
	b.Helper()
	dir = os.Getenv("MEASURE_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	files := map[string][]byte{
		"OVMF.synthetic-amdsev.fd": measuretest.Firmware{Size: 2 << 20, Seed: 42}.Build(),
		"initrd.cpio":              cpioNewc(map[string]string{"init": "#!/bin/sh\nexec /bin/sh\n"}),
	}
	kernel = os.Getenv("MEASURE_KERNEL")
	if kernel == "" {
		if ks, _ := filepath.Glob("/boot/vmlinuz-*"); len(ks) > 0 {
			sort.Strings(ks)
			kernel = ks[len(ks)-1]
		}
	}
	if kernel == "" {
		// About the size of a Debian cloud kernel.
		kernel = filepath.Join(dir, "vmlinuz.synthetic")
		files["vmlinuz.synthetic"] = measuretest.Firmware{Size: 14 << 20, Seed: 1, NoFooter: true}.Build()
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return dir, kernel
}

// BenchmarkSNPLaunchDigest times whole computations from files, as the data
// source runs them. With MEASURE_BENCH_DIR set it also writes the cases to
// cases.json there for scripts/measure-bench.py, which times
// sev-snp-measure on the same files.
func BenchmarkSNPLaunchDigest(b *testing.B) {
	dir, kernel := benchInputs(b)
	debian := os.Getenv("MEASURE_DEBIAN_OVMF")
	if debian == "" {
		debian = debianOVMFDefault
	}
	cases := []struct {
		name string
		opts Options
	}{
		{"debian-ovmf/vcpus=4", Options{OVMFPath: debian, VCPUs: 4, VCPUType: "EPYC-Milan"}},
		{"debian-ovmf/vcpus=64", Options{OVMFPath: debian, VCPUs: 64, VCPUType: "EPYC-Milan"}},
		{"amdsev+kernel+initrd/vcpus=4", Options{
			OVMFPath:   filepath.Join(dir, "OVMF.synthetic-amdsev.fd"),
			KernelPath: kernel, InitrdPath: filepath.Join(dir, "initrd.cpio"),
			Cmdline: "console=ttyS0 root=/dev/vda1 ro", VCPUs: 4, VCPUType: "EPYC-Milan",
		}},
		// The same again with a Cache, as the data source runs: repeated
		// measurements of the same files (other vCPU counts or types).
		{"amdsev+kernel+initrd/vcpus=4/cached", Options{
			OVMFPath:   filepath.Join(dir, "OVMF.synthetic-amdsev.fd"),
			KernelPath: kernel, InitrdPath: filepath.Join(dir, "initrd.cpio"),
			Cmdline: "console=ttyS0 root=/dev/vda1 ro", VCPUs: 4, VCPUType: "EPYC-Milan",
			Cache: NewCache(0),
		}},
	}
	if os.Getenv("MEASURE_BENCH_DIR") != "" {
		// The manifest scripts/measure-bench.py replays with sev-snp-measure.
		type entry struct {
			Name     string `json:"name"`
			OVMF     string `json:"ovmf"`
			Kernel   string `json:"kernel,omitempty"`
			Initrd   string `json:"initrd,omitempty"`
			Cmdline  string `json:"cmdline,omitempty"`
			VCPUs    int    `json:"vcpus"`
			VCPUType string `json:"vcpu_type"`
		}
		var m []entry
		for _, c := range cases {
			o := c.opts
			m = append(m, entry{c.name, o.OVMFPath, o.KernelPath, o.InitrdPath, o.Cmdline, o.VCPUs, o.VCPUType})
		}
		j, _ := json.MarshalIndent(m, "", "  ")
		if err := os.WriteFile(filepath.Join(dir, "cases.json"), j, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			if _, err := os.Stat(c.opts.OVMFPath); err != nil {
				b.Skipf("%v (apt-get install ovmf)", err)
			}
			if c.opts.Cache != nil {
				// The inputs were just written: let the cache take them.
				defer func(w time.Duration) { racyWindow = w }(racyWindow)
				racyWindow = -time.Hour
			}
			if _, err := SNPLaunchDigest(c.opts); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := SNPLaunchDigest(c.opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
