package measure

import (
	"encoding/binary"
	"fmt"
)

// SectionType is the type of an OVMF SEV metadata section
// (edk2 OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm).
type SectionType uint32

// Section types sev-snp-measure and QEMU know.
const (
	SectionSNPSecMem       SectionType = 1    // pre-validated memory: ZERO pages
	SectionSNPSecrets      SectionType = 2    // the SNP secrets page
	SectionCPUID           SectionType = 3    // the SNP CPUID page
	SectionSVSMCAA         SectionType = 4    // SVSM calling-area page: ZERO pages
	SectionSNPKernelHashes SectionType = 0x10 // the page holding QEMU's kernel hashes table
)

func (t SectionType) String() string {
	switch t {
	case SectionSNPSecMem:
		return "SNP_SEC_MEM"
	case SectionSNPSecrets:
		return "SNP_SECRETS"
	case SectionCPUID:
		return "CPUID"
	case SectionSVSMCAA:
		return "SVSM_CAA"
	case SectionSNPKernelHashes:
		return "SNP_KERNEL_HASHES"
	}
	return fmt.Sprintf("unknown(0x%x)", uint32(t))
}

// Section is one OVMF SEV metadata descriptor.
type Section struct {
	GPA  uint32
	Size uint32
	Type SectionType
}

const (
	pageSize         = 4096
	fourGiB          = 1 << 32
	footerEntrySize  = 18 // u16 size + GUID
	footerTableSkip  = 32 // the table ends 32 bytes before the end of the image
	metadataHdrSize  = 16 // "ASEV", u32 size, u32 version, u32 num_items
	metadataDescSize = 12 // u32 gpa, u32 size, u32 type
)

// OVMF is a parsed OVMF image: its GUIDed footer table and its SEV metadata.
type OVMF struct {
	data        []byte
	table       map[guid][]byte
	hasFooter   bool
	hasMetadata bool
	sections    []Section
}

// ParseOVMF parses an OVMF image as sev-snp-measure does: it walks the GUIDed
// table that ends 32 bytes before the end of the image backwards, then reads
// the SEV metadata the table points to (its offset counts from the end of the
// image). An image with no footer table or no metadata parses; the launch
// digest then reports what is missing. data is kept, not copied.
func ParseOVMF(data []byte) (*OVMF, error) {
	o := &OVMF{data: data, table: map[guid][]byte{}}
	if err := o.parseFooterTable(); err != nil {
		return nil, err
	}
	if err := o.parseMetadata(); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *OVMF) parseFooterTable() error {
	size := len(o.data)
	start := size - footerTableSkip - footerEntrySize
	if start < 0 {
		return fmt.Errorf("OVMF image is %d bytes, too small to hold the OVMF footer table", size)
	}
	var footerGUID guid
	copy(footerGUID[:], o.data[start+2:start+footerEntrySize])
	if footerGUID != guidFooterTable {
		return nil
	}
	tableSize := int(binary.LittleEndian.Uint16(o.data[start:])) - footerEntrySize
	if tableSize < 0 {
		return nil
	}
	if tableSize > start {
		return fmt.Errorf("OVMF footer table claims %d bytes but only %d precede it", tableSize, start)
	}
	o.hasFooter = true
	tb := o.data[start-tableSize : start]
	for len(tb) >= footerEntrySize {
		hdr := tb[len(tb)-footerEntrySize:]
		entrySize := int(binary.LittleEndian.Uint16(hdr))
		var g guid
		copy(g[:], hdr[2:])
		if entrySize < footerEntrySize {
			return fmt.Errorf("OVMF footer table entry %s has invalid size %d (less than its %d-byte header)", g, entrySize, footerEntrySize)
		}
		if entrySize > len(tb) {
			return fmt.Errorf("OVMF footer table entry %s has size %d but only %d table bytes are left", g, entrySize, len(tb))
		}
		// Walking backwards, an entry earlier in the file overrides a later
		// duplicate, as in sev-snp-measure's dict.
		o.table[g] = tb[len(tb)-entrySize : len(tb)-footerEntrySize]
		tb = tb[:len(tb)-entrySize]
	}
	return nil
}

