package measure

import (
	"fmt"
	"sort"
	"strings"
)

// CPUSig composes a CPUID(1).EAX signature from family, model and stepping
// (AMD CPUID specification #25481, Fn0000_0001_EAX): families above 0xf are
// split into base family 0xf plus an extended family.
func CPUSig(family, model, stepping uint32) uint32 {
	famLo, famHi := family, uint32(0)
	if family > 0xf {
		famLo, famHi = 0xf, (family-0xf)&0xff
	}
	return famHi<<20 | (model>>4&0xf)<<16 | famLo<<8 | (model&0xf)<<4 | stepping&0xf
}

// vcpuSigs are QEMU's builtin EPYC models as sev-snp-measure 0.0.13's
// vcpu_types.CPU_SIGS lists them. Names are case-sensitive, as in QEMU.
var vcpuSigs = map[string]uint32{
	"EPYC":          CPUSig(23, 1, 2),
	"EPYC-v1":       CPUSig(23, 1, 2),
	"EPYC-v2":       CPUSig(23, 1, 2),
	"EPYC-IBPB":     CPUSig(23, 1, 2),
	"EPYC-v3":       CPUSig(23, 1, 2),
	"EPYC-v4":       CPUSig(23, 1, 2),
	"EPYC-Rome":     CPUSig(23, 49, 0),
	"EPYC-Rome-v1":  CPUSig(23, 49, 0),
	"EPYC-Rome-v2":  CPUSig(23, 49, 0),
	"EPYC-Rome-v3":  CPUSig(23, 49, 0),
	"EPYC-Milan":    CPUSig(25, 1, 1),
	"EPYC-Milan-v1": CPUSig(25, 1, 1),
	"EPYC-Milan-v2": CPUSig(25, 1, 1),
	"EPYC-Genoa":    CPUSig(25, 17, 0),
	"EPYC-Genoa-v1": CPUSig(25, 17, 0),
	"EPYC-Turin":    CPUSig(26, 0, 0),
}

// VCPUTypes lists the known QEMU -cpu models, sorted.
func VCPUTypes() []string {
	out := make([]string, 0, len(vcpuSigs))
	for k := range vcpuSigs {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// VCPUSignature is the CPUID(1).EAX signature of a QEMU -cpu model.
func VCPUSignature(vcpuType string) (uint32, error) {
	if sig, ok := vcpuSigs[vcpuType]; ok {
		return sig, nil
	}
	for k := range vcpuSigs {
		if strings.EqualFold(k, vcpuType) {
			return 0, fmt.Errorf("unknown vCPU type %q: names are case-sensitive, did you mean %q?", vcpuType, k)
		}
	}
	return 0, fmt.Errorf("unknown vCPU type %q: want one of %s (or set the signature directly)", vcpuType, strings.Join(VCPUTypes(), ", "))
}
