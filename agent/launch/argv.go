package launch

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/internal/cvm"
)

// AttestPortName is the virtio-serial port the guest responder opens
// (/dev/virtio-ports/org.flare.attest in the guest).
const AttestPortName = "org.flare.attest"

// AttestPortID is the QEMU device id of that port; QMP VSERPORT_CHANGE
// events carry it.
const AttestPortID = "flare-attest"

// Options are the per-launch settings that are not in launch.json.
type Options struct {
	// Mode is api.ModeSNP or api.ModeSimulated.
	Mode string
	// KVM selects -accel kvm in simulated mode (TCG otherwise). SNP always
	// uses KVM.
	KVM bool
	// CPU is -cpu in simulated mode; empty: host with KVM, max with TCG.
	CPU string
	// Firmware, in simulated mode, is the -bios file to boot instead of
	// the kit's (config simulated_firmware); empty: the kit's.
	Firmware string
	// CBitPos and ReducedPhysBits go to sev-snp-guest (SNP only).
	CBitPos, ReducedPhysBits int
	// Name is QEMU's -name.
	Name string
	// Runtime files, normally in the CVM's state folder.
	QMPSocket, AttestSocket, ConsoleLog, PIDFile string
	// Network is "user" (slirp, the kit's allowed_ports forwarded from
	// ForwardAddress, empty meaning all addresses) or "none".
	Network        string
	ForwardAddress string
	// SimulatedPlatform, in simulated mode, is a file holding the
	// SIMULATED platform's description (guestproto.SimulatedPlatform
	// JSON) that QEMU hands the guest as fw_cfg SimulatedPlatformFwCfg:
	// flare-init's stand-in for the AMD secure processor at boot.
	SimulatedPlatform string
}

// SimulatedPlatformFwCfg is the fw_cfg name of Options.SimulatedPlatform
// (flare-init reads /sys/firmware/qemu_fw_cfg/by_name/<it>/raw).
const SimulatedPlatformFwCfg = "opt/org.flarekit/simulated-snp"

// SandboxArg is QEMU's -sandbox: seccomp on, and QEMU may not use
// obsolete system calls, gain privileges (setuid and friends), spawn
// processes (fork, execve) or change its scheduling and CPU affinity. A
// guest that escapes device emulation lands in a process that can do
// little more than its own I/O; the systemd unit adds the rest (an
// unprivileged user, no capabilities, a read-only system). QEMU 7.2
// accepts these keys; spawn and elevateprivileges forbid -daemonize
// (fork, setsid), so Start detaches QEMU itself.
const SandboxArg = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// qemuOpt escapes a value inside a QEMU option list.
func qemuOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// maxSocketPath is the longest unix socket path Linux accepts (sun_path
// less the NUL).
const maxSocketPath = 107

