package cvm

import (
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"testing"

	"github.com/flarekit/terraform-provider-flare/internal/guestconfig"
	"github.com/flarekit/terraform-provider-flare/internal/measure"
	"github.com/flarekit/terraform-provider-flare/internal/measure/measuretest"
)

// benchGuest is the real guest kernel (make guest-kernel) and flare-init
// (make flare-init) when built, else stand-ins of the same kind.
func benchGuest(b *testing.B) Config {
	_, file, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(file), "..", "..")
	ks, _ := filepath.Glob(filepath.Join(repo, "build", "guest-kernel", "boot", "vmlinuz-*"))
	sort.Strings(ks)
	init := filepath.Join(repo, "build", "bin", "flare-init")
	if len(ks) == 0 || func() bool { _, err := os.Stat(init); return err != nil }() {
		b.Skip("needs make guest-kernel flare-init")
	}
	return Config{Role: RoleClient, Kernel: ks[len(ks)-1], GuestInit: init, EncryptRoot: true, VCPUs: 2,
		KeyRelease: &guestconfig.KeyRelease{URL: "https://10.0.2.2:8999", CACertPEM: "-----BEGIN CERTIFICATE-----\n"}}
}

// BenchmarkOwnInitrd: building a kit's own initrd (flare-init, the guest
// config, the kernel modules with their dependencies) in memory.
func BenchmarkOwnInitrd(b *testing.B) {
	cfg := benchGuest(b)
	var size int
	for b.Loop() {
		bytes, _, err := cfg.OwnInitrd("site-1")
		if err != nil {
			b.Fatal(err)
		}
		size = len(bytes)
	}
	b.ReportMetric(float64(size)/(1<<20), "MiB")
}

// BenchmarkPlanMeasurement: what flare_cvm_kit does at plan time for a kit
// with its own initrd: build it (cached by content on disk) and compute
// the SEV-SNP launch digest over firmware, kernel, initrd and command line
// (no cache between iterations).
func BenchmarkPlanMeasurement(b *testing.B) {
	cfg := benchGuest(b)
	dir := b.TempDir()
	fw := measuretest.Firmware{Size: 2 << 20, Sections: measuretest.AmdSevSections, HashesGPA: 0x810000, HashesSize: 0x1000}
	cfg.Firmware = filepath.Join(dir, "OVMF.fd")
	os.WriteFile(cfg.Firmware, fw.Build(), 0o644)
	for b.Loop() {
		c, err := cfg.WithOwnInitrd("site-1", filepath.Join(dir, "cache"))
		if err != nil {
			b.Fatal(err)
		}
		in := c.MeasureInput()
		if _, err := measure.SNPLaunchDigest(measure.Options{OVMFPath: in.Firmware, KernelPath: in.Kernel, InitrdPath: in.Initrd,
			Cmdline: in.Cmdline, VCPUs: in.VCPUs, VCPUType: in.VCPUType, GuestFeatures: in.GuestFeatures}); err != nil {
			b.Fatal(err)
		}
	}
}
