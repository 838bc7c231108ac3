package measure

import "encoding/binary"

// bspEIP is where the bootstrap processor starts: the reset vector.
const bspEIP = 0xfffffff0

// VMSA save-area offsets (AMD APM vol. 2, table B-4; Linux struct
// sev_es_save_area). Segments are {u16 selector, u16 attrib, u32 limit, u64 base}.
const (
	vmsaES          = 0x000
	vmsaCS          = 0x010
	vmsaSS          = 0x020
	vmsaDS          = 0x030
	vmsaFS          = 0x040
	vmsaGS          = 0x050
	vmsaGDTR        = 0x060
	vmsaLDTR        = 0x070
	vmsaIDTR        = 0x080
	vmsaTR          = 0x090
	vmsaEFER        = 0x0d0
	vmsaCR4         = 0x148
	vmsaCR0         = 0x158
	vmsaDR7         = 0x160
	vmsaDR6         = 0x168
	vmsaRFLAGS      = 0x170
	vmsaRIP         = 0x178
	vmsaGPAT        = 0x268
	vmsaRDX         = 0x310
	vmsaSEVFeatures = 0x3b0
	vmsaXCR0        = 0x3e8
	vmsaMXCSR       = 0x408
	vmsaX87FCW      = 0x410
)

// buildVMSA returns the initial VMSA page of a vCPU starting at eip, as the
// given VMM sets it up (sev-snp-measure's VMSA.build_save_area).
func buildVMSA(eip uint32, sevFeatures uint64, vcpuSig uint32, vmm VMMType) *[pageSize]byte {
	csAttr, ssAttr, trAttr := uint16(0x9b), uint16(0x93), uint16(0x8b)
	gPAT := uint64(0x0007040600070406) // PAT MSR reset value, AMD APM vol. 2 A.3
	rdx := uint64(vcpuSig)
	mxcsr, fcw := uint32(0x1f80), uint16(0x37f)
	switch vmm {
	case VMMEC2:
		if eip == bspEIP {
			csAttr = 0x9a
		}
		ssAttr, trAttr = 0x92, 0x83
		rdx, mxcsr, fcw = 0x600, 0, 0
	case VMMGCE:
		gPAT = 0x00070106
		rdx, mxcsr, fcw = 0x600, 0, 0
	}
	p := new([pageSize]byte)
	seg := func(off int, sel, attr uint16, limit uint32, base uint64) {
		binary.LittleEndian.PutUint16(p[off:], sel)
		binary.LittleEndian.PutUint16(p[off+2:], attr)
		binary.LittleEndian.PutUint32(p[off+4:], limit)
		binary.LittleEndian.PutUint64(p[off+8:], base)
	}
	u64 := func(off int, v uint64) { binary.LittleEndian.PutUint64(p[off:], v) }
	seg(vmsaES, 0, 0x93, 0xffff, 0)
	seg(vmsaCS, 0xf000, csAttr, 0xffff, uint64(eip&0xffff0000))
	seg(vmsaSS, 0, ssAttr, 0xffff, 0)
	seg(vmsaDS, 0, 0x93, 0xffff, 0)
	seg(vmsaFS, 0, 0x93, 0xffff, 0)
	seg(vmsaGS, 0, 0x93, 0xffff, 0)
	seg(vmsaGDTR, 0, 0, 0xffff, 0)
	seg(vmsaLDTR, 0, 0x82, 0xffff, 0)
	seg(vmsaIDTR, 0, 0, 0xffff, 0)
	seg(vmsaTR, 0, trAttr, 0xffff, 0)
	u64(vmsaEFER, 0x1000) // KVM sets EFER.SVME
	u64(vmsaCR4, 0x40)    // KVM sets CR4.MCE
	u64(vmsaCR0, 0x10)
	u64(vmsaDR7, 0x400)
	u64(vmsaDR6, 0xffff0ff0)
	u64(vmsaRFLAGS, 0x2)
	u64(vmsaRIP, uint64(eip&0xffff))
	u64(vmsaGPAT, gPAT)
	u64(vmsaRDX, rdx)
	u64(vmsaSEVFeatures, sevFeatures)
	u64(vmsaXCR0, 0x1)
	binary.LittleEndian.PutUint32(p[vmsaMXCSR:], mxcsr)
	binary.LittleEndian.PutUint16(p[vmsaX87FCW:], fcw)
	return p
}
