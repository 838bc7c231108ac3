package measure

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flarekit/terraform-provider-flare/internal/measure/measuretest"
)

func TestGUIDByteOrder(t *testing.T) {
	// The footer GUID as it sits in every OVMF image.
	want, _ := hex.DecodeString("de82b596b21ff745baeaa366c55a082d")
	if !bytes.Equal(guidFooterTable[:], want) {
		t.Fatalf("footer GUID bytes %x, want %x", guidFooterTable[:], want)
	}
	if got := guidFooterTable.String(); got != "96b582de-1fb2-45f7-baea-a366c55a082d" {
		t.Fatalf("String() = %s", got)
	}
}

func TestParseOVMFSynthetic(t *testing.T) {
	img := measuretest.Firmware{Size: 128 << 10}.Build()
	o, err := ParseOVMF(img)
	if err != nil {
		t.Fatal(err)
	}
	if !o.HasFooterTable() || !o.HasMetadata() {
		t.Fatalf("footer %v metadata %v", o.HasFooterTable(), o.HasMetadata())
	}
	if got, want := o.GPA(), uint64(0x100000000-128<<10); got != want {
		t.Errorf("GPA 0x%x, want 0x%x", got, want)
	}
	if eip, ok := o.ResetEIP(); !ok || eip != 0x80b004 {
		t.Errorf("reset EIP 0x%x %v", eip, ok)
	}
	if gpa, size, ok := o.HashesTable(); !ok || gpa != 0x810c00 || size != 0x400 {
		t.Errorf("hashes table 0x%x/0x%x %v", gpa, size, ok)
	}
	secs := o.Sections()
	if len(secs) != len(measuretest.AmdSevSections) {
		t.Fatalf("%d sections, want %d", len(secs), len(measuretest.AmdSevSections))
	}
	for i, s := range secs {
		if w := measuretest.AmdSevSections[i]; s != (Section{w.GPA, w.Size, SectionType(w.Type)}) {
			t.Errorf("section %d = %+v, want %+v", i, s, measuretest.AmdSevSections[i])
		}
	}
	if !o.HasSection(SectionSNPKernelHashes) || o.HasSection(SectionType(9)) {
		t.Error("HasSection")
	}
	if SectionSNPKernelHashes.String() != "SNP_KERNEL_HASHES" {
		t.Error(SectionSNPKernelHashes.String())
	}

	// Without a footer: parses, but has nothing.
	o, err = ParseOVMF(measuretest.Firmware{NoFooter: true}.Build())
	if err != nil || o.HasFooterTable() || o.HasMetadata() {
		t.Fatalf("no footer: %v %v %v", err, o.HasFooterTable(), o.HasMetadata())
	}
}

func TestParseOVMFDuplicateEntryFirstInFileWins(t *testing.T) {
	img := measuretest.Firmware{}.Build()
	o, err := ParseOVMF(img)
	if err != nil {
		t.Fatal(err)
	}
	// Grow the table by one reset-block entry in front of it; walking
	// backwards it is read last and wins, as in sev-snp-measure's dict.
	footerAt := len(img) - 50
	tableSize := int(binary.LittleEndian.Uint16(img[footerAt:])) - 18
	start := footerAt - tableSize
	dup := append(binary.LittleEndian.AppendUint32(nil, 0x12345678), 22, 0)
	dup = append(dup, guidSevESReset[:]...)
	copy(img[start-len(dup):], dup)
	binary.LittleEndian.PutUint16(img[footerAt:], uint16(tableSize+len(dup)+18))
	if o, err = ParseOVMF(img); err != nil {
		t.Fatal(err)
	}
	if eip, _ := o.ResetEIP(); eip != 0x12345678 {
		t.Fatalf("reset EIP 0x%x, want the entry earlier in the file", eip)
	}
}

