package kmod

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	dep := `kernel/drivers/md/dm-crypt.ko.xz: kernel/drivers/md/dm-mod.ko.xz kernel/lib/x.ko.xz
kernel/drivers/md/dm-mod.ko.xz:
kernel/lib/x.ko.xz:
kernel/net/netfilter/nft_ct.ko.xz: kernel/net/netfilter/nf_conntrack.ko.xz kernel/net/netfilter/nf_tables.ko.xz
kernel/net/netfilter/nf_conntrack.ko.xz: kernel/lib/x.ko.xz
kernel/net/netfilter/nf_tables.ko.xz:
`
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644)
	os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/fs/ext4/ext4.ko\n"), 0o644)
	got, err := Resolve(dir, []string{"dm-crypt", "ext4", "nft_ct"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range got {
		names = append(names, m.Name)
		if !strings.HasPrefix(m.Path, dir) {
			t.Errorf("%s: path %s", m.Name, m.Path)
		}
	}
	want := []string{"x", "dm_mod", "dm_crypt", "nf_tables", "nf_conntrack", "nft_ct"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("order %v, want %v", names, want)
	}
	if _, err := Resolve(dir, []string{"sev-guest"}); err == nil || !strings.Contains(err.Error(), "sev_guest") {
		t.Fatalf("unknown module: %v", err)
	}
	if _, err := Resolve(t.TempDir(), []string{"x"}); err == nil || !strings.Contains(err.Error(), "depmod") {
		t.Fatalf("no modules.dep: %v", err)
	}
}
