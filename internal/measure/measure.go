package measure

import (
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"os"
	"strings"
)

// DigestSize is the size of an SNP launch digest (SHA-384).
const DigestSize = sha512.Size384

// DefaultGuestFeatures is the VMSA SEV_FEATURES value used when
// Options.GuestFeatures is zero: SNPActive only, sev-snp-measure's default and
// what upstream KVM (6.11+, KVM_SEV_INIT2) with QEMU 9.1+ sets unless asked
// for more. Older AMD development kernels turned DebugSwap on: 0x21.
const DefaultGuestFeatures = 0x1

// MaxVCPUs bounds Options.VCPUs (KVM's largest KVM_MAX_VCPUS).
const MaxVCPUs = 4096

// VMMType is the hypervisor whose initial vCPU state the VMSA pages model.
type VMMType string

// VMM types, named as sev-snp-measure's --vmm-type names them.
const (
	VMMQEMU VMMType = "QEMU" // QEMU/KVM; the default
	VMMEC2  VMMType = "ec2"  // Amazon EC2
	VMMGCE  VMMType = "gce"  // Google Compute Engine
)

// Options are the launch parameters the measurement depends on. Each file
// input is given either as bytes or as a path, not both.
type Options struct {
	// OVMF is the firmware image passed to QEMU with -bios (or its path in
	// OVMFPath). It needs SEV metadata, and for Kernel an SNP_KERNEL_HASHES
	// section (edk2's AmdSev build, often shipped as OVMF.amdsev.fd).
	OVMF     []byte
	OVMFPath string
	// OVMFHash, when set, is a precomputed digest of the OVMF pages (what
	// SNPOVMFHash returns, sev-snp-measure's --snp-ovmf-hash): the chain
	// starts from it and OVMF is read only for its metadata.
	OVMFHash []byte

	// Kernel, Initrd and Cmdline are QEMU's -kernel, -initrd and -append.
	// With a kernel QEMU writes their SHA-256 into the firmware's hashes
	// table, which is measured. Kernel (a non-nil slice, even empty) or
	// KernelPath turns this on; Initrd and Cmdline need it.
	Kernel     []byte
	KernelPath string
	Initrd     []byte
	InitrdPath string
	Cmdline    string

	// VCPUs is the number of vCPUs (-smp): one VMSA page each.
	VCPUs int
	// VCPUType is the QEMU -cpu model (see VCPUTypes), or set VCPUSig to a
	// CPUID(1).EAX signature directly (see CPUSig). One of the two is needed
	// for QEMU; EC2 and GCE ignore both.
	VCPUType string
	VCPUSig  uint32
	// GuestFeatures is the VMSA SEV_FEATURES value; zero means
	// DefaultGuestFeatures. Bit 0 (SNPActive) must be set.
	GuestFeatures uint64
	// VMM is the hypervisor; empty means VMMQEMU.
	VMM VMMType

	// Cache, when set, keeps what is derived from files given by path
	// across calls (see Cache).
	Cache *Cache
}

// InputError is an error about one input; Input names the Options field
// (without a Path suffix), so callers can point at their own setting.
type InputError struct {
	Input string
	Err   error
}

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func inputErr(input, format string, args ...any) error {
	return &InputError{Input: input, Err: fmt.Errorf(format, args...)}
}

