package launch

// cpuid executes CPUID with the given leaf and subleaf (cpuid_amd64.s).
func cpuid(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)

// cpuidSEV returns CPUID 0x8000001F EAX and EBX (AMD memory encryption:
// EAX bit 1 SEV, bit 4 SEV-SNP; EBX[5:0] the C-bit position), if the CPU
// has that leaf.
func cpuidSEV() (eax, ebx uint32, ok bool) {
	maxExt, _, _, _ := cpuid(0x80000000, 0)
	if maxExt < 0x8000001f {
		return 0, 0, false
	}
	eax, ebx, _, _ = cpuid(0x8000001f, 0)
	if eax == 0 && ebx == 0 {
		return 0, 0, false
	}
	return eax, ebx, true
}
