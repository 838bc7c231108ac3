package cvm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/flarekit/terraform-provider-flare/internal/atomicfile"
	"github.com/flarekit/terraform-provider-flare/internal/guestconfig"
	"github.com/flarekit/terraform-provider-flare/internal/initramfs"
	"github.com/flarekit/terraform-provider-flare/internal/kmod"
)

// Kernel modules the kit's initrd loads, by what needs them. The SEV-SNP
// ones are required: a kernel without sev-guest cannot attest, so a kit
// around it could never get its key (Debian's 6.1 cloud kernel is such a
// kernel; its 6.12 one is not).
var (
	modulesAlways    = []string{"virtio_blk", "virtio_net", "nf_tables", "nft_ct", "configfs", "tsm", "sev-guest"}
	modulesEncrypted = []string{"dm_crypt", "xts"}
	// Optional: AES-NI speeds dm-crypt up where the CPU has it; fw_cfg
	// carries the SIMULATED platform's description when flare-agent runs
	// without SEV-SNP (it is not used on real hardware).
	modulesOptional = []string{"aesni_intel", "qemu_fw_cfg"}
)

// DefaultKeyResource is the broker path of a participant's root key when
// key_release.resource is not set.
func DefaultKeyResource(participant string) string { return "flare/root-key/" + participant }

// GuestConfig returns the measured guest config of the kit's own initrd;
// modules are the initrd paths of the modules in load order.
func (c Config) GuestConfig(participant string, modules []guestconfig.Module) *guestconfig.Config {
	d := c.WithDefaults()
	g := &guestconfig.Config{
		Version: guestconfig.Version, Participant: participant, Role: d.Role, Modules: modules,
		Root:            guestconfig.Drive{Name: "root", Serial: "root", MountPoint: "/", Encrypted: d.EncryptRoot},
		Network:         guestconfig.Network{Mode: guestconfig.NetworkDHCP},
		AllowedPorts:    nonNil(d.AllowedPorts),
		AllowedOutPorts: nonNil(d.AllowedOutPorts),
		HostsEntries:    d.HostsEntries,
		StartupKit:      true,
	}
	if g.HostsEntries == nil {
		g.HostsEntries = map[string]string{}
	}
	if d.EncryptRoot && d.KeyRelease != nil {
		kr := *d.KeyRelease
		if kr.Resource == "" {
			kr.Resource = DefaultKeyResource(participant)
		}
		g.KeyRelease = &kr
	}
	for _, dr := range driveOrder[1:] {
		g.Drives = append(g.Drives, guestconfig.Drive{Name: dr.name, Serial: dr.name, MountPoint: dr.mount,
			ReadOnly: dr.name == "user_config"})
	}
	return g
}

// OwnInitrd builds the kit's own initrd: an uncompressed cpio with
// flare-init as /init, /etc/flare/guest.json and the modules. The same
// inputs give the same bytes, so the measurement can be computed at plan
// time and again at build time.
func (c Config) OwnInitrd(participant string) ([]byte, *guestconfig.Config, error) {
	d := c.WithDefaults()
	names := append([]string{}, modulesAlways...)
	if d.EncryptRoot {
		names = append(names, modulesEncrypted...)
	}
	dir := d.ModulesDir()
	mods, err := kmod.Resolve(dir, names)
	if err != nil {
		return nil, nil, fmt.Errorf("kernel_modules: %w", err)
	}
	seen := map[string]bool{}
	for _, m := range mods {
		seen[m.Name] = true
	}
	var optional []kmod.Module
	for _, n := range modulesOptional {
		if ms, err := kmod.Resolve(dir, []string{n}); err == nil {
			for _, m := range ms {
				if !seen[m.Name] {
					seen[m.Name] = true
					optional = append(optional, m)
				}
			}
		}
	}
	var gm []guestconfig.Module
	entries := []initramfs.Entry{
		{Name: "init", Mode: 0o755, Source: d.GuestInit},
		{Name: "dev", Dir: true, Mode: 0o755}, {Name: "proc", Dir: true, Mode: 0o755},
		{Name: "sys", Dir: true, Mode: 0o755}, {Name: "run", Dir: true, Mode: 0o755},
		{Name: "tmp", Dir: true, Mode: 0o1777}, {Name: "newroot", Dir: true, Mode: 0o755},
	}
	add := func(m kmod.Module, opt bool) {
		rel, err := filepath.Rel(dir, m.Path)
		if err != nil || strings.HasPrefix(rel, "..") {
			rel = path.Join("extra", filepath.Base(m.Path))
		}
		p := path.Join("/lib/modules", rel)
		entries = append(entries, initramfs.Entry{Name: p, Mode: 0o644, Source: m.Path})
		gm = append(gm, guestconfig.Module{Path: p, Optional: opt})
	}
	for _, m := range mods {
		// sev-guest and tsm load only in an SEV-SNP guest (or fail to bind);
		// the attester decides later whether anything attests.
		add(m, m.Name == "sev_guest")
	}
	for _, m := range optional {
		add(m, true)
	}
	g := c.GuestConfig(participant, gm)
	if err := g.Check(); err != nil {
		return nil, nil, err
	}
	gj, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	entries = append(entries, initramfs.Entry{Name: guestconfig.Path, Mode: 0o644, Data: append(gj, '\n')})
	var buf bytes.Buffer
	if err := initramfs.WriteCPIO(&buf, entries); err != nil {
		return nil, nil, fmt.Errorf("initrd: %w", err)
	}
	return buf.Bytes(), g, nil
}

// WithOwnInitrd returns c with Initrd pointing at the kit's own initrd,
// written into cacheDir under its SHA-256 (kept: the same inputs find it
// again); c itself when it names an initrd of its own.
func (c Config) WithOwnInitrd(participant, cacheDir string) (Config, error) {
	if c.Initrd != "" {
		return c, nil
	}
	b, _, err := c.OwnInitrd(participant)
	if err != nil {
		return c, err
	}
	sum := sha256.Sum256(b)
	p := filepath.Join(cacheDir, "initrd-"+hex.EncodeToString(sum[:16])+".img")
	if fi, err := os.Stat(p); err != nil || fi.Size() != int64(len(b)) {
		if err := os.MkdirAll(cacheDir, 0o700); err != nil {
			return c, err
		}
		if err := atomicfile.Write(p, b, 0o644); err != nil {
			return c, err
		}
	}
	c.Initrd = p
	return c, nil
}
