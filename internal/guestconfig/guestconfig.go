// Package guestconfig is what flare-init, the CVM's /init, is told: the
// per-kit settings internal/cvm writes into the kit's initrd as
// /etc/flare/guest.json. The initrd and the kernel command line are in the
// SEV-SNP launch measurement (kernel-hashes=on), so these settings are
// measured; nothing flare-init does depends on the host-writable drives.
//
// The package holds types only: flare-init is a small static binary and
// must not link the kit builder.
package guestconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path"
	"strings"
)

// Path is where the initrd carries the config.
const Path = "/etc/flare/guest.json"

// Version is the format version; flare-init refuses others.
const Version = 1

// Mount points inside the CVM, as NVFlare's CC images use them.
const (
	// StartupKitMount is where NVFlare's sub_start.sh and the CC image's
	// entrypoint expect the startup kit.
	StartupKitMount = "/user_config/nvflare"
	// StartupKitOnRoot is where the kit lives on the encrypted root: the
	// participant's private key never touches the host-readable drives.
	// flare-init binds it (read-only) at StartupKitMount.
	StartupKitOnRoot = "/opt/flare/startup-kit"
	// Workspace is NVFlare's CVM workspace (sub_start.sh: a kit run from
	// /user_config/... works in /vault/workspace), on the encrypted root.
	Workspace = "/vault/workspace"
	// WorkloadLog is the workload's stdout and stderr on the applog drive.
	WorkloadLog = "/applog/workload.log"
)

// Config is /etc/flare/guest.json.
type Config struct {
	Version     int    `json:"version"`
	Participant string `json:"participant"`
	Role        string `json:"role"`

	// Modules are kernel modules in the initrd (paths inside it), in load
	// order (dependencies first). Optional ones may fail to load (e.g.
	// sev-guest outside an SEV-SNP guest).
	Modules []Module `json:"modules"`

	// KeyRelease says where the root drive's key comes from; nil when the
	// root is not encrypted.
	KeyRelease *KeyRelease `json:"key_release,omitempty"`

	// Root is the root drive; Drives are the others (applog, user_config,
	// user_data), found by virtio serial.
	Root   Drive   `json:"root"`
	Drives []Drive `json:"drives"`

	Network Network `json:"network"`
	// AllowedPorts are the inbound TCP ports; AllowedOutPorts the
	// outbound TCP ports (DNS, DHCP and the key broker are added by
	// flare-init). Everything else is dropped both ways.
	AllowedPorts    []int             `json:"allowed_ports"`
	AllowedOutPorts []int             `json:"allowed_out_ports"`
	HostsEntries    map[string]string `json:"hosts_entries"`

	// StartupKit is true when the root carries the participant's startup
	// kit at StartupKitOnRoot.
	StartupKit bool `json:"startup_kit"`
}

// Module is a kernel module file in the initrd.
type Module struct {
	Path     string `json:"path"`
	Optional bool   `json:"optional,omitempty"`
}

// KeyRelease is a key broker speaking Trustee's KBS protocol (flare-kbs or
// Trustee itself).
type KeyRelease struct {
	// URL is the broker's base URL, https://host:port.
	URL string `json:"url"`
	// CACertPEM is the broker's TLS CA: the guest trusts no other, so a
	// host cannot hand it a key for a disk of its own making.
	CACertPEM string `json:"ca_cert_pem"`
	// Resource is the key's path at the broker, <repo>/<type>/<tag>.
	Resource string `json:"resource"`
}

// Drive is a virtio-blk drive.
type Drive struct {
	Name       string `json:"name"`
	Serial     string `json:"serial"`
	MountPoint string `json:"mount_point"`
	Encrypted  bool   `json:"encrypted,omitempty"`
	ReadOnly   bool   `json:"read_only,omitempty"`
}

// Network modes.
const (
	NetworkDHCP = "dhcp"
	NetworkNone = "none"
)

// Network is how the guest gets an address.
type Network struct {
	Mode string `json:"mode"`
}

// WorkloadPath is where the root drive carries the Workload. It sits with
// the image's files it names: on an encrypted root both are readable and
// changeable only with the key, which the broker releases only to this
// kit's measurement (initrd included); on a plaintext root the host can
// change both, and the kit says so.
const WorkloadPath = "/.flare/workload.json"