// SNPLaunchDigest computes the SEV-SNP launch digest of a guest, equal to
// the MEASUREMENT in its attestation reports and to what
// `sev-snp-measure --mode snp` prints.
func SNPLaunchDigest(opts Options) ([DigestSize]byte, error) {
	var ld [DigestSize]byte
	p, err := opts.plan()
	if err != nil {
		return ld, err
	}

	// Hash kernel and initrd while the OVMF pages are hashed.
	type result struct {
		sum [sha256.Size]byte
		err error
	}
	var kernelC, initrdC chan result
	if p.kernel {
		kernelC, initrdC = make(chan result, 1), make(chan result, 1)
		run := func(c chan result, input string, data []byte, path string) {
			sum, err := sha256Of(opts.Cache, input, data, path)
			c <- result{sum, err}
		}
		go run(kernelC, "Kernel", opts.Kernel, opts.KernelPath)
		go run(initrdC, "Initrd", opts.Initrd, opts.InitrdPath)
	}

	var g gctx
	switch {
	case opts.OVMFHash != nil:
		copy(g.ld[:], opts.OVMFHash)
	case p.ovmfChain != nil:
		g.ld = *p.ovmfChain
	default:
		g.updateNormalDigests(p.ovmf.GPA(), pageDigests(p.ovmf.data))
		if p.storeChain != nil {
			p.storeChain(g.ld)
		}
	}

	var table [HashesTableSize]byte
	if p.kernel {
		k, i := <-kernelC, <-initrdC
		if k.err != nil {
			return ld, k.err
		}
		if i.err != nil {
			return ld, i.err
		}
		table = SEVHashesTable(k.sum, i.sum, CmdlineHash(opts.Cmdline))
	}

	for _, s := range p.ovmf.sections {
		gpa, size := uint64(s.GPA), uint64(s.Size)
		switch s.Type {
		case SectionSNPSecMem:
			if p.vmm == VMMGCE {
				g.updateUnmeasured(pageTypeUnmeasured, gpa, size)
			} else {
				g.updateUnmeasured(pageTypeZero, gpa, size)
			}
		case SectionSNPSecrets:
			g.update(pageTypeSecrets, gpa, &zeroDigest)
		case SectionCPUID:
			if p.vmm != VMMEC2 {
				g.update(pageTypeCPUID, gpa, &zeroDigest)
			}
		case SectionSNPKernelHashes:
			if p.kernel {
				d := sha512.Sum384(hashesPage(&table, p.hashesOffset))
				g.update(pageTypeNormal, gpa, &d)
			} else {
				g.updateUnmeasured(pageTypeZero, gpa, size)
			}
		case SectionSVSMCAA:
			g.updateUnmeasured(pageTypeZero, gpa, size)
		}
	}
	if p.vmm == VMMEC2 {
		// EC2 adds the CPUID pages after every other metadata page.
		for _, s := range p.ovmf.sections {
			if s.Type == SectionCPUID {
				g.update(pageTypeCPUID, uint64(s.GPA), &zeroDigest)
			}
		}
	}

	bsp := sha512.Sum384(buildVMSA(bspEIP, p.features, p.sig, p.vmm)[:])
	var ap [DigestSize]byte
	if opts.VCPUs > 1 {
		ap = sha512.Sum384(buildVMSA(p.apEIP, p.features, p.sig, p.vmm)[:])
	}
	for i := 0; i < opts.VCPUs; i++ {
		if i == 0 {
			g.update(pageTypeVMSA, vmsaGPA, &bsp)
		} else {
			g.update(pageTypeVMSA, vmsaGPA, &ap)
		}
	}
	return g.ld, nil
}

// SNPOVMFHash is the launch digest after the OVMF pages alone, for
// Options.OVMFHash (sev-snp-measure --mode snp:ovmf-hash).
func SNPOVMFHash(ovmf []byte) ([DigestSize]byte, error) {
	var g gctx
	if err := checkOVMFSize(len(ovmf)); err != nil {
		return g.ld, err
	}
	g.updateNormalDigests(fourGiB-uint64(len(ovmf)), pageDigests(ovmf))
	return g.ld, nil
}

// plan is the checked form of Options.
type plan struct {
	ovmf         *OVMF
	vmm          VMMType
	sig          uint32
	features     uint64
	apEIP        uint32
	kernel       bool
	hashesOffset uint32
	ovmfChain    *[DigestSize]byte      // from the cache
	storeChain   func([DigestSize]byte) // gives a computed chain to the cache
}