func TestCPUSig(t *testing.T) {
	// The values sev-snp-measure's own tests pin.
	if got := CPUSig(14, 1, 2); got != 0x0e12 {
		t.Errorf("CPUSig(14,1,2) = 0x%x", got)
	}
	if got := CPUSig(23, 1, 2); got != 0x800f12 {
		t.Errorf("CPUSig(23,1,2) = 0x%x", got)
	}
	want := map[string]uint32{
		"EPYC": 0x800f12, "EPYC-v4": 0x800f12, "EPYC-IBPB": 0x800f12, "EPYC-Rome": 0x830f10,
		"EPYC-Rome-v3": 0x830f10, "EPYC-Milan": 0xa00f11, "EPYC-Milan-v2": 0xa00f11,
		"EPYC-Genoa": 0xa10f10, "EPYC-Genoa-v1": 0xa10f10, "EPYC-Turin": 0xb00f00,
	}
	for name, sig := range want {
		if got, err := VCPUSignature(name); err != nil || got != sig {
			t.Errorf("%s: 0x%x %v, want 0x%x", name, got, err, sig)
		}
	}
	if len(VCPUTypes()) != 16 {
		t.Errorf("%d types, want sev-snp-measure's 16", len(VCPUTypes()))
	}
	if _, err := VCPUSignature("epyc-milan"); err == nil || !strings.Contains(err.Error(), `"EPYC-Milan"`) {
		t.Errorf("case hint missing: %v", err)
	}
	if _, err := VCPUSignature("Skylake"); err == nil || !strings.Contains(err.Error(), "EPYC-Genoa") {
		t.Errorf("list missing: %v", err)
	}
}

func TestHashesTable(t *testing.T) {
	empty := sha256.Sum256(nil)
	tbl := SEVHashesTable(empty, empty, CmdlineHash("console=ttyS0 loglevel=7"))
	// The first bytes of QEMU's table for /dev/null kernel and initrd
	// with this command line (research notes, section 6).
	if got := hex.EncodeToString(tbl[:21]); got != "06d63894224fc94cb479a793d411fd21a800d82dd0" {
		t.Fatalf("table starts %s", got)
	}
	if binary.LittleEndian.Uint16(tbl[16:]) != 168 {
		t.Error("header length")
	}
	for i, g := range []guid{guidHashCmdline, guidHashInitrd, guidHashKernel} {
		e := tbl[18+50*i:]
		if !bytes.Equal(e[:16], g[:]) || binary.LittleEndian.Uint16(e[16:]) != 50 {
			t.Errorf("entry %d header %x", i, e[:18])
		}
	}
	if !bytes.Equal(tbl[168:], make([]byte, 8)) {
		t.Error("padding not zero")
	}
	if CmdlineHash("") != sha256.Sum256([]byte{0}) {
		t.Error("empty cmdline must hash a lone NUL")
	}
	if CmdlineHash("a b") != sha256.Sum256([]byte("a b\x00")) {
		t.Error("cmdline must hash with its NUL")
	}
	page := hashesPage(&tbl, 0xc00)
	if len(page) != 4096 || !bytes.Equal(page[0xc00:0xc00+176], tbl[:]) ||
		!bytes.Equal(page[:0xc00], make([]byte, 0xc00)) || !bytes.Equal(page[0xc00+176:], make([]byte, 4096-0xc00-176)) {
		t.Error("hashes page layout")
	}
}

