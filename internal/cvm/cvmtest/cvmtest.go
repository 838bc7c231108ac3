// Package cvmtest has test helpers for CVM kits.
package cvmtest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FakeGuestKernel lays out <root>/boot/vmlinuz-<v> and <root>/lib/modules/<v>
// (modules.dep with dependencies) holding the modules a kit's own initrd
// takes. They are copied and measured, never loaded. It returns the
// vmlinuz path.
func FakeGuestKernel(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	v := "6.12.0-test"
	mods := filepath.Join(root, "lib/modules", v)
	deps := map[string]string{
		"nft_ct":    " kernel/nf_conntrack.ko.xz kernel/nf_tables.ko.xz",
		"sev-guest": " kernel/tsm.ko.xz",
		"dm-crypt":  " kernel/dm-mod.ko.xz",
	}
	var dep strings.Builder
	for _, n := range []string{"virtio_blk", "virtio_net", "nf_tables", "nft_ct", "nf_conntrack", "configfs", "tsm", "sev-guest", "dm-crypt", "dm-mod", "xts", "qemu_fw_cfg"} {
		p := filepath.Join(mods, "kernel", n+".ko.xz")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(p, []byte("module "+n), 0o644)
		dep.WriteString("kernel/" + n + ".ko.xz:" + deps[n] + "\n")
	}
	os.WriteFile(filepath.Join(mods, "modules.dep"), []byte(dep.String()), 0o644)
	k := filepath.Join(root, "boot", "vmlinuz-"+v)
	os.MkdirAll(filepath.Dir(k), 0o755)
	if err := os.WriteFile(k, bytes.Repeat([]byte("kernel"), 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	return k
}
