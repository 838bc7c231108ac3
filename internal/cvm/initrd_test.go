package cvm

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flarekit/terraform-provider-flare/internal/cvm/cvmtest"
	"github.com/flarekit/terraform-provider-flare/internal/guestconfig"
)

// staticELF is a static executable standing in for flare-init.
func staticELF(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("no static busybox to stand in for flare-init (apt-get install busybox-static)")
	return ""
}

// cpioFiles lists an uncompressed newc archive's regular files.
func cpioFiles(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	r := bytes.NewReader(b)
	for {
		h := make([]byte, 110)
		if _, err := io.ReadFull(r, h); err != nil {
			t.Fatal(err)
		}
		var mode, size, nameLen uint64
		parse := func(off int) uint64 {
			var v uint64
			for _, c := range h[off : off+8] {
				v = v*16 + uint64(strings.IndexByte("0123456789abcdef", c))
			}
			return v
		}
		mode, size, nameLen = parse(14), parse(54), parse(94)
		name := make([]byte, nameLen)
		io.ReadFull(r, name)
		pad := func(n int64) { r.Seek((4-n%4)%4, io.SeekCurrent) }
		pad(110 + int64(nameLen))
		n := strings.TrimRight(string(name), "\x00")
		if n == "TRAILER!!!" {
			return out
		}
		data := make([]byte, size)
		io.ReadFull(r, data)
		pad(int64(size))
		if mode&0o170000 == 0o100000 {
			out[n] = data
		}
	}
}

func TestOwnInitrd(t *testing.T) {
	cfg := Config{Role: RoleClient, Kernel: cvmtest.FakeGuestKernel(t), GuestInit: staticELF(t), EncryptRoot: true,
		AllowedOutPorts: []int{8002}, HostsEntries: map[string]string{"server1": "10.0.2.2"},
		KeyRelease: &guestconfig.KeyRelease{URL: "https://10.0.2.2:8999", CACertPEM: "-----BEGIN CERTIFICATE-----\n"}}
	b, g, err := cfg.OwnInitrd("site-1")
	if err != nil {
		t.Fatal(err)
	}
	b2, _, _ := cfg.OwnInitrd("site-1")
	if !bytes.Equal(b, b2) {
		t.Fatal("the same inputs gave another initrd: its measurement would differ from the plan's")
	}
	files := cpioFiles(t, b)
	if init, _ := os.ReadFile(cfg.GuestInit); !bytes.Equal(files["init"], init) {
		t.Error("/init is not the guest_init binary")
	}
	var got guestconfig.Config
	if err := json.Unmarshal(files[strings.TrimPrefix(guestconfig.Path, "/")], &got); err != nil {
		t.Fatal(err)
	}
	if !reflectDeepEqual(g, &got) {
		t.Errorf("OwnInitrd returned %+v, the initrd holds %+v", g, got)
	}
	if got.KeyRelease == nil || got.KeyRelease.Resource != "flare/root-key/site-1" || !got.Root.Encrypted || !got.StartupKit {
		t.Errorf("guest config %+v", got)
	}
	if got.HostsEntries["server1"] != "10.0.2.2" || len(got.AllowedOutPorts) != 1 {
		t.Errorf("hosts/ports %+v", got)
	}
	var order []string
	for _, m := range got.Modules {
		if _, ok := files[strings.TrimPrefix(m.Path, "/")]; !ok {
			t.Errorf("module %s listed but not in the initrd", m.Path)
		}
		order = append(order, filepath.Base(m.Path))
	}
	idx := func(n string) int {
		for i, o := range order {
			if o == n {
				return i
			}
		}
		t.Fatalf("%s not loaded: %v", n, order)
		return -1
	}
	if idx("dm-mod.ko.xz") > idx("dm-crypt.ko.xz") || idx("tsm.ko.xz") > idx("sev-guest.ko.xz") || idx("nf_conntrack.ko.xz") > idx("nft_ct.ko.xz") {
		t.Errorf("dependencies after their users: %v", order)
	}
	_ = idx("qemu_fw_cfg.ko.xz")
	if !drivesAsExpected(got.Drives) {
		t.Errorf("drives %+v", got.Drives)
	}

	// Another participant, another initrd (its key path differs).
	if b3, _, _ := cfg.OwnInitrd("site-2"); bytes.Equal(b, b3) {
		t.Error("site-2 got site-1's initrd")
	}
}

func reflectDeepEqual(a, b any) bool {
	ab, _ := json.Marshal(a)
	bb, _ := json.Marshal(b)
	return bytes.Equal(ab, bb)
}

func drivesAsExpected(ds []guestconfig.Drive) bool {
	want := map[string]string{"applog": "/applog", "user_config": "/user_config", "user_data": "/user_data"}
	for _, d := range ds {
		if want[d.Name] != d.MountPoint || d.ReadOnly != (d.Name == "user_config") {
			return false
		}
		delete(want, d.Name)
	}
	return len(want) == 0
}

func TestOwnInitrdValidation(t *testing.T) {
	k := cvmtest.FakeGuestKernel(t)
	dyn := "/bin/ls" // dynamically linked on Debian
	for _, c := range []struct {
		name  string
		cfg   Config
		field string
		fix   string
	}{
		{"no broker for an encrypted root", Config{Kernel: k, GuestInit: staticELF(t), EncryptRoot: true}, "key_release", "encrypt_root = false"},
		{"dynamic init", Config{Kernel: k, GuestInit: dyn}, "guest_init", "CGO_ENABLED=0"},
		{"no init", Config{Kernel: k}, "guest_init", "make flare-init"},
		{"no modules", Config{Kernel: "/tmp/vmlinuz", GuestInit: staticELF(t)}, "kernel_modules", "guest-kernel.sh"},
		{"broker not https", Config{Kernel: k, GuestInit: staticELF(t), EncryptRoot: true,
			KeyRelease: &guestconfig.KeyRelease{URL: "http://kbs:8999", CACertPEM: "-----BEGIN CERTIFICATE-----"}}, "key_release.url", "https://"},
		{"bad resource", Config{Kernel: k, GuestInit: staticELF(t), EncryptRoot: true,
			KeyRelease: &guestconfig.KeyRelease{URL: "https://kbs:8999", CACertPEM: "-----BEGIN CERTIFICATE-----", Resource: "a/../b"}}, "key_release.resource", "<repository>/<type>/<tag>"},
	} {
		var found *FieldError
		for _, e := range c.cfg.validateOwnInitrd() {
			if e.Field == c.field {
				e := e
				found = &e
			}
		}
		if c.name == "no init" {
			for _, e := range (Config{Kernel: k, Role: RoleClient}).Validate() {
				if e.Field == "guest_init" {
					e := e
					found = &e
				}
			}
		}
		if found == nil || !strings.Contains(found.Error(), c.fix) {
			t.Errorf("%s: no %s error with %q: %v", c.name, c.field, c.fix, found)
		}
	}
}
