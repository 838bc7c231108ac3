package cvm

import (
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/flarekit/terraform-provider-flare/internal/guestconfig"
)

// Values of the CC config keys NVFlare defines
// (nvflare/lighter/cc_provision/cc_constants.py, CCConfigValue).
const (
	ComputeEnvOnPremCVM = "onprem_cvm"
	CPUMechanismSNP     = "amd_sev_snp"
	RoleServer          = "server"
	RoleClient          = "client"
)

// Defaults filled in by WithDefaults.
const (
	// DefaultGuestPolicy is QEMU's default SNP policy: SMT allowed and the
	// reserved bit 17 set; no debug, no migration agent.
	DefaultGuestPolicy uint64 = 0x30000
	// DefaultGuestFeatures is the VMSA SEV_FEATURES value upstream KVM
	// (6.11+) with QEMU 9.1 uses: SNPActive only.
	DefaultGuestFeatures uint64 = 0x1
	DefaultVCPUType             = "EPYC-v4"
	// DefaultCheckFrequency is NVFlare's CCManager default (cc.py) when
	// cc_attestation is absent.
	DefaultCheckFrequency = 600
	// DefaultKernelCmdline boots the root drive, the first virtio disk.
	DefaultKernelCmdline = "console=ttyS0 root=/dev/vda rw"
	// DefaultKernelCmdlineEncrypted is the default when the root drive is
	// a LUKS container that the initrd opens as /dev/mapper/crypt_root.
	DefaultKernelCmdlineEncrypted = "console=ttyS0 root=/dev/mapper/crypt_root rw"

	// MinMemoryMiB is the smallest memory Validate accepts.
	MinMemoryMiB = 512
	// MaxVCPUs is KVM's largest vCPU count (KVM_MAX_VCPUS).
	MaxVCPUs = 4096
	// maxCmdline is x86 Linux's COMMAND_LINE_SIZE less the NUL.
	maxCmdline = 2047
)

// Issuer is one entry of cc_issuers: a CC attestation token issuer
// (NVFlare CCAuthorizer) that CCManager loads in the guest.
type Issuer struct {
	ID   string `json:"id"`
	Path string `json:"path"` // Python class path, e.g. nvflare.app_opt.confidential_computing.snp_authorizer.SNPAuthorizer
	// TokenExpiration is in seconds and must be below
	// cc_attestation.check_frequency.
	TokenExpiration int            `json:"token_expiration"`
	Args            map[string]any `json:"args,omitempty"`
}

// Attestation is cc_attestation.
type Attestation struct {
	// CheckFrequency is in seconds; 0 means DefaultCheckFrequency.
	CheckFrequency int `json:"check_frequency"`
	// FailureAction is what CCManager does when a check fails
	// (NVFlare's example uses "stop_job"); empty leaves NVFlare's default.
	FailureAction string `json:"failure_action,omitempty"`
}

