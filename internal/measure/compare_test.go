package measure

// Byte-for-byte comparison with the reference tool, virtee's sev-snp-measure
// (PyPI sev-snp-measure). It runs only when SEV_SNP_MEASURE names its CLI;
// `make measure-test` installs everything and sets it.
//
// Inputs: Debian's OVMF.fd (package ovmf; SEV metadata but no kernel hashes
// page), a synthetic AmdSev-like image, Debian's OVMF.fd patched to carry a
// kernel hashes page, a Debian kernel (/boot/vmlinuz-*, or MEASURE_KERNEL)
// and an initrd made here.

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/flarekit/terraform-provider-flare/internal/measure/measuretest"
)

const debianOVMFDefault = "/usr/share/ovmf/OVMF.fd"

func referenceCLI(t *testing.T) string {
	t.Helper()
	cli := os.Getenv("SEV_SNP_MEASURE")
	if cli == "" {
		t.Skip("SEV_SNP_MEASURE is not set: point it at a sev-snp-measure executable " +
			"(`make measure-test` installs one in build/venv) to compare with the reference tool")
	}
	if _, err := exec.LookPath(cli); err != nil {
		t.Fatalf("SEV_SNP_MEASURE=%s is not executable: %v", cli, err)
	}
	return cli
}

// runCLI runs sev-snp-measure and returns the printed digest, or the error
// text when it fails.
func runCLI(t *testing.T, cli, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(cli, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// cpioNewc builds a small initrd: a newc cpio archive with an init script.
func cpioNewc(files map[string]string) []byte {
	var b bytes.Buffer
	pad := func() {
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	ino := 1
	add := func(name string, mode uint32, data string) {
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, mode, 0, 0, 1, 1700000000, len(data), 0, 0, 0, 0, len(name)+1, 0)
		ino++
		b.WriteString(name)
		b.WriteByte(0)
		pad()
		b.WriteString(data)
		pad()
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	add("etc", 0o40755, "")
	for _, n := range names {
		add(n, 0o100755, files[n])
	}
	add("TRAILER!!!", 0, "")
	for b.Len()%512 != 0 {
		b.WriteByte(0)
	}
	return b.Bytes()
}

// patchDebianWithHashes turns Debian's OVMF.fd into an image with an
// SNP_KERNEL_HASHES page: its last metadata section (0x80f000, 0x11000
// SEC_MEM) becomes a one-page hashes section and the hashes table entry
// points into it at 0x80fc00. It cannot boot; both tools only read it.
func patchDebianWithHashes(t *testing.T, img []byte) []byte {
	t.Helper()
	img = bytes.Clone(img)
	o, err := ParseOVMF(img)
	if err != nil {
		t.Fatal(err)
	}
	// Table entries are sub-slices of img: writing them patches the image.
	ht, ok := o.table[guidSevHashTable]
	if !ok || len(ht) < 8 {
		t.Fatalf("Debian OVMF.fd has no hashes table entry to patch")
	}
	binary.LittleEndian.PutUint32(ht, 0x80fc00)
	binary.LittleEndian.PutUint32(ht[4:], 0x400)
	meta := o.table[guidSevMetadata]
	start := len(img) - int(binary.LittleEndian.Uint32(meta))
	n := int(binary.LittleEndian.Uint32(img[start+12:]))
	last := img[start+16+12*(n-1):]
	if SectionType(binary.LittleEndian.Uint32(last[8:])) != SectionSNPSecMem {
		t.Fatalf("Debian OVMF.fd's last section is not SNP_SEC_MEM: layout changed")
	}
	binary.LittleEndian.PutUint32(last[4:], 0x1000)
	binary.LittleEndian.PutUint32(last[8:], uint32(SectionSNPKernelHashes))
	return img
}

type compareInputs struct {
	dir                     string
	debian, debianKH, synth string // firmware paths; debian may be ""
	kernel, initrd          string
	kernelIsReal            bool
}

func makeCompareInputs(t *testing.T) compareInputs {
	t.Helper()
	in := compareInputs{dir: t.TempDir()}
	write := func(name string, b []byte) string {
		p := filepath.Join(in.dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	deb := os.Getenv("MEASURE_DEBIAN_OVMF")
	if deb == "" {
		deb = debianOVMFDefault
	}
	if img, err := os.ReadFile(deb); err == nil {
		in.debian = deb
		in.debianKH = write("OVMF.debian-kernel-hashes.fd", patchDebianWithHashes(t, img))
	} else {
		t.Logf("no Debian OVMF at %s (apt-get install ovmf): its cases are skipped", deb)
	}
	in.synth = write("OVMF.synthetic-amdsev.fd", measuretest.Firmware{Size: 2 << 20, Seed: 42}.Build())

	in.kernel = os.Getenv("MEASURE_KERNEL")
	if in.kernel == "" {
		if ks, _ := filepath.Glob("/boot/vmlinuz-*"); len(ks) > 0 {
			sort.Strings(ks)
			in.kernel = ks[len(ks)-1]
		}
	}
	if in.kernel != "" {
		in.kernelIsReal = true
	} else {
		t.Logf("no kernel in /boot (apt-get install linux-image-cloud-amd64) and no MEASURE_KERNEL: using a synthetic one")
		in.kernel = write("vmlinuz", bytes.Repeat([]byte("not a bzImage "), 300000))
	}
	in.initrd = write("initrd.cpio", cpioNewc(map[string]string{
		"init":         "#!/bin/sh\necho flare measured boot\nexec /bin/sh\n",
		"etc/hostname": "flare-cvm\n",
	}))
	return in
}

type compareCase struct {
	name     string
	ovmf     string
	kernel   bool
	initrd   bool
	cmdline  string
	vcpus    int
	vtype    string
	features uint64
	vmm      VMMType
}

func (c compareCase) args(in compareInputs) []string {
	a := []string{"--mode", "snp", "--ovmf", c.ovmf, "--vcpus", fmt.Sprint(c.vcpus)}
	if c.vtype != "" {
		a = append(a, "--vcpu-type", c.vtype)
	}
	if c.features != 0 {
		a = append(a, "--guest-features", fmt.Sprintf("0x%x", c.features))
	}
	if c.vmm != "" {
		a = append(a, "--vmm-type", string(c.vmm))
	}
	if c.kernel {
		a = append(a, "--kernel", in.kernel)
		if c.initrd {
			a = append(a, "--initrd", in.initrd)
		}
		if c.cmdline != "" {
			a = append(a, "--append", c.cmdline)
		}
	}
	return a
}

func (c compareCase) options(in compareInputs) Options {
	o := Options{OVMFPath: c.ovmf, VCPUs: c.vcpus, VCPUType: c.vtype, GuestFeatures: c.features, VMM: c.vmm}
	if c.kernel {
		o.KernelPath = in.kernel
		if c.initrd {
			o.InitrdPath = in.initrd
		}
		o.Cmdline = c.cmdline
	}
	return o
}

func compareCases(in compareInputs) []compareCase {
	const cmdline = "console=ttyS0 root=/dev/vda1 ro loglevel=7"
	var cs []compareCase
	add := func(c compareCase) {
		if c.ovmf == "" {
			return
		}
		c.name = fmt.Sprintf("%s/vcpus=%d", filepath.Base(c.ovmf), c.vcpus)
		if c.vtype != "" {
			c.name += "/" + c.vtype
		}
		if c.kernel {
			c.name += "/kernel"
			if c.initrd {
				c.name += "+initrd"
			}
			if c.cmdline != "" {
				c.name += "+cmdline"
			}
		}
		if c.features != 0 {
			c.name += fmt.Sprintf("/features=0x%x", c.features)
		}
		if c.vmm != "" {
			c.name += "/" + string(c.vmm)
		}
		cs = append(cs, c)
	}
	for _, vcpus := range []int{1, 2, 4, 16} {
		for _, vt := range []string{"EPYC-v4", "EPYC-Milan", "EPYC-Genoa"} {
			add(compareCase{ovmf: in.debian, vcpus: vcpus, vtype: vt})
			add(compareCase{ovmf: in.synth, vcpus: vcpus, vtype: vt})
			add(compareCase{ovmf: in.synth, vcpus: vcpus, vtype: vt, kernel: true, initrd: true, cmdline: cmdline})
			add(compareCase{ovmf: in.debianKH, vcpus: vcpus, vtype: vt, kernel: true, initrd: true, cmdline: cmdline})
		}
	}
	// Every vCPU type sev-snp-measure knows.
	for _, vt := range VCPUTypes() {
		add(compareCase{ovmf: in.debian, vcpus: 3, vtype: vt})
	}
	// Kernel without initrd or command line; DebugSwap; other VMMs.
	add(compareCase{ovmf: in.synth, vcpus: 2, vtype: "EPYC-Milan", kernel: true})
	add(compareCase{ovmf: in.debianKH, vcpus: 1, vtype: "EPYC-Genoa", kernel: true, cmdline: "quiet"})
	add(compareCase{ovmf: in.debian, vcpus: 4, vtype: "EPYC-Milan", features: 0x21})
	add(compareCase{ovmf: in.synth, vcpus: 4, vtype: "EPYC-Genoa", features: 0x21, kernel: true, initrd: true, cmdline: cmdline})
	for _, vmm := range []VMMType{VMMEC2, VMMGCE} {
		add(compareCase{ovmf: in.debian, vcpus: 2, vmm: vmm})
		add(compareCase{ovmf: in.synth, vcpus: 4, vmm: vmm, kernel: true, initrd: true, cmdline: cmdline})
	}
	return cs
}

func TestCompareWithSevSnpMeasure(t *testing.T) {
	cli := referenceCLI(t)
	in := makeCompareInputs(t)
	if out, err := runCLI(t, cli, in.dir, "--version"); err == nil {
		t.Logf("reference: %s; kernel %s (real Debian kernel: %v)", out, in.kernel, in.kernelIsReal)
	}
	for _, c := range compareCases(in) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			want, err := runCLI(t, cli, in.dir, c.args(in)...)
			if err != nil {
				t.Fatalf("sev-snp-measure %s: %v", strings.Join(c.args(in), " "), err)
			}
			got, err := SNPLaunchDigest(c.options(in))
			if err != nil {
				t.Fatalf("SNPLaunchDigest: %v", err)
			}
			if hex.EncodeToString(got[:]) != want {
				t.Fatalf("digest %x\nsev-snp-measure %s\n(args: %s)", got, want, strings.Join(c.args(in), " "))
			}
		})
	}
}

// Both tools refuse a kernel with a firmware that has no kernel hashes page.
func TestCompareKernelNeedsHashesPage(t *testing.T) {
	cli := referenceCLI(t)
	in := makeCompareInputs(t)
	if in.debian == "" {
		t.Skip("no Debian OVMF.fd")
	}
	c := compareCase{ovmf: in.debian, vcpus: 1, vtype: "EPYC-v4", kernel: true}
	if out, err := runCLI(t, cli, in.dir, c.args(in)...); err == nil || !strings.Contains(err.Error(), "SNP_KERNEL_HASHES") {
		t.Fatalf("sev-snp-measure gave %q, %v; want its SNP_KERNEL_HASHES error", out, err)
	}
	if _, err := SNPLaunchDigest(c.options(in)); err == nil || !strings.Contains(err.Error(), "SNP_KERNEL_HASHES") {
		t.Fatalf("SNPLaunchDigest: %v", err)
	}
}

// The VMSA pages themselves, from --dump-vmsa: a mismatch here says which
// register is wrong.
func TestCompareVMSAPages(t *testing.T) {
	cli := referenceCLI(t)
	in := makeCompareInputs(t)
	o, err := ParseOVMF(mustRead(t, in.synth))
	if err != nil {
		t.Fatal(err)
	}
	eip, _ := o.ResetEIP()
	for _, vmm := range []VMMType{VMMQEMU, VMMEC2, VMMGCE} {
		dir := t.TempDir()
		c := compareCase{ovmf: in.synth, vcpus: 2, vtype: "EPYC-Milan", features: 0x21, vmm: vmm}
		if _, err := runCLI(t, cli, dir, append(c.args(in), "--dump-vmsa")...); err != nil {
			t.Fatal(err)
		}
		for i, e := range []uint32{bspEIP, eip} {
			want := mustRead(t, filepath.Join(dir, fmt.Sprintf("vmsa%d.bin", i)))
			got := buildVMSA(e, 0x21, 0xa00f11, vmm)
			for off := range want {
				if got[off] != want[off] {
					t.Errorf("%s vCPU %d: VMSA byte 0x%x is 0x%02x, sev-snp-measure has 0x%02x", vmm, i, off, got[off], want[off])
				}
			}
		}
	}
}

// snp:ovmf-hash mode and starting from a precomputed OVMF hash.
func TestCompareOVMFHash(t *testing.T) {
	cli := referenceCLI(t)
	in := makeCompareInputs(t)
	for _, fw := range []string{in.debian, in.synth} {
		if fw == "" {
			continue
		}
		want, err := runCLI(t, cli, in.dir, "--mode", "snp:ovmf-hash", "--ovmf", fw)
		if err != nil {
			t.Fatal(err)
		}
		got, err := SNPOVMFHash(mustRead(t, fw))
		if err != nil || hex.EncodeToString(got[:]) != want {
			t.Fatalf("%s: %x %v, sev-snp-measure %s", fw, got, err, want)
		}
		// Seeding with a foreign hash: only the metadata of fw is read.
		seed := strings.Repeat("ab", 48)
		want, err = runCLI(t, cli, in.dir, "--mode", "snp", "--ovmf", fw, "--vcpus", "4", "--vcpu-type", "EPYC-Genoa", "--snp-ovmf-hash", seed)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := hex.DecodeString(seed)
		d, err := SNPLaunchDigest(Options{OVMFPath: fw, OVMFHash: s, VCPUs: 4, VCPUType: "EPYC-Genoa"})
		if err != nil || hex.EncodeToString(d[:]) != want {
			t.Fatalf("%s seeded: %x %v, sev-snp-measure %s", fw, d, err, want)
		}
	}
}

// Where this package is deliberately stricter: Debian's split
// OVMF_CODE_4M.fd has no SEV metadata. sev-snp-measure still prints a
// digest, which no SNP guest can report; SNPLaunchDigest refuses.
func TestCompareNoMetadataDivergence(t *testing.T) {
	cli := referenceCLI(t)
	const fw = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	if _, err := os.Stat(fw); err != nil {
		t.Skip(fw + " not installed")
	}
	out, err := runCLI(t, cli, t.TempDir(), "--mode", "snp", "--ovmf", fw, "--vcpus", "1", "--vcpu-type", "EPYC-v4")
	t.Logf("sev-snp-measure on %s: %q %v", fw, out, err)
	if _, err := SNPLaunchDigest(Options{OVMFPath: fw, VCPUs: 1, VCPUType: "EPYC-v4"}); err == nil || !strings.Contains(err.Error(), "no SEV metadata") {
		t.Fatalf("SNPLaunchDigest: %v, want the no-metadata error", err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