func TestVMSA(t *testing.T) {
	u16 := func(p *[4096]byte, off int) uint16 { return binary.LittleEndian.Uint16(p[off:]) }
	u64 := func(p *[4096]byte, off int) uint64 { return binary.LittleEndian.Uint64(p[off:]) }
	bsp := buildVMSA(bspEIP, 0x21, 0xa00f11, VMMQEMU)
	if u16(bsp, vmsaCS) != 0xf000 || u16(bsp, vmsaCS+2) != 0x9b || u64(bsp, vmsaCS+8) != 0xffff0000 || u64(bsp, vmsaRIP) != 0xfff0 {
		t.Error("BSP CS:RIP")
	}
	if u64(bsp, vmsaRDX) != 0xa00f11 || u64(bsp, vmsaSEVFeatures) != 0x21 || u64(bsp, vmsaGPAT) != 0x0007040600070406 {
		t.Error("BSP RDX/SEV_FEATURES/G_PAT")
	}
	if binary.LittleEndian.Uint32(bsp[vmsaMXCSR:]) != 0x1f80 || u16(bsp, vmsaX87FCW) != 0x37f || u64(bsp, vmsaXCR0) != 1 || u64(bsp, vmsaEFER) != 0x1000 {
		t.Error("BSP MXCSR/FCW/XCR0/EFER")
	}
	ap := buildVMSA(0x80b004, 1, 0x800f12, VMMQEMU)
	if u64(ap, vmsaCS+8) != 0x800000 || u64(ap, vmsaRIP) != 0xb004 {
		t.Error("AP CS base/RIP")
	}
	// Only CS base and RIP differ between BSP and AP.
	a, b := buildVMSA(bspEIP, 1, 1, VMMQEMU), buildVMSA(0x80b004, 1, 1, VMMQEMU)
	for i := range a {
		if a[i] != b[i] && !(i >= vmsaCS+8 && i < vmsaCS+16) && !(i >= vmsaRIP && i < vmsaRIP+8) {
			t.Errorf("BSP and AP differ at 0x%x", i)
		}
	}
	ec2 := buildVMSA(bspEIP, 1, 0xa00f11, VMMEC2)
	if u16(ec2, vmsaCS+2) != 0x9a || u16(ec2, vmsaSS+2) != 0x92 || u16(ec2, vmsaTR+2) != 0x83 || u64(ec2, vmsaRDX) != 0x600 || u16(ec2, vmsaX87FCW) != 0 {
		t.Error("EC2 BSP")
	}
	if u16(buildVMSA(0x80b004, 1, 0, VMMEC2), vmsaCS+2) != 0x9b {
		t.Error("EC2 AP CS attrib")
	}
	gce := buildVMSA(bspEIP, 1, 0xa00f11, VMMGCE)
	if u64(gce, vmsaGPAT) != 0x70106 || u64(gce, vmsaRDX) != 0x600 || binary.LittleEndian.Uint32(gce[vmsaMXCSR:]) != 0 || u16(gce, vmsaTR+2) != 0x8b {
		t.Error("GCE")
	}
}