// plan checks every input before any hashing, so a bad input fails fast
// and names itself.
func (o *Options) plan() (*plan, error) {
	p := &plan{vmm: o.VMM, features: o.GuestFeatures}
	switch p.vmm {
	case "":
		p.vmm = VMMQEMU
	case VMMQEMU, VMMEC2, VMMGCE:
	default:
		return nil, inputErr("VMM", "unknown VMM type %q: want %q, %q or %q", o.VMM, VMMQEMU, VMMEC2, VMMGCE)
	}
	if o.VCPUs < 1 || o.VCPUs > MaxVCPUs {
		return nil, inputErr("VCPUs", "vCPU count %d is out of range: want 1 to %d", o.VCPUs, MaxVCPUs)
	}
	switch {
	case o.VCPUType != "" && o.VCPUSig != 0:
		return nil, inputErr("VCPUType", "both a vCPU type (%q) and a vCPU signature (0x%x) are set: set one", o.VCPUType, o.VCPUSig)
	case o.VCPUType != "":
		sig, err := VCPUSignature(o.VCPUType)
		if err != nil {
			return nil, &InputError{Input: "VCPUType", Err: err}
		}
		p.sig = sig
	case o.VCPUSig != 0:
		p.sig = o.VCPUSig
	case p.vmm == VMMQEMU:
		return nil, inputErr("VCPUType", "no vCPU type: the QEMU -cpu model enters the measurement, set one of %s", strings.Join(VCPUTypes(), ", "))
	}
	if p.features == 0 {
		p.features = DefaultGuestFeatures
	}
	if p.features&1 == 0 {
		return nil, inputErr("GuestFeatures", "guest features 0x%x lack bit 0 (SNPActive), which every SNP VMSA has: did you mean 0x%x?", p.features, p.features|1)
	}
	if o.OVMFHash != nil && len(o.OVMFHash) != DigestSize {
		return nil, inputErr("OVMFHash", "OVMF hash is %d bytes, want %d (SHA-384)", len(o.OVMFHash), DigestSize)
	}

	p.kernel = o.Kernel != nil || o.KernelPath != ""
	for _, f := range []struct {
		name string
		data []byte
		path string
	}{{"OVMF", o.OVMF, o.OVMFPath}, {"Kernel", o.Kernel, o.KernelPath}, {"Initrd", o.Initrd, o.InitrdPath}} {
		if f.data != nil && f.path != "" {
			return nil, inputErr(f.name, "both %s bytes and %sPath (%s) are set: set one", f.name, f.name, f.path)
		}
	}
	if !p.kernel {
		if o.Initrd != nil || o.InitrdPath != "" {
			return nil, inputErr("Initrd", "an initrd is given without a kernel: QEMU takes -initrd only with -kernel")
		}
		if o.Cmdline != "" {
			return nil, inputErr("Cmdline", "a command line is given without a kernel: QEMU takes -append only with -kernel")
		}
	}
	if o.KernelPath != "" {
		if err := checkReadable("Kernel", o.KernelPath); err != nil {
			return nil, err
		}
	}
	if o.InitrdPath != "" {
		if err := checkReadable("Initrd", o.InitrdPath); err != nil {
			return nil, err
		}
	}

	switch {
	case o.OVMFPath != "":
		ovmf, chain, store, err := loadOVMF(o.Cache, o.OVMFPath)
		if err != nil {
			return nil, err
		}
		p.ovmf, p.ovmfChain, p.storeChain = ovmf, chain, store
	case o.OVMF != nil:
		if err := checkOVMFSize(len(o.OVMF)); err != nil {
			return nil, err
		}
		ovmf, err := ParseOVMF(o.OVMF)
		if err != nil {
			return nil, &InputError{Input: "OVMF", Err: err}
		}
		p.ovmf = ovmf
	default:
		return nil, inputErr("OVMF", "no OVMF firmware given")
	}
	if err := p.checkOVMF(o.VCPUs); err != nil {
		return nil, &InputError{Input: "OVMF", Err: err}
	}
	return p, nil
}