// Config is a site's CC config. JSON names are the keys of NVFlare's CC
// deployment guide (docs/user_guide/confidential_computing/on_premises/
// cc_deployment_guide.rst) where the guide has them; the launch parameters
// below them are this provider's.
type Config struct {
	ComputeEnv     string `json:"compute_env"`      // onprem_cvm
	CCCPUMechanism string `json:"cc_cpu_mechanism"` // amd_sev_snp
	Role           string `json:"role"`             // server or client

	// Drive sizes in GB (GiB, as qemu-img's "G").
	RootDriveSizeGB       int `json:"root_drive_size"`
	AppLogDriveSizeGB     int `json:"applog_drive_size"`
	UserConfigDriveSizeGB int `json:"user_config_drive_size"`
	UserDataDriveSizeGB   int `json:"user_data_drive_size"`

	// DockerArchive is the output of `docker save` (tar, or tar.gz as in
	// `docker save img | gzip`); an OCI image layout tar works too.
	DockerArchive string `json:"docker_archive"`
	// UserConfig maps a name to a host file or directory; it is copied to
	// the user_config drive and appears at /user_config/<name>. The name
	// "nvflare" is the startup kit's.
	UserConfig map[string]string `json:"user_config,omitempty"`

	AllowedPorts    []int `json:"allowed_ports,omitempty"`     // inbound
	AllowedOutPorts []int `json:"allowed_out_ports,omitempty"` // outbound
	// HostsEntries maps host name to IP address, for /etc/hosts in the CVM.
	HostsEntries map[string]string `json:"hosts_entries,omitempty"`

	CCIssuers     []Issuer     `json:"cc_issuers,omitempty"`
	CCAttestation *Attestation `json:"cc_attestation,omitempty"`

	// Launch parameters (not in NVFlare's config; NVFlare's image builder
	// fixes them). Each of VCPUs, VCPUType, Firmware, Kernel, Initrd,
	// KernelCmdline and GuestFeatures changes the SNP launch measurement.
	VCPUs     int    `json:"vcpus"`
	VCPUType  string `json:"vcpu_type"`  // QEMU -cpu model, e.g. EPYC-v4
	MemoryMiB int    `json:"memory_mib"` // guest RAM
	// Firmware is the OVMF image for -bios; with a kernel it must be an
	// AmdSev build with a kernel-hashes table (OVMF.amdsev.fd).
	Firmware string `json:"firmware"`
	Kernel   string `json:"kernel"`
	// Initrd is an initrd of the caller's own; empty makes Build write the
	// kit's own (GuestInitrd): flare-init as /init, the measured guest
	// config and the kernel modules it needs.
	Initrd string `json:"initrd,omitempty"`
	// GuestInit is the static flare-init binary for the kit's own initrd.
	GuestInit string `json:"guest_init,omitempty"`
	// KernelModules is the kernel's module folder (/lib/modules/<version>,
	// with modules.dep); empty: <root>/lib/modules/<version> for a Kernel
	// at <root>/boot/vmlinuz-<version>.
	KernelModules string `json:"kernel_modules,omitempty"`
	// KeyRelease is the key broker the guest gets the root key from
	// (required with EncryptRoot and the kit's own initrd).
	KeyRelease    *guestconfig.KeyRelease `json:"key_release,omitempty"`
	KernelCmdline string                  `json:"kernel_cmdline"`
	// GuestPolicy is the SNP guest policy; 0 means DefaultGuestPolicy.
	GuestPolicy uint64 `json:"guest_policy"`
	// GuestFeatures is the VMSA SEV_FEATURES; 0 means DefaultGuestFeatures.
	// QEMU does not take it: it must match what the host's KVM sets.
	GuestFeatures uint64 `json:"guest_features"`
	// HostData is 32 bytes in hex (64 characters), reported verbatim as
	// HOST_DATA in every attestation report; optional.
	HostData string `json:"host_data,omitempty"`

	// EncryptRoot makes the root drive a LUKS1 container (crypt_root.qcow2)
	// whose key is returned to the caller and never written to the kit.
	EncryptRoot bool `json:"encrypt_root"`
	// UserDataExtMount, when set, is written to ext_mount.conf on the
	// user_data drive: an NFS export "server:/path" the CVM mounts at
	// /user_data/mnt.
	UserDataExtMount string `json:"user_data_ext_mount,omitempty"`
}

// WithDefaults returns c with empty optional settings filled in. Build and
// the measurement must see the same values, so callers should measure
// WithDefaults().MeasureInput().
func (c Config) WithDefaults() Config {
	if c.ComputeEnv == "" {
		c.ComputeEnv = ComputeEnvOnPremCVM
	}
	if c.CCCPUMechanism == "" {
		c.CCCPUMechanism = CPUMechanismSNP
	}
	if c.VCPUType == "" {
		c.VCPUType = DefaultVCPUType
	}
	if c.GuestPolicy == 0 {
		c.GuestPolicy = DefaultGuestPolicy
	}
	if c.GuestFeatures == 0 {
		c.GuestFeatures = DefaultGuestFeatures
	}
	if c.KernelCmdline == "" {
		c.KernelCmdline = DefaultKernelCmdline
		if c.EncryptRoot {
			c.KernelCmdline = DefaultKernelCmdlineEncrypted
		}
	}
	if c.CCAttestation == nil {
		c.CCAttestation = &Attestation{}
	} else {
		a := *c.CCAttestation
		c.CCAttestation = &a
	}
	if c.CCAttestation.CheckFrequency == 0 {
		c.CCAttestation.CheckFrequency = DefaultCheckFrequency
	}
	return c
}

