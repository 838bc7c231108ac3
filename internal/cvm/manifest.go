package cvm

// ManifestVersion is the launch.json format version. Readers must refuse a
// version they do not know; adding fields does not change it, changing the
// meaning of one does.
const ManifestVersion = 1

// The kit folder's own files (the rest are drives and boot files).
const (
	// ManifestFile is the manifest's file name in the kit folder.
	ManifestFile = "launch.json"
	// ScriptFile launches the kit with QEMU by hand.
	ScriptFile = "launch_vm.sh"
	// ReadmeFile tells a site operator what the kit is.
	ReadmeFile = "README.txt"
)

// SignedFiles are the files the kit's signature.json signs with the
// project's root CA key. Every other file is bound through launch.json's
// sizes and SHA-256s, so drives of many GB are hashed once at build and
// never signed (NVFlare's scheme signs whole file contents).
var SignedFiles = []string{ManifestFile, ScriptFile, ReadmeFile}

// Manifest is launch.json: everything flare-agent needs to launch the CVM
// and to check its attestation. File names are relative to the kit folder.
type Manifest struct {
	// Version is ManifestVersion.
	Version int `json:"version"`
	// ID is the kit's short id, the <id> of its folder cvm_<id>: the first
	// 8 hex digits of a SHA-256 over every input, so the same inputs give
	// the same folder.
	ID string `json:"id"`
	// Serial orders the kits of a participant: flare_cvm_kit sets it at
	// build time (milliseconds since 1970, kept when a rebuild changes
	// nothing in launch.json, else above the previous one), and
	// flare-agent refuses a kit whose serial is below the highest it has
	// run for the participant, so a superseded kit cannot be launched
	// again.
	Serial      int64  `json:"serial"`
	Participant string `json:"participant"`
	// Role is "server" or "client"; ComputeEnv and CCCPUMechanism are the
	// CC config's compute_env (onprem_cvm) and cc_cpu_mechanism (amd_sev_snp).
	Role           string `json:"role"`
	ComputeEnv     string `json:"compute_env"`
	CCCPUMechanism string `json:"cc_cpu_mechanism"`

	// VCPUs is QEMU's -smp; VCPUType its -cpu model. Both are part of the
	// measurement.
	VCPUs    int    `json:"vcpus"`
	VCPUType string `json:"vcpu_type"`
	// MemoryMiB is the guest RAM (-m, and the size of the memfd backend).
	MemoryMiB int `json:"memory_mib"`

	// Firmware is the OVMF image for -bios; Kernel, Initrd and
	// KernelCmdline are -kernel, -initrd and -append. With KernelHashes
	// QEMU puts their SHA-256 into the measured hashes table
	// (sev-snp-guest kernel-hashes=on).
	Firmware      File   `json:"firmware"`
	Kernel        File   `json:"kernel"`
	Initrd        *File  `json:"initrd,omitempty"`
	KernelCmdline string `json:"kernel_cmdline"`
	KernelHashes  bool   `json:"kernel_hashes"`

	// GuestPolicy is the SNP guest policy (sev-snp-guest policy=), in hex
	// with 0x. GuestFeatures is the VMSA SEV_FEATURES the measurement
	// assumes (set by the host's KVM, not by QEMU), in hex with 0x.
	GuestPolicy   string `json:"guest_policy"`
	GuestFeatures string `json:"guest_features"`
	// HostData is the 32-byte HOST_DATA in hex (QEMU takes it in base64:
	// host-data=); empty when not set. Every report carries it verbatim.
	HostData string `json:"host_data,omitempty"`
	// ExpectedMeasurement is the 48-byte SNP launch digest in hex that a
	// report's MEASUREMENT must equal; empty if the caller gave none.
	ExpectedMeasurement string `json:"expected_measurement"`

	// Drives in the order they are attached: the root drive first
	// (/dev/vda), then applog, user_config, user_data.
	Drives []Drive `json:"drives"`

	// AllowedPorts are the inbound TCP ports the CVM's firewall opens (and
	// launch_vm.sh forwards from the host); AllowedOutPorts the outbound
	// ones. HostsEntries is added to the CVM's /etc/hosts.
	AllowedPorts    []int             `json:"allowed_ports"`
	AllowedOutPorts []int             `json:"allowed_out_ports"`
	HostsEntries    map[string]string `json:"hosts_entries"`

	// CCIssuers and CheckFrequency (seconds) configure NVFlare's CCManager
	// in the CVM (cc_issuers, cc_attestation.check_frequency);
	// FailureAction is cc_attestation.failure_action.
	CCIssuers      []Issuer `json:"cc_issuers"`
	CheckFrequency int      `json:"check_frequency"`
	FailureAction  string   `json:"failure_action,omitempty"`

	// Image is the docker image's config: what the CVM runs from the root
	// drive (entrypoint, cmd, env, working dir, user).
	Image ImageConfig `json:"image"`
}

// File is a file of the kit folder with its size and SHA-256 (hex).
type File struct {
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Drive is one disk image of the kit.
type Drive struct {
	// Name is root, applog, user_config or user_data.
	Name string `json:"name"`
	// File is the image's name in the kit folder; Format is "qcow2".
	File   string `json:"file"`
	Format string `json:"format"`
	// VirtualSize is the disk size the guest sees, in bytes (for an
	// encrypted drive: the LUKS header plus SizeGB). SizeGB is the
	// configured size (root_drive_size and so on).
	VirtualSize int64 `json:"virtual_size"`
	SizeGB      int   `json:"size_gb"`
	// FileSize and SHA256 are of the image file itself.
	FileSize int64  `json:"file_size"`
	SHA256   string `json:"sha256"`
	// Serial is the virtio-blk serial, so the guest finds the drive as
	// /dev/disk/by-id/virtio-<serial> whatever the attach order.
	Serial string `json:"serial"`
	// MountPoint is where the CVM mounts the file system.
	MountPoint string `json:"mount_point"`
	// Filesystem is "ext4"; Label and UUID are the file system's.
	Filesystem string `json:"filesystem"`
	Label      string `json:"label"`
	UUID       string `json:"uuid"`
	// Encrypted: the drive is a LUKS1 container around the file system;
	// its key is not in the kit (Build returns it to the caller).
	Encrypted bool `json:"encrypted"`
}

// GuestConfigFile is where the root drive carries GuestConfig.
const GuestConfigFile = ".flare/cvm.json"

// GuestConfig is written into the root drive at /.flare/cvm.json for the
// CVM's init: what to run, the firewall, /etc/hosts, the drives and the
// CC settings. It travels inside the (optionally encrypted) root, not in
// the host-editable user_config drive.
type GuestConfig struct {
	Version         int               `json:"version"`
	Participant     string            `json:"participant"`
	Role            string            `json:"role"`
	Image           ImageConfig       `json:"image"`
	AllowedPorts    []int             `json:"allowed_ports"`
	AllowedOutPorts []int             `json:"allowed_out_ports"`
	HostsEntries    map[string]string `json:"hosts_entries"`
	// Drives maps the other drives' virtio serials to mount points.
	Drives         []GuestDrive `json:"drives"`
	CCIssuers      []Issuer     `json:"cc_issuers"`
	CheckFrequency int          `json:"check_frequency"`
	FailureAction  string       `json:"failure_action,omitempty"`
}

// GuestDrive is a drive as the guest sees it.
type GuestDrive struct {
	Name       string `json:"name"`
	Serial     string `json:"serial"`
	MountPoint string `json:"mount_point"`
	Label      string `json:"label"`
	UUID       string `json:"uuid"`
}