// reference is a deliberately plain, sequential rendering of the algorithm
// for the synthetic image: every PAGE_INFO written out in full.
func reference(t *testing.T, img []byte, kernel, initrd []byte, cmdline string, vcpus int, sig uint32, features uint64, vmm VMMType) [48]byte {
	t.Helper()
	var ld [48]byte
	add := func(typ byte, gpa uint64, contents []byte) {
		var rec bytes.Buffer
		rec.Write(ld[:])
		rec.Write(contents)
		binary.Write(&rec, binary.LittleEndian, uint16(0x70))
		rec.Write([]byte{typ, 0, 0, 0, 0, 0})
		binary.Write(&rec, binary.LittleEndian, gpa)
		if rec.Len() != 0x70 {
			t.Fatalf("PAGE_INFO is %d bytes", rec.Len())
		}
		ld = sha512.Sum384(rec.Bytes())
	}
	zeros := make([]byte, 48)
	base := uint64(1<<32) - uint64(len(img))
	for off := 0; off < len(img); off += 4096 {
		h := sha512.Sum384(img[off : off+4096])
		add(1, base+uint64(off), h[:])
	}
	o, err := ParseOVMF(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range o.Sections() {
		switch s.Type {
		case SectionSNPSecMem:
			for off := uint32(0); off < s.Size; off += 4096 {
				typ := byte(3)
				if vmm == VMMGCE {
					typ = 4
				}
				add(typ, uint64(s.GPA+off), zeros)
			}
		case SectionSNPSecrets:
			add(5, uint64(s.GPA), zeros)
		case SectionCPUID:
			if vmm != VMMEC2 {
				add(6, uint64(s.GPA), zeros)
			}
		case SectionSVSMCAA:
			for off := uint32(0); off < s.Size; off += 4096 {
				add(3, uint64(s.GPA+off), zeros)
			}
		case SectionSNPKernelHashes:
			if kernel == nil {
				for off := uint32(0); off < s.Size; off += 4096 {
					add(3, uint64(s.GPA+off), zeros)
				}
				continue
			}
			tbl := SEVHashesTable(sha256.Sum256(kernel), sha256.Sum256(initrd), sha256.Sum256(append([]byte(cmdline), 0)))
			gpa, _, _ := o.HashesTable()
			page := make([]byte, 4096)
			copy(page[gpa&0xfff:], tbl[:])
			h := sha512.Sum384(page)
			add(1, uint64(s.GPA), h[:])
		}
	}
	if vmm == VMMEC2 {
		for _, s := range o.Sections() {
			if s.Type == SectionCPUID {
				add(6, uint64(s.GPA), zeros)
			}
		}
	}
	eip, _ := o.ResetEIP()
	for i := 0; i < vcpus; i++ {
		e := uint32(bspEIP)
		if i > 0 {
			e = eip
		}
		h := sha512.Sum384(buildVMSA(e, features, sig, vmm)[:])
		add(2, 0xFFFFFFFFF000, h[:])
	}
	return ld
}

func TestDigestMatchesReference(t *testing.T) {
	// 2 MiB: big enough that the page hashing runs in parallel chunks.
	img := measuretest.Firmware{Size: 2 << 20, Seed: 7}.Build()
	kernel := bytes.Repeat([]byte("bzImage"), 10000)
	initrd := []byte("070701 cpio")
	for _, vmm := range []VMMType{VMMQEMU, VMMEC2, VMMGCE} {
		for _, vcpus := range []int{1, 2, 5} {
			for _, withKernel := range []bool{false, true} {
				opts := Options{OVMF: img, VCPUs: vcpus, VCPUType: "EPYC-Milan", GuestFeatures: 0x21, VMM: vmm}
				var k, i []byte
				cmd := ""
				if withKernel {
					k, i, cmd = kernel, initrd, "console=ttyS0"
					opts.Kernel, opts.Initrd, opts.Cmdline = k, i, cmd
				}
				got, err := SNPLaunchDigest(opts)
				if err != nil {
					t.Fatal(err)
				}
				want := reference(t, img, k, i, cmd, vcpus, 0xa00f11, 0x21, vmm)
				if got != want {
					t.Errorf("%s vcpus=%d kernel=%v: %x, reference %x", vmm, vcpus, withKernel, got, want)
				}
			}
		}
	}
}

func digest(t *testing.T, o Options) [48]byte {
	t.Helper()
	d, err := SNPLaunchDigest(o)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDigestInvariants(t *testing.T) {
	img := measuretest.Firmware{}.Build()
	base := Options{OVMF: img, VCPUs: 2, VCPUType: "EPYC-v4"}
	with := func(f func(*Options)) Options { o := base; f(&o); return o }
	d0 := digest(t, base)

	same := map[string]Options{
		"EPYC equals EPYC-v4 (same signature)":  with(func(o *Options) { o.VCPUType = "EPYC" }),
		"explicit signature equals the type":    with(func(o *Options) { o.VCPUType, o.VCPUSig = "", CPUSig(23, 1, 2) }),
		"guest features 0 means 0x1":            with(func(o *Options) { o.GuestFeatures = 1 }),
		"empty VMM means QEMU":                  with(func(o *Options) { o.VMM = VMMQEMU }),
		"OVMF precomputed hash":                 with(func(o *Options) { h, _ := SNPOVMFHash(img); o.OVMFHash = h[:] }),
		"hashes area GPA unused without kernel": {OVMF: measuretest.Firmware{HashesGPA: 0x810000}.Build(), VCPUs: 2, VCPUType: "EPYC-v4"},
	}
	// The last case changes bytes of the image: compare against it with the
	// page chain taken out.
	for name, o := range same {
		if name == "hashes area GPA unused without kernel" {
			h0, _ := SNPOVMFHash(img)
			o.OVMFHash = h0[:]
			if digest(t, o) != d0 {
				t.Errorf("%s: digest changed", name)
			}
			continue
		}
		if digest(t, o) != d0 {
			t.Errorf("%s: digest changed", name)
		}
	}

	differ := map[string]Options{
		"vCPU count":       with(func(o *Options) { o.VCPUs = 3 }),
		"vCPU type":        with(func(o *Options) { o.VCPUType = "EPYC-Milan" }),
		"guest features":   with(func(o *Options) { o.GuestFeatures = 0x21 }),
		"kernel":           with(func(o *Options) { o.Kernel = []byte{} }),
		"VMM ec2":          with(func(o *Options) { o.VMM = VMMEC2 }),
		"VMM gce":          with(func(o *Options) { o.VMM = VMMGCE }),
		"one firmware bit": with(func(o *Options) { b := bytes.Clone(img); b[100] ^= 1; o.OVMF = b }),
	}
	for name, o := range differ {
		if digest(t, o) == d0 {
			t.Errorf("%s: digest did not change", name)
		}
	}

	// One vCPU never uses the AP reset EIP; two do.
	h0, _ := SNPOVMFHash(img)
	otherEIP := measuretest.Firmware{ResetEIP: 0x80c004}.Build()
	one := Options{OVMF: img, OVMFHash: h0[:], VCPUs: 1, VCPUType: "EPYC-v4"}
	oneOther := one
	oneOther.OVMF = otherEIP
	if digest(t, one) != digest(t, oneOther) {
		t.Error("AP reset EIP changed a 1-vCPU digest")
	}
	one.VCPUs, oneOther.VCPUs = 2, 2
	if digest(t, one) == digest(t, oneOther) {
		t.Error("AP reset EIP did not change a 2-vCPU digest")
	}

	// EC2 and GCE put a fixed 0x600 in RDX: the vCPU type does not matter.
	for _, vmm := range []VMMType{VMMEC2, VMMGCE} {
		a := digest(t, Options{OVMF: img, VCPUs: 2, VMM: vmm})
		b := digest(t, Options{OVMF: img, VCPUs: 2, VMM: vmm, VCPUType: "EPYC-Genoa"})
		if a != b {
			t.Errorf("%s: vCPU type changed the digest", vmm)
		}
	}

	// Kernel inputs: no initrd hashes like an empty one, no command line
	// like an empty one; bytes and paths agree.
	k := Options{OVMF: img, VCPUs: 1, VCPUType: "EPYC-v4", Kernel: []byte("kernel")}
	kd := digest(t, k)
	k2 := k
	k2.Initrd, k2.Cmdline = []byte{}, ""
	if digest(t, k2) != kd {
		t.Error("empty initrd differs from none")
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	k3 := Options{OVMFPath: write("ovmf.fd", img), KernelPath: write("vmlinuz", []byte("kernel")), InitrdPath: write("initrd", nil), VCPUs: 1, VCPUType: "EPYC-v4"}
	if digest(t, k3) != kd {
		t.Error("paths differ from bytes")
	}
	k3.Cmdline = "x"
	if digest(t, k3) == kd {
		t.Error("command line did not change the digest")
	}
}

func TestDigestErrors(t *testing.T) {
	good := measuretest.Firmware{}.Build()
	ovmfX64 := measuretest.Firmware{Sections: measuretest.OvmfX64Sections, NoHashesEntry: true}.Build()
	cases := []struct {
		name  string
		opts  Options
		input string
		want  string
	}{
		{"no OVMF", Options{VCPUs: 1, VCPUType: "EPYC"}, "OVMF", "no OVMF firmware given"},
		{"missing OVMF file", Options{OVMFPath: "/nonexistent/OVMF.fd", VCPUs: 1, VCPUType: "EPYC"}, "OVMF", "cannot read OVMF"},
		{"odd size", Options{OVMF: make([]byte, 5000), VCPUs: 1, VCPUType: "EPYC"}, "OVMF", "multiple of 4096"},
		{"no footer", Options{OVMF: measuretest.Firmware{NoFooter: true}.Build(), VCPUs: 1, VCPUType: "EPYC"}, "OVMF", "no GUIDed footer table"},
		{"no metadata", Options{OVMF: measuretest.Firmware{NoMetadata: true}.Build(), VCPUs: 1, VCPUType: "EPYC"}, "OVMF", "no SEV metadata section"},
		{"no reset block", Options{OVMF: measuretest.Firmware{NoResetBlock: true}.Build(), VCPUs: 1, VCPUType: "EPYC"}, "OVMF", "no SEV-ES reset block"},
		{"AP EIP 0", Options{OVMF: measuretest.Firmware{ZeroResetEIP: true}.Build(), VCPUs: 2, VCPUType: "EPYC"}, "OVMF", "AP reset EIP 0"},
		{"unknown section", Options{OVMF: measuretest.Firmware{Sections: []measuretest.Section{{GPA: 0x800000, Size: 0x1000, Type: 7}}}.Build(), VCPUs: 1, VCPUType: "EPYC"}, "OVMF", "section type 0x7"},
		{"partial page section", Options{OVMF: measuretest.Firmware{Sections: []measuretest.Section{{GPA: 0x800000, Size: 0x1800, Type: measuretest.SNPSecMem}}}.Build(), VCPUs: 1, VCPUType: "EPYC"}, "OVMF", "not a whole number of pages"},
		{"kernel without hashes section", Options{OVMF: ovmfX64, Kernel: []byte{1}, VCPUs: 1, VCPUType: "EPYC"}, "OVMF", "no SNP_KERNEL_HASHES section"},
		{"kernel without hashes entry", Options{OVMF: measuretest.Firmware{NoHashesEntry: true}.Build(), Kernel: []byte{1}, VCPUs: 1, VCPUType: "EPYC"}, "OVMF", "no SEV hashes table entry"},
		{"hashes table crosses page", Options{OVMF: measuretest.Firmware{HashesGPA: 0x810fc0}.Build(), Kernel: []byte{1}, VCPUs: 1, VCPUType: "EPYC"}, "OVMF", "cross its page"},
		{"hashes area too small", Options{OVMF: measuretest.Firmware{HashesSize: 0x10}.Build(), Kernel: []byte{1}, VCPUs: 1, VCPUType: "EPYC"}, "OVMF", "unusable"},
		{"zero vCPUs", Options{OVMF: good, VCPUType: "EPYC"}, "VCPUs", "out of range"},
		{"no vCPU type", Options{OVMF: good, VCPUs: 1}, "VCPUType", "no vCPU type"},
		{"bad vCPU type", Options{OVMF: good, VCPUs: 1, VCPUType: "EPYC-Zen9"}, "VCPUType", "unknown vCPU type"},
		{"type and sig", Options{OVMF: good, VCPUs: 1, VCPUType: "EPYC", VCPUSig: 1}, "VCPUType", "set one"},
		{"features without SNPActive", Options{OVMF: good, VCPUs: 1, VCPUType: "EPYC", GuestFeatures: 0x20}, "GuestFeatures", "0x21"},
		{"bad VMM", Options{OVMF: good, VCPUs: 1, VCPUType: "EPYC", VMM: "kvmtool"}, "VMM", "unknown VMM type"},
		{"initrd without kernel", Options{OVMF: good, VCPUs: 1, VCPUType: "EPYC", Initrd: []byte{}}, "Initrd", "without a kernel"},
		{"cmdline without kernel", Options{OVMF: good, VCPUs: 1, VCPUType: "EPYC", Cmdline: "quiet"}, "Cmdline", "without a kernel"},
		{"missing kernel file", Options{OVMF: good, VCPUs: 1, VCPUType: "EPYC", KernelPath: "/nonexistent/vmlinuz"}, "Kernel", "cannot read kernel"},
		{"kernel bytes and path", Options{OVMF: good, VCPUs: 1, VCPUType: "EPYC", Kernel: []byte{}, KernelPath: "/x"}, "Kernel", "set one"},
		{"short OVMF hash", Options{OVMF: good, VCPUs: 1, VCPUType: "EPYC", OVMFHash: []byte{1}}, "OVMFHash", "want 48"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := SNPLaunchDigest(c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			var ie *InputError
			if !errors.As(err, &ie) || ie.Input != c.input {
				t.Fatalf("error %v names input %v, want %s", err, ie, c.input)
			}
		})
	}
}

func TestParseOVMFErrors(t *testing.T) {
	img := measuretest.Firmware{}.Build()
	metaAt := len(img) - 0x800
	corrupt := func(f func([]byte)) []byte { b := bytes.Clone(img); f(b); return b }
	for name, c := range map[string]struct {
		img  []byte
		want string
	}{
		"tiny":          {make([]byte, 40), "too small"},
		"signature":     {corrupt(func(b []byte) { copy(b[metaAt:], "XSEV") }), "signature"},
		"version":       {corrupt(func(b []byte) { b[metaAt+8] = 2 }), "version is 2"},
		"item count":    {corrupt(func(b []byte) { b[metaAt+12] = 200 }), "declares 200 sections"},
		"entry size":    {corrupt(func(b []byte) { binary.LittleEndian.PutUint16(b[len(b)-50-18:], 3) }), "invalid size 3"},
		"entry overrun": {corrupt(func(b []byte) { binary.LittleEndian.PutUint16(b[len(b)-50-18:], 4000) }), "table bytes are left"},
		"table size":    {corrupt(func(b []byte) { binary.LittleEndian.PutUint16(b[len(b)-50:], 0xffff) }), "only"},
	} {
		if _, err := ParseOVMF(c.img); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}