// Args returns QEMU's arguments (without the binary) for the kit at kitDir.
// QEMU writes -pidfile and runs sandboxed (SandboxArg); it outlives
// the agent: Start runs it in its own session.
func Args(m *cvm.Manifest, kitDir string, o Options) ([]string, error) {
	if err := CheckManifest(m); err != nil {
		return nil, err
	}
	for _, s := range []string{o.QMPSocket, o.AttestSocket} {
		if s == "" {
			return nil, errors.New("launch: QMP and attestation socket paths are required")
		}
		if len(s) > maxSocketPath {
			return nil, fmt.Errorf("launch: socket path %s is %d bytes, longer than the %d Linux allows: use a shorter state_dir", s, len(s), maxSocketPath)
		}
	}
	kit, err := filepath.Abs(kitDir)
	if err != nil {
		return nil, err
	}
	file := func(name string) string { return filepath.Join(kit, name) }
	snp := o.Mode == api.ModeSNP
	if !snp && o.Mode != api.ModeSimulated {
		return nil, fmt.Errorf("launch: mode %q is neither snp nor simulated", o.Mode)
	}

	a := []string{"-name", qemuOpt(o.Name) + ",debug-threads=on", "-msg", "timestamp=on"}
	mem := strconv.Itoa(m.MemoryMiB) + "M"
	if snp {
		policy, _ := ParsePolicy(m.GuestPolicy)
		sev := fmt.Sprintf("sev-snp-guest,id=sev0,policy=0x%x,cbitpos=%d,reduced-phys-bits=%d,kernel-hashes=on", policy, o.CBitPos, o.ReducedPhysBits)
		if m.HostData != "" {
			b, _ := hex.DecodeString(m.HostData)
			sev += ",host-data=" + base64.StdEncoding.EncodeToString(b)
		}
		a = append(a,
			"-accel", "kvm",
			"-machine", "q35,confidential-guest-support=sev0,memory-backend=ram1,vmport=off",
			"-cpu", m.VCPUType,
			"-smp", strconv.Itoa(m.VCPUs),
			"-m", mem,
			"-object", "memory-backend-memfd,id=ram1,size="+mem+",share=true,prealloc=false",
			"-object", sev,
		)
	} else {
		// Simulated: no SEV object at all. The CPU model is the host's
		// (KVM) or QEMU's "max" (TCG) unless configured: the kit's
		// vcpu_type may not exist in this QEMU (7.2 has no EPYC-v4), and
		// nothing here is measured.
		accel, cpu := "tcg", "max"
		if o.KVM {
			accel, cpu = "kvm", "host"
		}
		if o.CPU != "" {
			cpu = o.CPU
		}
		a = append(a,
			"-accel", accel,
			"-machine", "q35,vmport=off",
			"-cpu", cpu,
			"-smp", strconv.Itoa(m.VCPUs),
			"-m", mem,
		)
	}
	bios := file(m.Firmware.File)
	if !snp && o.Firmware != "" {
		bios = o.Firmware
	}
	a = append(a, "-bios", bios, "-kernel", file(m.Kernel.File))
	if m.Initrd != nil {
		a = append(a, "-initrd", file(m.Initrd.File))
	}
	a = append(a, "-append", m.KernelCmdline)
	if !snp && o.SimulatedPlatform != "" {
		a = append(a, "-fw_cfg", "name="+SimulatedPlatformFwCfg+",file="+qemuOpt(o.SimulatedPlatform))
	}

	// Devices for SNP need the IOMMU platform flag: guest memory is
	// private unless the guest shares it, which virtio does through the
	// DMA API (bounce buffers).
	dev := func(model string) string {
		if snp {
			return model + ",disable-legacy=on,iommu_platform=true"
		}
		return model + ",disable-legacy=on"
	}
	for _, d := range m.Drives {
		a = append(a,
			"-drive", fmt.Sprintf("if=none,id=%s,file=%s,format=%s,cache=writeback", d.Name, qemuOpt(file(d.File)), d.Format),
			"-device", dev("virtio-blk-pci")+fmt.Sprintf(",drive=%s,serial=%s", d.Name, d.Serial),
		)
	}
	a = append(a,
		"-device", dev("virtio-serial-pci")+",id=flare-vser0",
		"-chardev", "socket,id=flare-attest-chr,path="+qemuOpt(o.AttestSocket)+",server=on,wait=off",
		"-device", "virtserialport,bus=flare-vser0.0,chardev=flare-attest-chr,id="+AttestPortID+",name="+AttestPortName,
	)
	switch o.Network {
	case "none", "":
	case "user":
		nd := "user,id=net0"
		for _, p := range m.AllowedPorts {
			nd += fmt.Sprintf(",hostfwd=tcp:%s:%d-:%d", o.ForwardAddress, p, p)
		}
		a = append(a, "-netdev", nd, "-device", dev("virtio-net-pci")+",netdev=net0,romfile=")
	default:
		return nil, fmt.Errorf("launch: network %q is neither user nor none", o.Network)
	}
	a = append(a,
		"-nodefaults", "-display", "none", "-no-reboot",
		"-chardev", "file,id=flare-console,path="+qemuOpt(o.ConsoleLog)+",append=on",
		"-serial", "chardev:flare-console",
		"-qmp", "unix:"+qemuOpt(o.QMPSocket)+",server=on,wait=off",
		"-pidfile", o.PIDFile,
		"-sandbox", SandboxArg,
	)
	return a, nil
}