func (o *OVMF) parseMetadata() error {
	entry, ok := o.table[guidSevMetadata]
	if !ok {
		return nil
	}
	if len(entry) < 4 {
		return fmt.Errorf("OVMF SEV metadata table entry is %d bytes, want at least 4", len(entry))
	}
	offsetFromEnd := int64(binary.LittleEndian.Uint32(entry))
	start := int64(len(o.data)) - offsetFromEnd
	if start < 0 || start+metadataHdrSize > int64(len(o.data)) {
		return fmt.Errorf("OVMF SEV metadata offset 0x%x (from the end) lies outside the %d-byte image", offsetFromEnd, len(o.data))
	}
	hdr := o.data[start : start+metadataHdrSize]
	if string(hdr[:4]) != "ASEV" {
		return fmt.Errorf("OVMF SEV metadata at offset 0x%x has signature %q, want \"ASEV\"", start, hdr[:4])
	}
	hdrSize := int64(binary.LittleEndian.Uint32(hdr[4:]))
	if v := binary.LittleEndian.Uint32(hdr[8:]); v != 1 {
		return fmt.Errorf("OVMF SEV metadata version is %d, only version 1 is known", v)
	}
	n := int64(binary.LittleEndian.Uint32(hdr[12:]))
	end := start + hdrSize
	if end > int64(len(o.data)) {
		end = int64(len(o.data))
	}
	var items []byte
	if end > start+metadataHdrSize {
		items = o.data[start+metadataHdrSize : end]
	}
	if n*metadataDescSize > int64(len(items)) {
		return fmt.Errorf("OVMF SEV metadata declares %d sections but its %d-byte body holds only %d", n, len(items), len(items)/metadataDescSize)
	}
	o.hasMetadata = true
	o.sections = make([]Section, n)
	for i := range o.sections {
		d := items[i*metadataDescSize:]
		o.sections[i] = Section{
			GPA:  binary.LittleEndian.Uint32(d),
			Size: binary.LittleEndian.Uint32(d[4:]),
			Type: SectionType(binary.LittleEndian.Uint32(d[8:])),
		}
	}
	return nil
}

// Size is the image length in bytes.
func (o *OVMF) Size() int { return len(o.data) }

// GPA is where the image starts in guest memory: it ends at 4 GiB.
func (o *OVMF) GPA() uint64 { return fourGiB - uint64(len(o.data)) }

// HasFooterTable reports whether the image has the OVMF GUIDed footer table.
func (o *OVMF) HasFooterTable() bool { return o.hasFooter }

// HasMetadata reports whether the image has SEV metadata (any SEV-capable
// OVMF build since edk2-stable202111 has it).
func (o *OVMF) HasMetadata() bool { return o.hasMetadata }

// Sections returns the SEV metadata sections in file order.
func (o *OVMF) Sections() []Section { return append([]Section(nil), o.sections...) }

// HasSection reports whether a metadata section of type t exists.
func (o *OVMF) HasSection(t SectionType) bool {
	for _, s := range o.sections {
		if s.Type == t {
			return true
		}
	}
	return false
}

// ResetEIP is the AP reset EIP from the SEV-ES reset block; ok is false
// when the image has no such block.
func (o *OVMF) ResetEIP() (eip uint32, ok bool) {
	e, ok := o.table[guidSevESReset]
	if !ok {
		return 0, false
	}
	return le32prefix(e), true
}

// HashesTable is the GPA and size of the area where QEMU writes the kernel
// hashes table; ok is false when the image has no such table entry.
func (o *OVMF) HashesTable() (gpa, size uint32, ok bool) {
	e, ok := o.table[guidSevHashTable]
	if !ok {
		return 0, 0, false
	}
	gpa = le32prefix(e)
	if len(e) >= 8 {
		size = binary.LittleEndian.Uint32(e[4:])
	}
	return gpa, size, true
}

// le32prefix reads a little-endian u32 from up to the first four bytes, as
// Python's int.from_bytes(entry[:4], "little") does.
func le32prefix(b []byte) uint32 {
	var v uint32
	for i := 0; i < 4 && i < len(b); i++ {
		v |= uint32(b[i]) << (8 * i)
	}
	return v
}