// CheckFrequency is cc_attestation.check_frequency with its default.
func (c Config) CheckFrequency() int {
	if c.CCAttestation == nil || c.CCAttestation.CheckFrequency == 0 {
		return DefaultCheckFrequency
	}
	return c.CCAttestation.CheckFrequency
}

// MeasureInput is what the SEV-SNP launch digest depends on. internal/measure
// takes it as measure.Options{OVMFPath: Firmware, KernelPath: Kernel,
// InitrdPath: Initrd, Cmdline, VCPUs, VCPUType, GuestFeatures}.
type MeasureInput struct {
	Firmware, Kernel, Initrd, Cmdline string
	VCPUs                             int
	VCPUType                          string
	GuestFeatures                     uint64
}

// MeasureInput returns the measurement inputs of c (after WithDefaults).
func (c Config) MeasureInput() MeasureInput {
	d := c.WithDefaults()
	return MeasureInput{
		Firmware: d.Firmware, Kernel: d.Kernel, Initrd: d.Initrd, Cmdline: d.KernelCmdline,
		VCPUs: d.VCPUs, VCPUType: d.VCPUType, GuestFeatures: d.GuestFeatures,
	}
}

// FieldError is one problem with one setting. Field is the snake_case key
// as in NVFlare's guide, with [i] for list items and .<key> for map entries:
// "cc_issuers[0].token_expiration", "user_config.nvflare", "allowed_ports[2]".
type FieldError struct {
	Field   string
	Problem string
	Fix     string
}

func (e FieldError) Error() string {
	if e.Fix == "" {
		return e.Field + ": " + e.Problem
	}
	return e.Field + ": " + e.Problem + "; " + e.Fix
}

// ValidationError carries every FieldError of a config.
type ValidationError []FieldError

func (v ValidationError) Error() string {
	msgs := make([]string, len(v))
	for i, e := range v {
		msgs[i] = e.Error()
	}
	return "invalid CC config: " + strings.Join(msgs, "\n")
}

// SNP guest policy bits (SEV-SNP ABI, see research/snp.md 1.2).
const (
	policyBitSMT       = 16
	policyBitReserved1 = 17 // must be 1
	policyBitMigrateMA = 18
	policyBitDebug     = 19
	policyHighestBit   = 25 // bits 26-63 must be zero
)

