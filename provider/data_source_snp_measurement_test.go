package provider

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/flarekit/terraform-provider-flare/internal/measure"
	"github.com/flarekit/terraform-provider-flare/internal/measure/measuretest"
)

// TestUnitSNPMeasurement runs flare_snp_measurement on synthetic firmware;
// internal/measure checks the digests themselves against sev-snp-measure.
func TestUnitSNPMeasurement(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	amdsev := write("OVMF.amdsev.fd", measuretest.Firmware{Size: 256 << 10, Seed: 3}.Build())
	ovmfX64 := write("OVMF.fd", measuretest.Firmware{Size: 256 << 10, Seed: 4,
		Sections: measuretest.OvmfX64Sections, NoHashesEntry: true}.Build())
	noMeta := write("OVMF_CODE_4M.fd", measuretest.Firmware{NoMetadata: true}.Build())
	kernel := write("vmlinuz", []byte("a kernel"))
	initrd := write("initrd.img", []byte("an initrd"))
	const cmdline = "console=ttyS0 root=/dev/vda1"

	want := func(o measure.Options) string {
		t.Helper()
		d, err := measure.SNPLaunchDigest(o)
		if err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(d[:])
	}
	direct := want(measure.Options{OVMFPath: amdsev, KernelPath: kernel, InitrdPath: initrd, Cmdline: cmdline,
		VCPUs: 4, VCPUType: "EPYC-Genoa"})
	debugSwap := want(measure.Options{OVMFPath: ovmfX64, VCPUs: 2, VCPUType: "EPYC-Milan", GuestFeatures: 0x21})
	gce := want(measure.Options{OVMFPath: ovmfX64, VCPUs: 2, VMM: measure.VMMGCE})

	ds := func(name string) string { return "data.flare_snp_measurement." + name }
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			// Errors first: the last step must be valid for the post-test destroy.
			{
				Config: fmt.Sprintf(`
data "flare_snp_measurement" "m" {
  ovmf      = %q
  kernel    = %q
  vcpus     = 1
  vcpu_type = "EPYC-v4"
}`, ovmfX64, kernel),
				ExpectError: regexp.MustCompile(`(?s)Cannot Compute SEV-SNP Measurement.*SNP_KERNEL_HASHES`),
			},
			{
				Config: fmt.Sprintf(`
data "flare_snp_measurement" "m" {
  ovmf      = %q
  vcpus     = 1
  vcpu_type = "EPYC-v4"
}`, noMeta),
				ExpectError: regexp.MustCompile(`(?s)no SEV metadata`),
			},
			{
				Config: fmt.Sprintf(`
data "flare_snp_measurement" "m" {
  ovmf      = %q
  vcpus     = 1
  vcpu_type = "EPYC-v4"
}`, filepath.Join(dir, "missing.fd")),
				ExpectError: regexp.MustCompile(`(?s)ovmf: cannot read OVMF`),
			},
			{
				Config: fmt.Sprintf(`
data "flare_snp_measurement" "m" {
  ovmf      = %q
  vcpus     = 1
  vcpu_type = "EPYC-Zen9"
}`, amdsev),
				ExpectError: regexp.MustCompile(`(?s)vcpu_type.*EPYC-Milan`),
			},
			{
				Config: fmt.Sprintf(`
data "flare_snp_measurement" "m" {
  ovmf  = %q
  vcpus = 1
}`, amdsev),
				ExpectError: regexp.MustCompile(`Missing vCPU Type`),
			},
			{
				Config: fmt.Sprintf(`
data "flare_snp_measurement" "m" {
  ovmf      = %q
  initrd    = %q
  vcpus     = 1
  vcpu_type = "EPYC-v4"
}`, amdsev, initrd),
				ExpectError: regexp.MustCompile(`(?s)kernel.*must be specified`),
			},
			{
				Config: fmt.Sprintf(`
data "flare_snp_measurement" "m" {
  ovmf           = %q
  vcpus          = 1
  vcpu_type      = "EPYC-v4"
  guest_features = 32
}`, amdsev),
				ExpectError: regexp.MustCompile(`(?s)Invalid Guest Features.*use 33`),
			},
			{
				Config: fmt.Sprintf(`
data "flare_snp_measurement" "m" {
  ovmf      = %q
  vcpus     = 0
  vcpu_type = "EPYC-v4"
}`, amdsev),
				ExpectError: regexp.MustCompile(`(?s)vcpus.*between 1 and 4096`),
			},
			{
				Config: fmt.Sprintf(`
data "flare_snp_measurement" "direct" {
  ovmf      = %[1]q
  kernel    = %[2]q
  initrd    = %[3]q
  cmdline   = %[4]q
  vcpus     = 4
  vcpu_type = "EPYC-Genoa"
}
data "flare_snp_measurement" "debug_swap" {
  ovmf           = %[5]q
  vcpus          = 2
  vcpu_type      = "EPYC-Milan"
  guest_features = 33
}
data "flare_snp_measurement" "gce" {
  ovmf     = %[5]q
  vcpus    = 2
  vmm_type = "gce"
}
`, amdsev, kernel, initrd, cmdline, ovmfX64),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(ds("direct"), tfjsonpath.New("measurement"), knownvalue.StringExact(direct)),
					statecheck.ExpectKnownValue(ds("direct"), tfjsonpath.New("measurement"), knownvalue.StringRegexp(regexp.MustCompile(`^[0-9a-f]{96}$`))),
					statecheck.ExpectKnownValue(ds("direct"), tfjsonpath.New("guest_features"), knownvalue.Int64Exact(1)),
					statecheck.ExpectKnownValue(ds("direct"), tfjsonpath.New("vmm_type"), knownvalue.StringExact("QEMU")),
					statecheck.ExpectKnownValue(ds("debug_swap"), tfjsonpath.New("measurement"), knownvalue.StringExact(debugSwap)),
					statecheck.ExpectKnownValue(ds("gce"), tfjsonpath.New("measurement"), knownvalue.StringExact(gce)),
				},
			},
		},
	})
}