// Workload is what runs once the root is open: the image's config.
type Workload struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	// User is the image's USER: name, uid, name:group or uid:gid.
	User string `json:"user,omitempty"`
}

// Argv is Entrypoint followed by Cmd, as Docker runs them.
func (w Workload) Argv() []string {
	return append(append([]string{}, w.Entrypoint...), w.Cmd...)
}

// Parse decodes and checks a config.
func Parse(b []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("guest config: %w", err)
	}
	if err := c.Check(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Check reports the first problem of c, naming the field.
func (c *Config) Check() error {
	if c.Version != Version {
		return fmt.Errorf("guest config: version %d, this flare-init reads %d", c.Version, Version)
	}
	if c.Root.Serial == "" {
		return errors.New("guest config: root.serial is empty")
	}
	if c.KeyRelease != nil {
		if !strings.HasPrefix(c.KeyRelease.URL, "https://") {
			return fmt.Errorf("guest config: key_release.url %q is not https://", c.KeyRelease.URL)
		}
		if c.KeyRelease.CACertPEM == "" {
			return errors.New("guest config: key_release.ca_cert_pem is empty")
		}
		if err := CheckResource(c.KeyRelease.Resource); err != nil {
			return fmt.Errorf("guest config: key_release.resource: %w", err)
		}
	}
	if c.Root.Encrypted != (c.KeyRelease != nil) {
		return errors.New("guest config: an encrypted root needs key_release, and key_release an encrypted root")
	}
	for i, d := range c.Drives {
		if d.Serial == "" || !path.IsAbs(d.MountPoint) || path.Clean(d.MountPoint) != d.MountPoint || d.MountPoint == "/" {
			return fmt.Errorf("guest config: drives[%d]: needs a serial and an absolute mount point other than /", i)
		}
	}
	switch c.Network.Mode {
	case NetworkDHCP, NetworkNone:
	default:
		return fmt.Errorf("guest config: network.mode %q is neither %q nor %q", c.Network.Mode, NetworkDHCP, NetworkNone)
	}
	for _, ports := range [][]int{c.AllowedPorts, c.AllowedOutPorts} {
		for _, p := range ports {
			if p < 1 || p > 65535 {
				return fmt.Errorf("guest config: port %d is outside 1-65535", p)
			}
		}
	}
	for h, ip := range c.HostsEntries {
		if net.ParseIP(ip) == nil || strings.ContainsAny(h, " \t\n#") || h == "" {
			return fmt.Errorf("guest config: hosts_entries[%q] = %q is not a host name and an IP address", h, ip)
		}
	}
	return nil
}

// ParseWorkload decodes and checks a workload.
func ParseWorkload(b []byte) (*Workload, error) {
	var w Workload
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("workload %s: %w", WorkloadPath, err)
	}
	if len(w.Argv()) == 0 {
		return nil, fmt.Errorf("workload %s: the image has neither entrypoint nor cmd", WorkloadPath)
	}
	return &w, nil
}

// CheckResource checks a KBS resource path <repo>/<type>/<tag>.
func CheckResource(r string) error {
	parts := strings.Split(r, "/")
	if len(parts) != 3 {
		return fmt.Errorf("%q is not <repository>/<type>/<tag>", r)
	}
	for _, p := range parts {
		if p == "" || p == "." || p == ".." || strings.ContainsAny(p, " \\?#%") {
			return fmt.Errorf("%q: part %q is empty or has characters a URL path cannot carry as is", r, p)
		}
	}
	return nil
}

// KBSPort is the TCP port of the key broker's URL (443 when not given).
func (k *KeyRelease) KBSPort() (int, error) {
	hostport := strings.TrimPrefix(k.URL, "https://")
	if i := strings.IndexByte(hostport, '/'); i >= 0 {
		hostport = hostport[:i]
	}
	_, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return 443, nil //nolint:nilerr // no port in the URL: https's
	}
	var p int
	if _, err := fmt.Sscanf(port, "%d", &p); err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("key_release.url %q: bad port", k.URL)
	}
	return p, nil
}
