// Package config reads flare-agent's agent.yaml.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/internal/agentid"
	"github.com/flarekit/terraform-provider-flare/internal/attest"
)

// Restart policies.
const (
	RestartNever     = "never"
	RestartOnFailure = "on-failure"
)

// Config is agent.yaml.
type Config struct {
	// Listen is host:port of the HTTPS API (e.g. 127.0.0.1:8443).
	Listen string `yaml:"listen"`
	// StateDir holds cvms/<id>/ (state.json, QMP and attestation sockets,
	// console log) and unpacked uploads (kits/<id>/).
	StateDir string `yaml:"state_dir"`
	// AgentKitDir is the agent kit flare_agent_identity writes: agent.crt
	// and agent.key are the agent's own TLS identity (CN
	// "<site>:flare-agent", never a participant's), rootCA.pem the only CA
	// whose client certificates are accepted.
	AgentKitDir string `yaml:"agent_kit_dir"`
	// KitDir was the site's startup kit, whose participant key the agent
	// used as its identity. It is refused: the host must not hold that key.
	KitDir string `yaml:"kit_dir"`
	// Org is the site's organization: org_admin certificates of this org
	// may launch and stop. Empty: the O of the agent's own certificate.
	Org string `yaml:"org"`
	// QEMU is the qemu-system-x86_64 binary (default: found on PATH).
	QEMU string `yaml:"qemu"`
	// Mode is auto, snp or simulated. auto launches SNP when the host
	// and QEMU support it and simulated otherwise; snp refuses to launch
	// (with the reasons) when SNP is unavailable.
	Mode string `yaml:"mode"`
	// Accel is the accelerator in simulated mode: auto (KVM when /dev/kvm
	// opens, else TCG), kvm or tcg. SEV-SNP always uses KVM. Nested
	// virtualization may offer a /dev/kvm that cannot boot Linux guests;
	// set tcg there.
	Accel string `yaml:"accel"`
	// SimulatedCPU is QEMU's -cpu in simulated mode (default: host with
	// KVM, max with TCG). SEV-SNP uses the kit's vcpu_type.
	SimulatedCPU string `yaml:"simulated_cpu"`
	// SimulatedFirmware, when set, is the firmware QEMU boots in simulated
	// mode instead of the kit's. A kit carries OVMF's AmdSev build, made
	// for SEV-SNP, which a host's QEMU may be unable to run without SEV;
	// nothing is measured in simulated mode, so any OVMF that boots the
	// kit's kernel will do (e.g. Debian's /usr/share/ovmf/OVMF.fd). The
	// kit's firmware is still checked against launch.json.
	SimulatedFirmware string `yaml:"simulated_firmware"`
	// Restart is the policy when QEMU exits without a stop request.
	Restart Restart `yaml:"restart"`
	// StopTimeout is how long a stop waits after system_powerdown before
	// it sends quit (and after quit before it kills QEMU).
	StopTimeout Duration `yaml:"stop_timeout"`
	// AttestTimeout bounds one guest round trip.
	AttestTimeout Duration `yaml:"attest_timeout"`
	// AllowedKitDirs, when set, are the only folders under which
	// POST /v1/cvms may name a kit.
	AllowedKitDirs []string `yaml:"allowed_kit_dirs"`
	// MaxUploadBytes bounds an uploaded kit archive (unpacked size too).
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
	// MaxConcurrentUploads is how many uploads may be received at once;
	// more get 429.
	MaxConcurrentUploads int `yaml:"max_concurrent_uploads"`
	// MaxUploadsTotalBytes bounds what all uploads in progress may unpack
	// together: each upload is admitted with the part of it still free
	// (at most max_upload_bytes), and refused with 429 when none is.
	MaxUploadsTotalBytes int64 `yaml:"max_uploads_total_bytes"`
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout bound
	// every connection of the API: request headers, a whole request
	// (headers and body), the answer (from the end of the headers), and
	// an idle keep-alive connection. Handlers that need longer (an
	// upload's body, a launch copying drives, a stop) extend their own
	// request's deadlines.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	ReadTimeout       Duration `yaml:"read_timeout"`
	WriteTimeout      Duration `yaml:"write_timeout"`
	IdleTimeout       Duration `yaml:"idle_timeout"`
	// UploadTimeout bounds receiving one upload's body (a slow or stalled
	// upload is cut off and its partial files deleted).
	UploadTimeout Duration `yaml:"upload_timeout"`
	// LaunchTimeout bounds a launch's answer: copying and hashing a kit's
	// drives and starting QEMU.
	LaunchTimeout Duration `yaml:"launch_timeout"`
	// ConsoleLogMaxBytes caps a CVM's console.log, which the guest
	// writes: beyond it the log is rotated to console.log.1 (the older
	// one dropped), so a CVM keeps at most about twice this on disk.
	ConsoleLogMaxBytes int64 `yaml:"console_log_max_bytes"`
	// Network is "user" (QEMU user networking with the kit's
	// allowed_ports forwarded) or "none".
	Network string `yaml:"network"`
	// ForwardAddress is the host address forwarded ports bind to
	// (default: all addresses, as launch_vm.sh).
	ForwardAddress string `yaml:"forward_address"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// VCEKCacheDir holds VCEK certificates for reports whose certificate
	// table has none (upstream host kernels send none); nothing is ever
	// fetched from AMD.
	VCEKCacheDir string `yaml:"vcek_cache_dir"`
	// MinimumTCB is the lowest REPORTED_TCB a report may carry, as a
	// TCB_VERSION in hex (each SPL compared on its own); empty: any.
	MinimumTCB string `yaml:"minimum_tcb"`
	// StatusListen, when set, serves the read-only HTML status page on
	// plain HTTP at this loopback address (e.g. 127.0.0.1:8081), for a
	// local browser or a reverse proxy. It must be a loopback address.
	StatusListen string `yaml:"status_listen"`
}

// Restart is the restart policy.
type Restart struct {
	Policy      string `yaml:"policy"`       // never | on-failure
	MaxRestarts int    `yaml:"max_restarts"` // for on-failure
}

// Duration is a time.Duration written as "30s" in YAML.
type Duration time.Duration

// UnmarshalYAML reads "30s", "2m" or a number of seconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	if v, err := time.ParseDuration(s); err == nil {
		*d = Duration(v)
		return nil
	}
	var secs float64
	if _, err := fmt.Sscanf(s, "%g", &secs); err == nil {
		*d = Duration(time.Duration(secs * float64(time.Second)))
		return nil
	}
	return fmt.Errorf("%q is not a duration (e.g. 30s, 2m)", s)
}

// MarshalYAML writes the duration as text.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Defaults.
const (
	DefaultStopTimeout    = 30 * time.Second
	DefaultAttestTimeout  = 30 * time.Second
	DefaultMaxUploadBytes = 16 << 30
	DefaultMaxRestarts    = 3

	DefaultMaxConcurrentUploads = 2
	DefaultReadHeaderTimeout    = 10 * time.Second
	DefaultReadTimeout          = 30 * time.Second
	DefaultWriteTimeout         = 60 * time.Second
	DefaultIdleTimeout          = 120 * time.Second
	DefaultUploadTimeout        = 30 * time.Minute
	DefaultLaunchTimeout        = 30 * time.Minute
	DefaultConsoleLogMaxBytes   = 16 << 20
)

// Load reads and checks path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(b, filepath.Dir(path))
}

// Parse reads a config; relative paths are taken relative to base.
func Parse(b []byte, base string) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	c.StateDir, c.KitDir, c.VCEKCacheDir = abs(c.StateDir), abs(c.KitDir), abs(c.VCEKCacheDir)
	c.AgentKitDir = abs(c.AgentKitDir)
	c.SimulatedFirmware = abs(c.SimulatedFirmware)
	for i, d := range c.AllowedKitDirs {
		c.AllowedKitDirs[i] = filepath.Clean(abs(d))
	}
	if c.QEMU != "" && strings.ContainsRune(c.QEMU, os.PathSeparator) {
		c.QEMU = abs(c.QEMU)
	}
	c.applyDefaults()
	return &c, c.Validate()
}

func (c *Config) applyDefaults() {
	if c.Mode == "" {
		c.Mode = api.ModeAuto
	}
	if c.Accel == "" {
		c.Accel = "auto"
	}
	if c.QEMU == "" {
		c.QEMU = "qemu-system-x86_64"
	}
	if c.Restart.Policy == "" {
		c.Restart.Policy = RestartOnFailure
	}
	if c.Restart.Policy == RestartOnFailure && c.Restart.MaxRestarts == 0 {
		c.Restart.MaxRestarts = DefaultMaxRestarts
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = Duration(DefaultStopTimeout)
	}
	if c.AttestTimeout == 0 {
		c.AttestTimeout = Duration(DefaultAttestTimeout)
	}
	if c.MaxUploadBytes == 0 {
		c.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if c.MaxConcurrentUploads == 0 {
		c.MaxConcurrentUploads = DefaultMaxConcurrentUploads
	}
	if c.MaxUploadsTotalBytes == 0 {
		c.MaxUploadsTotalBytes = int64(c.MaxConcurrentUploads) * c.MaxUploadBytes
	}
	for _, d := range []struct {
		v   *Duration
		def time.Duration
	}{{&c.ReadHeaderTimeout, DefaultReadHeaderTimeout}, {&c.ReadTimeout, DefaultReadTimeout}, {&c.WriteTimeout, DefaultWriteTimeout},
		{&c.IdleTimeout, DefaultIdleTimeout}, {&c.UploadTimeout, DefaultUploadTimeout}, {&c.LaunchTimeout, DefaultLaunchTimeout}} {
		if *d.v == 0 {
			*d.v = Duration(d.def)
		}
	}
	if c.ConsoleLogMaxBytes == 0 {
		c.ConsoleLogMaxBytes = DefaultConsoleLogMaxBytes
	}
	if c.Network == "" {
		c.Network = "user"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
}

// Validate reports every problem of c.
func (c *Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("listen is missing (e.g. 127.0.0.1:8443)"))
	} else if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: %v", c.Listen, err))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("state_dir is missing"))
	}
	if c.KitDir != "" {
		errs = append(errs, fmt.Errorf("kit_dir %s: %s (and remove kit_dir)", c.KitDir, agentid.ParticipantKitHint))
	} else if c.AgentKitDir == "" {
		errs = append(errs, errors.New("agent_kit_dir is missing: the folder of the agent kit (agent.crt, agent.key, rootCA.pem) that the Terraform resource flare_agent_identity writes"))
	}
	switch c.Mode {
	case api.ModeAuto, api.ModeSNP, api.ModeSimulated:
	default:
		errs = append(errs, fmt.Errorf("mode %q: use auto, snp or simulated", c.Mode))
	}
	switch c.Accel {
	case "auto", "kvm", "tcg":
	default:
		errs = append(errs, fmt.Errorf("accel %q: use auto, kvm or tcg", c.Accel))
	}
	if c.SimulatedCPU != "" && strings.ContainsAny(c.SimulatedCPU, " \t\n") {
		errs = append(errs, fmt.Errorf("simulated_cpu %q: a QEMU -cpu value has no spaces", c.SimulatedCPU))
	}
	if c.MinimumTCB != "" {
		if _, err := attest.ParseTCBVersion(c.MinimumTCB); err != nil {
			errs = append(errs, fmt.Errorf("minimum_tcb: %v", err))
		}
	}
	if c.SimulatedFirmware != "" {
		if c.Mode == api.ModeSNP {
			errs = append(errs, errors.New("simulated_firmware is set but mode is snp: it applies to simulated launches only"))
		}
		if fi, err := os.Stat(c.SimulatedFirmware); err != nil || !fi.Mode().IsRegular() {
			errs = append(errs, fmt.Errorf("simulated_firmware %q is not a readable file (e.g. /usr/share/ovmf/OVMF.fd from Debian's ovmf)", c.SimulatedFirmware))
		}
	}
	switch c.Restart.Policy {
	case RestartNever, RestartOnFailure:
	default:
		errs = append(errs, fmt.Errorf("restart.policy %q: use never or on-failure", c.Restart.Policy))
	}
	if c.Restart.MaxRestarts < 0 {
		errs = append(errs, fmt.Errorf("restart.max_restarts %d is negative", c.Restart.MaxRestarts))
	}
	if c.StopTimeout < 0 || c.AttestTimeout < 0 {
		errs = append(errs, errors.New("stop_timeout and attest_timeout must be positive"))
	}
	if c.MaxUploadBytes < 0 || c.MaxUploadsTotalBytes < 0 || c.MaxConcurrentUploads < 0 {
		errs = append(errs, errors.New("max_upload_bytes, max_uploads_total_bytes and max_concurrent_uploads must be positive"))
	}
	if c.ConsoleLogMaxBytes < 0 || (c.ConsoleLogMaxBytes > 0 && c.ConsoleLogMaxBytes < 4096) {
		errs = append(errs, fmt.Errorf("console_log_max_bytes %d: give at least 4096", c.ConsoleLogMaxBytes))
	}
	if c.ReadHeaderTimeout < 0 || c.ReadTimeout < 0 || c.WriteTimeout < 0 || c.IdleTimeout < 0 || c.UploadTimeout < 0 || c.LaunchTimeout < 0 {
		errs = append(errs, errors.New("read_header_timeout, read_timeout, write_timeout, idle_timeout, upload_timeout and launch_timeout must be positive"))
	}
	switch c.Network {
	case "user", "none":
	default:
		errs = append(errs, fmt.Errorf("network %q: use user or none", c.Network))
	}
	if c.ForwardAddress != "" && net.ParseIP(c.ForwardAddress) == nil {
		errs = append(errs, fmt.Errorf("forward_address %q is not an IP address", c.ForwardAddress))
	}
	if c.StatusListen != "" {
		host, _, err := net.SplitHostPort(c.StatusListen)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			errs = append(errs, fmt.Errorf("status_listen %q: give a loopback address such as 127.0.0.1:8081 (the page has no authentication)", c.StatusListen))
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level %q: use debug, info, warn or error", c.LogLevel))
	}
	if len(errs) > 0 {
		return fmt.Errorf("agent config: %w", errors.Join(errs...))
	}
	return nil
}
