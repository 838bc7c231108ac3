// Package launch turns a CVM kit's launch.json into a QEMU command line,
// checks what the host can do (QEMU version, KVM, SEV-SNP) and starts QEMU
// detached from the agent.
package launch

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/api"
)

// SNP needs QEMU 9.1 (the sev-snp-guest object) or newer.
const (
	MinSNPMajor = 9
	MinSNPMinor = 1
	// DefaultCBitPos is used when CPUID does not report SEV (Milan and
	// Genoa use 51).
	DefaultCBitPos = 51
)

// Host is what the agent found out about this machine.
type Host struct {
	QEMU            string // resolved binary path
	QEMUVersion     [3]int
	QEMUVersionText string
	QEMUError       string // why QEMU could not be run, if it could not
	KVM             bool   // /dev/kvm opens read-write
	KVMError        string
	SNP             api.SNPSupport
}

// Paths the probe reads; variables so tests can point them elsewhere.
var (
	kvmDevice    = "/dev/kvm"
	sevDevice    = "/dev/sev"
	sevSNPParam  = "/sys/module/kvm_amd/parameters/sev_snp"
	versionRegex = regexp.MustCompile(`QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?`)
)

// Probe checks QEMU, KVM and SEV-SNP support. It never fails: what is
// missing ends up in the fields (SNP.Reasons lists every unmet requirement).
func Probe(ctx context.Context, qemu string) *Host {
	h := &Host{QEMU: qemu}
	if p, err := exec.LookPath(qemu); err != nil {
		h.QEMUError = fmt.Sprintf("QEMU binary %q not found: install qemu-system-x86 or set qemu in agent.yaml", qemu)
	} else {
		h.QEMU = p
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, p, "--version").Output()
		if err != nil {
			h.QEMUError = fmt.Sprintf("%s --version: %v", p, err)
		} else if v, text, ok := ParseVersion(string(out)); ok {
			h.QEMUVersion, h.QEMUVersionText = v, text
		} else {
			h.QEMUError = fmt.Sprintf("%s --version printed no version: %q", p, firstLine(string(out)))
		}
	}
	if f, err := os.OpenFile(kvmDevice, os.O_RDWR, 0); err != nil {
		h.KVMError = fmt.Sprintf("%s is not usable (%v): guests run under TCG emulation, much slower", kvmDevice, cleanErr(err))
	} else {
		f.Close()
		h.KVM = true
	}
	h.SNP = h.snpSupport()
	return h
}

func (h *Host) snpSupport() api.SNPSupport {
	s := api.SNPSupport{CBitPos: DefaultCBitPos}
	var reasons []string
	switch {
	case h.QEMUError != "":
		reasons = append(reasons, h.QEMUError)
	case !VersionAtLeast(h.QEMUVersion, MinSNPMajor, MinSNPMinor):
		reasons = append(reasons, fmt.Sprintf("QEMU %s (%s) has no sev-snp-guest object: SEV-SNP needs QEMU %d.%d or newer (Debian 12 ships 7.2)",
			h.QEMUVersionText, h.QEMU, MinSNPMajor, MinSNPMinor))
	}
	if !h.KVM {
		reasons = append(reasons, "SEV-SNP needs KVM: "+h.KVMError)
	}
	b, err := os.ReadFile(sevSNPParam)
	switch {
	case err != nil:
		reasons = append(reasons, fmt.Sprintf("the host kernel does not offer SEV-SNP: %s is missing (kvm_amd not loaded, not an AMD host, or a kernel without SNP host support; Linux 6.11 or newer is needed)", sevSNPParam))
	case !isYes(string(b)):
		reasons = append(reasons, fmt.Sprintf("kvm_amd has SEV-SNP disabled: %s is %q, not Y (enable SNP in the BIOS and load kvm_amd with sev_snp=1)", sevSNPParam, strings.TrimSpace(string(b))))
	}
	if _, err := os.Stat(sevDevice); err != nil {
		reasons = append(reasons, fmt.Sprintf("%s is missing: the AMD secure processor (ccp/PSP driver) is not available", sevDevice))
	}
	if eax, ebx, ok := cpuidSEV(); ok {
		if eax&(1<<4) == 0 {
			reasons = append(reasons, "the CPU does not report SEV-SNP (CPUID 0x8000001F EAX bit 4 is clear)")
		}
		if c := int(ebx & 0x3f); c != 0 {
			s.CBitPos = c
		}
	} else {
		reasons = append(reasons, "the CPU reports no AMD memory encryption leaf (CPUID 0x8000001F): not an SEV-capable AMD host (or the hypervisor hides it)")
	}
	s.Available = len(reasons) == 0
	s.Reasons = reasons
	return s
}

// EffectiveMode resolves the configured mode: auto picks snp when SNP is
// available and simulated otherwise. For snp without SNP support it
// returns an error that lists every reason.
func (h *Host) EffectiveMode(configured string) (string, error) {
	switch configured {
	case api.ModeSimulated:
		return api.ModeSimulated, nil
	case api.ModeSNP:
		if !h.SNP.Available {
			return "", fmt.Errorf("mode snp: this host cannot launch SEV-SNP guests: %s", strings.Join(h.SNP.Reasons, "; "))
		}
		return api.ModeSNP, nil
	default:
		if h.SNP.Available {
			return api.ModeSNP, nil
		}
		return api.ModeSimulated, nil
	}
}

// ParseVersion reads `qemu --version` output.
func ParseVersion(out string) (v [3]int, text string, ok bool) {
	m := versionRegex.FindStringSubmatch(out)
	if m == nil {
		return v, "", false
	}
	for i := 0; i < 3; i++ {
		if m[i+1] != "" {
			v[i], _ = strconv.Atoi(m[i+1])
		}
	}
	return v, fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]), true
}

// VersionAtLeast reports v >= major.minor.
func VersionAtLeast(v [3]int, major, minor int) bool {
	return v[0] > major || (v[0] == major && v[1] >= minor)
}

func isYes(s string) bool {
	s = strings.TrimSpace(s)
	return s == "Y" || s == "y" || s == "1"
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func cleanErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// trimOut shortens QEMU's stderr for an error message.
func trimOut(b []byte) string {
	s := strings.TrimSpace(string(bytes.ToValidUTF8(b, []byte("?"))))
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}
