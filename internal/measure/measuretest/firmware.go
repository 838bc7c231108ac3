// Package measuretest builds small OVMF-like firmware images for tests of
// internal/measure and its callers: deterministic filler pages with the
// pieces the launch digest reads at the end (the GUIDed footer table, the
// SEV-ES reset block, the SEV hashes table entry and the SEV metadata).
package measuretest

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"strings"
)

// Section is one SEV metadata descriptor. It mirrors measure.Section so
// that this package does not import measure (measure's own tests use it).
type Section struct {
	GPA, Size, Type uint32
}

// Section types, as in measure.
const (
	SNPSecMem       = 1
	SNPSecrets      = 2
	CPUID           = 3
	SVSMCAA         = 4
	SNPKernelHashes = 0x10
)

// AmdSevSections is the SEV metadata of edk2-stable202405's AmdSevX64 build
// (OVMF.amdsev.fd): it has an SNP_KERNEL_HASHES page.
var AmdSevSections = []Section{
	{GPA: 0x800000, Size: 0x9000, Type: SNPSecMem},
	{GPA: 0x80a000, Size: 0x3000, Type: SNPSecMem},
	{GPA: 0x80d000, Size: 0x1000, Type: SNPSecrets},
	{GPA: 0x80e000, Size: 0x1000, Type: CPUID},
	{GPA: 0x80f000, Size: 0x1000, Type: SVSMCAA},
	{GPA: 0x810000, Size: 0x1000, Type: SNPKernelHashes},
	{GPA: 0x811000, Size: 0xf000, Type: SNPSecMem},
}

// OvmfX64Sections is the SEV metadata of a plain OvmfPkgX64 build (Debian's
// OVMF.fd): no kernel hashes page.
var OvmfX64Sections = []Section{
	{GPA: 0x800000, Size: 0x9000, Type: SNPSecMem},
	{GPA: 0x80a000, Size: 0x3000, Type: SNPSecMem},
	{GPA: 0x80d000, Size: 0x1000, Type: SNPSecrets},
	{GPA: 0x80e000, Size: 0x1000, Type: CPUID},
	{GPA: 0x80f000, Size: 0x11000, Type: SNPSecMem},
}

// Firmware describes a synthetic image. The zero value is a 64 KiB
// AmdSev-like image: AmdSevSections, AP reset EIP 0x80b004 and a hashes
// table at 0x810c00 (size 0x400), as in the AmdSevX64 build.
type Firmware struct {
	Size     int    // bytes, a multiple of 4096; 0 means 64 KiB
	Seed     uint64 // filler pseudo-random seed
	ResetEIP uint32 // 0 means 0x80b004; see NoResetBlock
	// HashesGPA and HashesSize describe the kernel hashes area; zero GPA
	// means 0x810c00 and zero size 0x400, unless NoHashesEntry.
	HashesGPA, HashesSize uint32
	// Sections nil means AmdSevSections; an empty non-nil slice means a
	// metadata header with no sections.
	Sections []Section

	ZeroResetEIP  bool // write a reset block with EIP 0
	NoResetBlock  bool // omit the SEV-ES reset block entry
	NoHashesEntry bool // omit the SEV hashes table entry
	NoMetadata    bool // omit the SEV metadata entry and header
	NoFooter      bool // omit the whole footer table
}

// Build returns the image bytes.
func (f Firmware) Build() []byte {
	size := f.Size
	if size == 0 {
		size = 64 << 10
	}
	img := make([]byte, size)
	r := rand.New(rand.NewPCG(f.Seed, 0x5eed))
	for i := 0; i+8 <= size; i += 8 {
		binary.LittleEndian.PutUint64(img[i:], r.Uint64())
	}
	if f.NoFooter {
		return img
	}

	// The SEV metadata header sits 2 KiB before the end; its table entry
	// stores that offset counted from the end of the image.
	const metaFromEnd = 0x800
	sections := f.Sections
	if sections == nil {
		sections = AmdSevSections
	}
	if !f.NoMetadata {
		m := img[size-metaFromEnd:]
		copy(m, "ASEV")
		binary.LittleEndian.PutUint32(m[4:], uint32(16+12*len(sections)))
		binary.LittleEndian.PutUint32(m[8:], 1)
		binary.LittleEndian.PutUint32(m[12:], uint32(len(sections)))
		for i, s := range sections {
			d := m[16+12*i:]
			binary.LittleEndian.PutUint32(d, s.GPA)
			binary.LittleEndian.PutUint32(d[4:], s.Size)
			binary.LittleEndian.PutUint32(d[8:], s.Type)
		}
	}

	// Footer table entries in file order; each is data, u16 size, GUID.
	type entry struct {
		guid string
		data []byte
	}
	var entries []entry
	le32 := func(vs ...uint32) []byte {
		b := make([]byte, 4*len(vs))
		for i, v := range vs {
			binary.LittleEndian.PutUint32(b[4*i:], v)
		}
		return b
	}
	if !f.NoMetadata {
		entries = append(entries, entry{"dc886566-984a-4798-a75e-5585a7bf67cc", le32(metaFromEnd)})
	}
	if !f.NoHashesEntry {
		gpa, sz := f.HashesGPA, f.HashesSize
		if gpa == 0 {
			gpa = 0x810c00
		}
		if sz == 0 {
			sz = 0x400
		}
		entries = append(entries, entry{"7255371f-3a3b-4b04-927b-1da6efa8d454", le32(gpa, sz)})
	}
	// The launch-secret area: present in real images, unused by the digest.
	entries = append(entries, entry{"4c2eb361-7d9b-4cc3-8081-127c90d3d294", le32(0x80d000, 0x1000)})
	if !f.NoResetBlock {
		eip := f.ResetEIP
		if eip == 0 && !f.ZeroResetEIP {
			eip = 0x80b004
		}
		entries = append(entries, entry{"00f771de-1a7e-4fcb-890e-68c77e2fb44e", le32(eip)})
	}

	var table []byte
	for _, e := range entries {
		table = append(table, e.data...)
		table = binary.LittleEndian.AppendUint16(table, uint16(len(e.data)+18))
		table = append(table, guidLE(e.guid)...)
	}
	footerAt := size - 32 - 18
	start := footerAt - len(table)
	copy(img[start:], table)
	binary.LittleEndian.PutUint16(img[footerAt:], uint16(len(table)+18))
	copy(img[footerAt+2:], guidLE("96b582de-1fb2-45f7-baea-a366c55a082d"))
	return img
}

// guidLE is the EFI on-disk byte order of a GUID: the first three groups
// little-endian.
func guidLE(s string) []byte {
	raw, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(raw) != 16 {
		panic("measuretest: bad GUID " + s)
	}
	return []byte{raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6],
		raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15]}
}