func (p *plan) checkOVMF(vcpus int) error {
	o := p.ovmf
	if !o.HasFooterTable() {
		return errors.New("OVMF has no GUIDed footer table (GUID " + guidFooterTable.String() +
			" 50 bytes before the end): not an OVMF image built with SEV support")
	}
	if !o.HasMetadata() {
		return errors.New("OVMF has no SEV metadata section (GUID " + guidSevMetadata.String() +
			"): an SNP guest cannot boot from it; use an SEV-capable build such as OvmfPkgX64 (Debian's " +
			"/usr/share/ovmf/OVMF.fd) or the AmdSev build OVMF.amdsev.fd, not a split OVMF_CODE_4M.fd")
	}
	eip, ok := o.ResetEIP()
	if !ok {
		return errors.New("OVMF has no SEV-ES reset block (GUID " + guidSevESReset.String() + "): not an SEV-capable build")
	}
	if vcpus > 1 && eip == 0 {
		return fmt.Errorf("OVMF's SEV-ES reset block gives AP reset EIP 0: %d vCPUs cannot start", vcpus)
	}
	p.apEIP = eip
	hasHashes := false
	for _, s := range o.sections {
		switch s.Type {
		case SectionSNPSecMem, SectionSVSMCAA:
		case SectionSNPSecrets, SectionCPUID:
			continue
		case SectionSNPKernelHashes:
			hasHashes = true
			if p.kernel {
				if s.Size != pageSize {
					return fmt.Errorf("OVMF SNP_KERNEL_HASHES section at GPA 0x%x is 0x%x bytes, want one page (0x1000)", s.GPA, s.Size)
				}
				continue
			}
		default:
			return fmt.Errorf("OVMF SEV metadata has section type 0x%x at GPA 0x%x, which neither QEMU nor sev-snp-measure knows", uint32(s.Type), s.GPA)
		}
		if s.Size%pageSize != 0 {
			return fmt.Errorf("OVMF %s section at GPA 0x%x has size 0x%x, not a whole number of pages", s.Type, s.GPA, s.Size)
		}
	}
	if !p.kernel {
		return nil
	}
	if !hasHashes {
		return errors.New("a kernel is given but OVMF's SEV metadata has no SNP_KERNEL_HASHES section, so " +
			"-kernel/-initrd/-append cannot be measured: use edk2's AmdSev build (OvmfPkg/AmdSev/AmdSevX64.dsc, " +
			"often shipped as OVMF.amdsev.fd); Debian's OVMF.fd lacks it")
	}
	gpa, size, ok := o.HashesTable()
	if !ok {
		return errors.New("a kernel is given but OVMF has no SEV hashes table entry (GUID " + guidSevHashTable.String() + ")")
	}
	if gpa == 0 || size < HashesTableSize {
		return fmt.Errorf("a kernel is given but OVMF's SEV hashes table area (GPA 0x%x, size 0x%x) is unusable; QEMU refuses it", gpa, size)
	}
	p.hashesOffset = gpa & (pageSize - 1)
	if p.hashesOffset+HashesTableSize > pageSize {
		return fmt.Errorf("OVMF's SEV hashes table at GPA 0x%x would cross its page", gpa)
	}
	return nil
}

func checkOVMFSize(n int) error {
	if n == 0 || n%pageSize != 0 || uint64(n) > fourGiB {
		return inputErr("OVMF", "OVMF image is %d bytes, want a non-zero multiple of 4096 no larger than 4 GiB", n)
	}
	return nil
}

func checkReadable(input, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return inputErr(input, "cannot read %s: %v", inputName(input), err)
	}
	if fi.IsDir() {
		return inputErr(input, "%s path %s is a directory", inputName(input), path)
	}
	return nil
}
