package flareinit

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/flarekit/terraform-provider-flare/internal/guestconfig"
)

func TestFirewallRules(t *testing.T) {
	r, err := firewallRules(&guestconfig.Config{AllowedPorts: []int{8003, 8002, 8003}, AllowedOutPorts: []int{443, 8002},
		KeyRelease: &guestconfig.KeyRelease{URL: "https://kbs.example:8999"}})
	if err != nil {
		t.Fatal(err)
	}
	want := Rules{InTCP: []int{8002, 8003}, OutTCP: []int{53, 443, 8002, 8999}, OutUDP: []int{53, 67}}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("rules %+v, want %+v", r, want)
	}
	// No broker, no ports: DNS and DHCP only.
	r, _ = firewallRules(&guestconfig.Config{})
	if len(r.InTCP) != 0 || !reflect.DeepEqual(r.OutTCP, []int{53}) {
		t.Fatalf("empty config: %+v", r)
	}
}

func TestLookupUserAndPath(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\nflare:x:1000:1001::/home/flare:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nfl:x:1001:\nother:x:2000:\n"), 0o644)
	for user, want := range map[string][2]uint32{"": {0, 0}, "flare": {1000, 1001}, "1000": {1000, 1001}, "flare:other": {1000, 2000}, "5:7": {5, 7}} {
		c, err := lookupUser(root, user)
		if err != nil || c.Uid != want[0] || c.Gid != want[1] {
			t.Errorf("user %q: %+v %v, want uid %d gid %d", user, c, err, want[0], want[1])
		}
	}
	if _, err := lookupUser(root, "nobody"); err == nil {
		t.Error("unknown user accepted")
	}

	os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	os.WriteFile(filepath.Join(root, "bin/busybox"), []byte("x"), 0o755)
	os.Symlink("/bin/busybox", filepath.Join(root, "usr/bin/env"))
	os.WriteFile(filepath.Join(root, "usr/bin/data"), []byte("x"), 0o644)
	if p, err := lookPathIn(root, "env", "/usr/local/bin:/usr/bin"); err != nil || p != "/usr/bin/env" {
		t.Errorf("env: %q %v", p, err)
	}
	if _, err := lookPathIn(root, "data", "/usr/bin"); err == nil {
		t.Error("a file without x bits was taken as a program")
	}
	// A symlink to a host path must not resolve on the host.
	os.Symlink("/bin/true", filepath.Join(root, "usr/bin/hosttrue"))
	if _, err := lookPathIn(root, "hosttrue", "/usr/bin"); err == nil {
		t.Error("a symlink was followed outside the image")
	}
}

func TestPrefixWriter(t *testing.T) {
	var b bytes.Buffer
	w := &prefixWriter{w: &b, prefix: "wl: "}
	w.Write([]byte("IMPORT-OK"))
	w.Write([]byte(" 2.9.0\nsecond\nthi"))
	w.Write([]byte("rd\n"))
	if got := b.String(); got != "wl: IMPORT-OK 2.9.0\nwl: second\nwl: third\n" {
		t.Fatalf("%q", got)
	}
}

func TestHostsAndDrives(t *testing.T) {
	h := hostsFile(map[string]string{"server1": "10.0.2.2", "a": "10.0.0.1"})
	if h != "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.0.0.1\ta\n10.0.2.2\tserver1\n" {
		t.Errorf("hosts %q", h)
	}
	sys := t.TempDir()
	for dev, serial := range map[string]string{"vda": "root", "vdb": "applog\n", "sda": ""} {
		os.MkdirAll(filepath.Join(sys, dev), 0o755)
		os.WriteFile(filepath.Join(sys, dev, "serial"), []byte(serial), 0o644)
	}
	d, err := drivesBySerial(sys)
	if err != nil || !reflect.DeepEqual(d, map[string]string{"root": "/dev/vda", "applog": "/dev/vdb"}) {
		t.Errorf("drives %v %v", d, err)
	}
}
