// Package flareinit is flare-init, the CVM's /init (agent/cmd/flare-init):
// it reads the measured guest config from its initrd, loads the kernel
// modules, prints the launch measurement, puts the firewall up before any
// network, gets an address, attests to the key broker for the root key,
// opens the LUKS root, mounts the drives, binds the startup kit from the
// encrypted root to /user_config/nvflare, runs the image's entrypoint as
// the image's user and powers off when it exits or anything fails. There
// is no shell and no login.
package flareinit

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/flarekit/terraform-provider-flare/internal/guestconfig"
)

// DNS, DHCP: what the guest needs beyond the configured ports.
const (
	portDNS        = 53
	portDHCPServer = 67
)

// firewallRules is the guest's firewall: allowed_ports in; out
// allowed_out_ports, the key broker's port and DNS (TCP and UDP), DHCP.
func firewallRules(c *guestconfig.Config) (Rules, error) {
	r := Rules{InTCP: uniq(c.AllowedPorts), OutUDP: []int{portDNS, portDHCPServer}}
	out := append([]int{portDNS}, c.AllowedOutPorts...)
	if c.KeyRelease != nil {
		p, err := c.KeyRelease.KBSPort()
		if err != nil {
			return Rules{}, err
		}
		out = append(out, p)
	}
	r.OutTCP = uniq(out)
	return r, nil
}

func uniq(p []int) []int {
	m := map[int]bool{}
	var out []int
	for _, v := range p {
		if !m[v] {
			m[v] = true
			out = append(out, v)
		}
	}
	sort.Ints(out)
	return out
}

// hostsFile is /etc/hosts: localhost and hosts_entries, sorted.
func hostsFile(entries map[string]string) string {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "%s\t%s\n", entries[n], n)
	}
	return b.String()
}

// drivesBySerial maps virtio-blk serials to /dev nodes, from
// <sysBlock>/<dev>/serial (virtio_blk exposes it; no udev needed).
func drivesBySerial(sysBlock string) (map[string]string, error) {
	ents, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, fmt.Errorf("list drives: %w", err)
	}
	m := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(sysBlock, e.Name(), "serial"))
		if err != nil {
			continue
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			m[s] = "/dev/" + e.Name()
		}
	}
	return m, nil
}

// allDrives tells whether every drive of the config has appeared.
func allDrives(c *guestconfig.Config, drives map[string]string) bool {
	if _, ok := drives[c.Root.Serial]; !ok {
		return false
	}
	for _, d := range c.Drives {
		if _, ok := drives[d.Serial]; !ok {
			return false
		}
	}
	return true
}

func hasEnv(env []string, k string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, k+"=") {
			return true
		}
	}
	return false
}

func envValue(env []string, k string) string {
	v := ""
	for _, e := range env {
		if strings.HasPrefix(e, k+"=") {
			v = e[len(k)+1:] // the last one wins, as in exec
		}
	}
	return v
}

// lookPathIn resolves name as the chrooted process would: absolute or
// relative names as they are, bare names through PATH, all below root.
// Symlinks are resolved inside root, never on the initramfs.
func lookPathIn(root, name, pathEnv string) (string, error) {
	if strings.Contains(name, "/") {
		if !executableIn(root, name) {
			return "", fmt.Errorf("%s is not an executable file in the image", name)
		}
		return name, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" || !path.IsAbs(dir) {
			continue
		}
		p := path.Join(dir, name)
		if executableIn(root, p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q is not in the image's PATH (%s)", name, pathEnv)
}

// executableIn follows p's symlinks inside root (at most 40, as Linux).
func executableIn(root, p string) bool {
	for i := 0; i < 40; i++ {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			return false
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			return fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
		}
		t, err := os.Readlink(filepath.Join(root, p))
		if err != nil {
			return false
		}
		if path.IsAbs(t) {
			p = path.Clean(t)
		} else {
			p = path.Join(path.Dir(p), t)
		}
	}
	return false
}

// lookupUser resolves the image's USER (name, uid, name:group, uid:gid)
// against the image's /etc/passwd and /etc/group, as Docker does; empty is
// root. Supplementary groups are not set (Docker sets them from
// /etc/group; NVFlare's images need none).
func lookupUser(root, user string) (*syscall.Credential, error) {
	if user == "" {
		return &syscall.Credential{}, nil
	}
	name, group, hasGroup := strings.Cut(user, ":")
	cred := &syscall.Credential{}
	uid, err := strconv.ParseUint(name, 10, 32)
	gidSet := false
	if err != nil {
		e, ok := findEntry(filepath.Join(root, "etc/passwd"), name)
		if !ok {
			return nil, fmt.Errorf("no user %q in the image's /etc/passwd", name)
		}
		if len(e) < 4 {
			return nil, fmt.Errorf("malformed /etc/passwd entry for %q", name)
		}
		u, err1 := strconv.ParseUint(e[2], 10, 32)
		g, err2 := strconv.ParseUint(e[3], 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("malformed /etc/passwd entry for %q", name)
		}
		uid, cred.Gid, gidSet = u, uint32(g), true
	}
	cred.Uid = uint32(uid)
	if hasGroup {
		gid, err := strconv.ParseUint(group, 10, 32)
		if err != nil {
			e, ok := findEntry(filepath.Join(root, "etc/group"), group)
			if !ok || len(e) < 3 {
				return nil, fmt.Errorf("no group %q in the image's /etc/group", group)
			}
			if gid, err = strconv.ParseUint(e[2], 10, 32); err != nil {
				return nil, fmt.Errorf("malformed /etc/group entry for %q", group)
			}
		}
		cred.Gid, gidSet = uint32(gid), true
	}
	if !gidSet {
		// A numeric uid without a group: its passwd group when listed.
		for _, e := range entries(filepath.Join(root, "etc/passwd")) {
			if len(e) >= 4 && e[2] == name {
				if g, err := strconv.ParseUint(e[3], 10, 32); err == nil {
					cred.Gid = uint32(g)
				}
				break
			}
		}
	}
	cred.NoSetGroups = false
	cred.Groups = []uint32{}
	return cred, nil
}

func findEntry(file, name string) ([]string, bool) {
	for _, e := range entries(file) {
		if e[0] == name {
			return e, true
		}
	}
	return nil, false
}

func entries(file string) [][]string {
	f, err := os.Open(file)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][]string
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out
}

// errNoKey is a refusal by the key broker: retrying cannot help.
var errNoKey = errors.New("the key broker refused to release the key")