var (
	keyNameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	vcpuTypeRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	hostnameRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
	issuerPathRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$`)
	extMountRE   = regexp.MustCompile(`^[^\s:]+:/\S*$`)
)

// ReservedUserConfigKey is where the startup kit goes on the user_config
// drive (NVFlare's OnPremPackager sets user_config.nvflare to the kit).
const ReservedUserConfigKey = "nvflare"

// Validate checks c after WithDefaults and returns every problem found,
// each with the field and the fix; nil means valid. It reads the files the
// config names (existence, readability; the docker archive's manifest).
func (c Config) Validate() []FieldError {
	d := c.WithDefaults()
	var errs []FieldError
	add := func(field, problem, fix string) {
		errs = append(errs, FieldError{Field: field, Problem: problem, Fix: fix})
	}

	if d.ComputeEnv != ComputeEnvOnPremCVM {
		add("compute_env", fmt.Sprintf("%q is not supported", d.ComputeEnv), `set it to "onprem_cvm" (the only environment this kit launches)`)
	}
	if d.CCCPUMechanism != CPUMechanismSNP {
		add("cc_cpu_mechanism", fmt.Sprintf("%q is not supported", d.CCCPUMechanism), `set it to "amd_sev_snp"`)
	}
	switch d.Role {
	case RoleServer, RoleClient:
	case "":
		add("role", "is missing", `set it to "server" or "client"`)
	default:
		add("role", fmt.Sprintf("%q is not a CC role", d.Role), `set it to "server" or "client" (NVFlare runs only servers and clients in CVMs; admins and relays use ordinary kits)`)
	}

	for _, s := range []struct {
		field string
		v     int
	}{
		{"root_drive_size", d.RootDriveSizeGB},
		{"applog_drive_size", d.AppLogDriveSizeGB},
		{"user_config_drive_size", d.UserConfigDriveSizeGB},
		{"user_data_drive_size", d.UserDataDriveSizeGB},
	} {
		if s.v <= 0 {
			add(s.field, fmt.Sprintf("is %d", s.v), "set a size in GB greater than 0")
		} else if s.v > 64*1024 {
			add(s.field, fmt.Sprintf("is %d GB", s.v), "set a size of at most 65536 GB")
		}
	}

	if d.DockerArchive == "" {
		add("docker_archive", "is missing", "set it to the output of `docker save <image> | gzip > app.tar.gz`")
	} else if err := checkReadableFile(d.DockerArchive); err != nil {
		add("docker_archive", err.Error(), "point it at a readable `docker save` archive (tar or tar.gz)")
	} else if err := InspectArchive(d.DockerArchive); err != nil {
		add("docker_archive", err.Error(), "create it with `docker save <image>` (optionally piped through gzip)")
	}

	for _, k := range sortedKeys(d.UserConfig) {
		field := "user_config." + k
		p := d.UserConfig[k]
		switch {
		case k == ReservedUserConfigKey:
			add(field, "is reserved for the startup kit", "use another name; the kit is placed at /user_config/nvflare")
		case !keyNameRE.MatchString(k) || k == "." || k == "..":
			add(field, fmt.Sprintf("%q is not a plain file name", k), "use letters, digits, '.', '_' and '-' (it becomes /user_config/<name>)")
		case p == "":
			add(field, "has no path", "set it to a host file or directory")
		default:
			if err := checkReadablePath(p); err != nil {
				add(field, err.Error(), "point it at a readable host file or directory")
			}
		}
	}

	checkPorts := func(field string, ports []int) {
		seen := map[int]bool{}
		for i, p := range ports {
			f := fmt.Sprintf("%s[%d]", field, i)
			if p < 1 || p > 65535 {
				add(f, fmt.Sprintf("port %d is out of range", p), "use a port from 1 to 65535")
			} else if seen[p] {
				add(f, fmt.Sprintf("port %d is listed twice", p), "remove the duplicate")
			}
			seen[p] = true
		}
	}
	checkPorts("allowed_ports", d.AllowedPorts)
	checkPorts("allowed_out_ports", d.AllowedOutPorts)

	for _, h := range sortedKeys(d.HostsEntries) {
		field := "hosts_entries." + h
		if len(h) > 253 || !hostnameRE.MatchString(h) {
			add(field, fmt.Sprintf("%q is not a valid host name", h), "use a DNS name such as server1 or fl.example.com")
		}
		if net.ParseIP(d.HostsEntries[h]) == nil {
			add(field, fmt.Sprintf("%q is not an IP address", d.HostsEntries[h]), "map the name to an IPv4 or IPv6 address")
		}
	}

	freq := d.CCAttestation.CheckFrequency
	if freq < 0 {
		add("cc_attestation.check_frequency", fmt.Sprintf("is %d", freq), "set the attestation check interval in seconds, greater than 0")
	}
	ids := map[string]bool{}
	for i, is := range d.CCIssuers {
		f := fmt.Sprintf("cc_issuers[%d]", i)
		if is.ID == "" {
			add(f+".id", "is missing", "name the issuer, e.g. snp_authorizer")
		} else if ids[is.ID] {
			add(f+".id", fmt.Sprintf("%q is used twice", is.ID), "give each issuer its own id")
		}
		ids[is.ID] = true
		if !issuerPathRE.MatchString(is.Path) {
			add(f+".path", fmt.Sprintf("%q is not a Python class path", is.Path), "use e.g. nvflare.app_opt.confidential_computing.snp_authorizer.SNPAuthorizer")
		}
		switch {
		case is.TokenExpiration <= 0:
			add(f+".token_expiration", fmt.Sprintf("is %d", is.TokenExpiration), fmt.Sprintf("set the token lifetime in seconds, greater than 0 and less than cc_attestation.check_frequency (%d)", freq))
		case freq > 0 && is.TokenExpiration >= freq:
			add(f+".token_expiration", fmt.Sprintf("%d s is not less than cc_attestation.check_frequency (%d s)", is.TokenExpiration, freq),
				fmt.Sprintf("lower token_expiration below %d or raise check_frequency above %d", freq, is.TokenExpiration))
		}
	}

	if d.VCPUs < 1 || d.VCPUs > MaxVCPUs {
		add("vcpus", fmt.Sprintf("is %d", d.VCPUs), fmt.Sprintf("set 1 to %d vCPUs", MaxVCPUs))
	}
	if !vcpuTypeRE.MatchString(d.VCPUType) {
		add("vcpu_type", fmt.Sprintf("%q is not a QEMU CPU model name", d.VCPUType), "use a model such as EPYC-v4, EPYC-Milan or EPYC-Genoa")
	}
	if d.MemoryMiB < MinMemoryMiB {
		add("memory_mib", fmt.Sprintf("is %d MiB", d.MemoryMiB), fmt.Sprintf("give the guest at least %d MiB", MinMemoryMiB))
	}

	for _, f := range []struct {
		field, path, what string
		required          bool
	}{
		{"firmware", d.Firmware, "the OVMF firmware (an AmdSev build such as OVMF.amdsev.fd)", true},
		{"kernel", d.Kernel, "the guest kernel (vmlinuz)", true},
		{"initrd", d.Initrd, "the guest initrd", false},
		{"guest_init", d.GuestInit, "the static flare-init binary (make flare-init)", d.Initrd == ""},
	} {
		if f.path == "" {
			if f.required {
				add(f.field, "is missing", "set it to "+f.what)
			}
			continue
		}
		if err := checkReadableFile(f.path); err != nil {
			add(f.field, err.Error(), "point it at "+f.what)
		}
	}
	if d.Initrd == "" {
		errs = append(errs, d.validateOwnInitrd()...)
	}
	switch {
	case len(d.KernelCmdline) > maxCmdline:
		add("kernel_cmdline", fmt.Sprintf("is %d bytes long", len(d.KernelCmdline)), fmt.Sprintf("keep it to %d bytes (x86 COMMAND_LINE_SIZE)", maxCmdline))
	case strings.ContainsAny(d.KernelCmdline, "\x00\n\r"):
		add("kernel_cmdline", "contains a NUL or line break", "write the command line on one line")
	}

	if p := checkPolicy(d.GuestPolicy); p != "" {
		add("guest_policy", fmt.Sprintf("0x%x: %s", d.GuestPolicy, p), "use 0x30000 (QEMU's default) or another policy with bit 17 set and bits 26-63 clear")
	}
	if d.GuestFeatures&1 == 0 {
		add("guest_features", fmt.Sprintf("0x%x lacks SNPActive (bit 0)", d.GuestFeatures), "use 0x1 (upstream KVM) or the value your host's KVM sets, e.g. 0x21 with debug_swap")
	}
	if d.HostData != "" {
		if b, err := hex.DecodeString(d.HostData); err != nil || len(b) != 32 {
			add("host_data", fmt.Sprintf("%q is not 32 bytes in hex", d.HostData), "give exactly 64 hex characters (e.g. a SHA-256), or leave it empty")
		}
	}
	if d.UserDataExtMount != "" && !extMountRE.MatchString(d.UserDataExtMount) {
		add("user_data_ext_mount", fmt.Sprintf("%q is not an NFS export", d.UserDataExtMount), "write it as server:/export/path")
	}
	return errs
}

// checkPolicy returns what is wrong with an SNP guest policy, or "".
func checkPolicy(p uint64) string {
	var bad []string
	if p&(1<<policyBitReserved1) == 0 {
		bad = append(bad, "reserved bit 17 must be 1")
	}
	if p>>(policyHighestBit+1) != 0 {
		bad = append(bad, "bits 26-63 are reserved and must be 0")
	}
	return strings.Join(bad, ", ")
}

// policyNotes describes policy bits a reader should know about.
func policyNotes(p uint64) []string {
	var n []string
	if p&(1<<policyBitDebug) != 0 {
		n = append(n, fmt.Sprintf("guest policy 0x%x allows DEBUG (bit 19): the host can read and change guest memory; use it for development only", p))
	}
	if p&(1<<policyBitMigrateMA) != 0 {
		n = append(n, fmt.Sprintf("guest policy 0x%x allows a migration agent (bit 18)", p))
	}
	return n
}

func checkReadableFile(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return cleanPathErr(err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	f, err := os.Open(p)
	if err != nil {
		return cleanPathErr(err)
	}
	return f.Close()
}

func checkReadablePath(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return cleanPathErr(err)
	}
	if fi.IsDir() {
		f, err := os.Open(p)
		if err != nil {
			return cleanPathErr(err)
		}
		defer f.Close()
		if _, err := f.ReadDir(1); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("cannot list %s: %w", p, err)
		}
		return nil
	}
	return checkReadableFile(p)
}

func cleanPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		switch {
		case os.IsNotExist(pe.Err):
			return fmt.Errorf("%s does not exist", pe.Path)
		case os.IsPermission(pe.Err):
			return fmt.Errorf("%s is not readable (permission denied)", pe.Path)
		}
		return fmt.Errorf("%s: %v", pe.Path, pe.Err)
	}
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// validateOwnInitrd checks what the kit's own initrd is made from: a static
// flare-init, the kernel's modules, and a key broker for an encrypted root.
func (d Config) validateOwnInitrd() []FieldError {
	var errs []FieldError
	add := func(field, problem, fix string) {
		errs = append(errs, FieldError{Field: field, Problem: problem, Fix: fix})
	}
	if d.GuestInit != "" {
		if f, err := elf.Open(d.GuestInit); err != nil {
			add("guest_init", fmt.Sprintf("%s is not an ELF executable: %v", d.GuestInit, cleanPathErr(err)), "build it with make flare-init")
		} else {
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					add("guest_init", d.GuestInit+" is dynamically linked; the initrd has no libc", "build it static: CGO_ENABLED=0 (make flare-init)")
					break
				}
			}
			f.Close()
		}
	}
	if d.Kernel != "" {
		if _, err := os.Stat(d.ModulesDir()); err != nil {
			add("kernel_modules", fmt.Sprintf("the kernel's modules are not at %s", d.ModulesDir()),
				"set kernel_modules to its /lib/modules/<version> folder (scripts/guest-kernel.sh unpacks Debian's 6.12 cloud kernel with them)")
		}
	}
	if d.EncryptRoot && d.KeyRelease == nil {
		add("key_release", "is missing: an encrypted root needs a key broker the guest attests to for its key",
			"set key_release (url, ca_cert_pem) to your flare-kbs or Trustee KBS, or set encrypt_root = false to build a plaintext root knowingly")
	}
	if d.KeyRelease != nil {
		kr := d.KeyRelease
		if !strings.HasPrefix(kr.URL, "https://") || strings.ContainsAny(kr.URL, " \n") {
			add("key_release.url", fmt.Sprintf("%q is not an https:// URL", kr.URL), "give the broker's base URL, e.g. https://kbs.example.org:8999")
		}
		if !strings.Contains(kr.CACertPEM, "-----BEGIN CERTIFICATE-----") {
			add("key_release.ca_cert_pem", "holds no PEM certificate", "give the broker's TLS CA certificate: the guest trusts no other")
		}
		if kr.Resource != "" {
			if err := guestconfig.CheckResource(kr.Resource); err != nil {
				add("key_release.resource", err.Error(), "use <repository>/<type>/<tag>, e.g. flare/root-key/site-1")
			}
		}
		if !d.EncryptRoot {
			add("key_release", "is set but encrypt_root is false: there is no key to release", "set encrypt_root = true, or remove key_release")
		}
	}
	return errs
}

// ModulesDir is KernelModules, or the folder derived from Kernel.
func (c Config) ModulesDir() string {
	if c.KernelModules != "" {
		return c.KernelModules
	}
	base := filepath.Base(c.Kernel)
	ver, ok := strings.CutPrefix(base, "vmlinuz-")
	if !ok {
		return filepath.Join(filepath.Dir(c.Kernel), "modules")
	}
	root := filepath.Dir(filepath.Dir(c.Kernel))
	return filepath.Join(root, "lib", "modules", ver)
}
