// Package agenttest runs flare-agent for real in tests: it finds the host
// pieces a simulated guest needs (QEMU, the Debian cloud kernel, a static
// busybox, OVMF), builds the static agent and a busybox initramfs whose
// init starts `flare-agent guest --simulated`, and starts and stops
// `flare-agent serve`. The agent's end-to-end test and the provider's
// acceptance tests of flare_cvm_instance share it.
package agenttest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/initramfs"
	"github.com/flarekit/terraform-provider-flare/internal/kmod"
)

// Host holds the host paths a simulated guest needs; FLARE_E2E_QEMU,
// FLARE_E2E_KERNEL, FLARE_E2E_BUSYBOX and FLARE_E2E_OVMF override them.
type Host struct {
	QEMU, Kernel, KernelVersion, Busybox, OVMF string
}

// SkipOrFail skips the test, or fails it when FLARE_REQUIRE_HOST is set
// (`make test` sets it after installing the host packages, so a missing
// piece there is a failure, not a silent skip).
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("FLARE_REQUIRE_HOST") != "" {
		t.Fatalf("FLARE_REQUIRE_HOST is set: "+format, args...)
	}
	t.Skipf(format, args...)
}

// EnvOr returns the environment variable k, or def when it is unset.
func EnvOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// NeedHost finds the host pieces or skips the test, naming every missing
// piece and the Debian package that has it.
func NeedHost(t testing.TB) Host {
	t.Helper()
	var d Host
	var missing []string
	var err error
	if d.QEMU, err = exec.LookPath(EnvOr("FLARE_E2E_QEMU", "qemu-system-x86_64")); err != nil {
		missing = append(missing, "qemu-system-x86_64 (apt-get install qemu-system-x86)")
	}
	for _, tool := range []string{"qemu-img", "mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err2 := os.Stat("/usr/sbin/" + tool); err2 != nil {
				if _, err3 := os.Stat("/sbin/" + tool); err3 != nil {
					missing = append(missing, tool+" (apt-get install qemu-utils e2fsprogs)")
				}
			}
		}
	}
	d.Kernel = os.Getenv("FLARE_E2E_KERNEL")
	if d.Kernel == "" {
		ks, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64")
		sort.Strings(ks)
		for i := len(ks) - 1; i >= 0; i-- {
			v := strings.TrimPrefix(filepath.Base(ks[i]), "vmlinuz-")
			if _, err := os.Stat(filepath.Join("/lib/modules", v, "modules.dep")); err == nil {
				d.Kernel = ks[i]
				break
			}
		}
	}
	if d.Kernel == "" {
		missing = append(missing, "a Debian cloud kernel /boot/vmlinuz-*-cloud-amd64 with its /lib/modules (apt-get install linux-image-cloud-amd64)")
	} else {
		d.KernelVersion = strings.TrimPrefix(filepath.Base(d.Kernel), "vmlinuz-")
	}
	d.Busybox = EnvOr("FLARE_E2E_BUSYBOX", "/bin/busybox")
	if f, err := elf.Open(d.Busybox); err != nil {
		missing = append(missing, "a static busybox at "+d.Busybox+" (apt-get install busybox-static)")
	} else {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				missing = append(missing, d.Busybox+" is dynamically linked: install busybox-static")
				break
			}
		}
		f.Close()
	}
	d.OVMF = EnvOr("FLARE_E2E_OVMF", "/usr/share/ovmf/OVMF.fd")
	if _, err := os.Stat(d.OVMF); err != nil {
		missing = append(missing, d.OVMF+" (apt-get install ovmf)")
	}
	if len(missing) > 0 {
		SkipOrFail(t, "flare-agent end-to-end test needs: %s; `make agent-e2e-deps` installs them", strings.Join(missing, "; "))
	}
	return d
}

// BuildAgent compiles flare-agent (static, CGO off) into dir and returns
// the binary's path.
func BuildAgent(t testing.TB, dir string) string {
	return BuildStatic(t, dir, "flare-agent", "github.com/flarekit/terraform-provider-flare/agent/cmd/flare-agent")
}

// BuildStatic compiles the package pkg (static, CGO off) into dir/name and
// returns the binary's path.
func BuildStatic(t testing.TB, dir, name, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, b)
	}
	return out
}

// modulesFor returns the module files (in load order) that make names
// available in kernel version kver, skipping built-in ones.
func modulesFor(t testing.TB, kver string, names []string) []string {
	t.Helper()
	mods, err := kmod.Resolve(filepath.Join("/lib/modules", kver), names)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, m := range mods {
		if !strings.HasSuffix(m.Path, ".ko") {
			SkipOrFail(t, "module %s is compressed (%s): busybox insmod in the test initramfs cannot load it", m.Name, m.Path)
		}
		order = append(order, m.Path)
	}
	return order
}

// BuildInitrd writes the guest initramfs to out: busybox, the static
// flare-agent running `guest --simulated --power-button`, and the virtio
// modules.
func BuildInitrd(t testing.TB, d Host, agentBin, out string) {
	t.Helper()
	mods := modulesFor(t, d.KernelVersion, []string{"virtio_pci", "virtio_console", "virtio_blk", "button", "evdev"})
	var insmods strings.Builder
	entries := []initramfs.Entry{
		{Name: "bin/busybox", Mode: 0o755, Source: d.Busybox},
		{Name: "bin/flare-agent", Mode: 0o755, Source: agentBin},
		{Name: "dev", Dir: true, Mode: 0o755}, {Name: "proc", Dir: true, Mode: 0o755},
		{Name: "sys", Dir: true, Mode: 0o755}, {Name: "tmp", Dir: true, Mode: 0o1777},
	}
	for _, m := range mods {
		name := "lib/modules/" + filepath.Base(m)
		entries = append(entries, initramfs.Entry{Name: name, Mode: 0o644, Source: m})
		fmt.Fprintf(&insmods, "insmod /%s || echo \"flare-init: insmod %s failed\"\n", name, filepath.Base(m))
	}
	init := `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
` + insmods.String() + `echo "flare-init: modules loaded"
echo "flare-init: drives: $(cd /sys/block && echo vd*)"
/bin/flare-agent guest --simulated --power-button &
echo "flare-init: responder started"
while true; do sleep 3600; done
`
	entries = append(entries, initramfs.Entry{Name: "init", Mode: 0o755, Data: []byte(init)})
	if err := initramfs.WriteFile(out, entries); err != nil {
		t.Fatal(err)
	}
}

// DockerSave writes a one-layer `docker save` archive into dir (a CVM
// kit's root drive; the busybox guest never mounts it) and returns its path.
func DockerSave(t testing.TB, dir string) string {
	t.Helper()
	mk := func(entries map[string]string) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		names := make([]string, 0, len(entries))
		for n := range entries {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			body := entries[n]
			h := &tar.Header{Name: n, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}
			if strings.HasSuffix(n, "/") {
				h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if h.Size > 0 {
				tw.Write([]byte(body))
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	layer := mk(map[string]string{"etc/": "", "etc/hostname": "flare-e2e\n"})
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/bin/sh"}, "Env": []string{"PATH=/bin"}}})
	sum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(sum[:]) + ".json"
	man, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{"flare/e2e:latest"}, "Layers": []string{"l1/layer.tar"}}})
	p := filepath.Join(dir, "image.tar")
	if err := os.WriteFile(p, mk(map[string]string{"l1/": "", "l1/layer.tar": string(layer), cfgName: string(cfg), "manifest.json": string(man)}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Agent is a running `flare-agent serve`.
type Agent struct {
	cmd *exec.Cmd
	log string
}

// StartAgent runs `bin serve --config cfg` with its output appended to
// logFile and waits (30 s at most) until healthURL answers 200 over tlsCfg.
func StartAgent(t testing.TB, bin, cfg, logFile, healthURL string, tlsCfg *tls.Config) *Agent {
	t.Helper()
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command(bin, "serve", "--config", cfg)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	p := &Agent{cmd: cmd, log: logFile}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("flare-agent exited: %v\n%s", err, TailFile(logFile, 40))
		default:
		}
		resp, err := hc.Get(healthURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				go func() { <-done }()
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("flare-agent did not become healthy: %v\n%s", err, TailFile(logFile, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill9 kills the agent with SIGKILL (its QEMU guests live on).
func (p *Agent) Kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	for i := 0; i < 100 && syscall.Kill(p.cmd.Process.Pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
}

// Term stops the agent with SIGTERM, then SIGKILL after 5 s.
func (p *Agent) Term() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	for i := 0; i < 250 && syscall.Kill(p.cmd.Process.Pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	_ = p.cmd.Process.Kill()
}

// TailFile returns the last n lines of the file at p.
func TailFile(p string, n int) string {
	b, _ := os.ReadFile(p)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// QEMUPIDs lists live QEMU processes whose command line mentions marker.
func QEMUPIDs(marker string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cl, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(cl, []byte(marker)) || !bytes.Contains(cl, []byte("qemu")) {
			continue
		}
		st, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		if i := bytes.LastIndexByte(st, ')'); i >= 0 && i+2 < len(st) && (st[i+2] == 'Z' || st[i+2] == 'X') {
			continue
		}
		out = append(out, pid)
	}
	return out
}

// KillAll kills every QEMU process whose command line mentions marker.
func KillAll(marker string) {
	for _, pid := range QEMUPIDs(marker) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Alive reports whether pid runs and is not a zombie.
func Alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(st, ')')
	return i < 0 || i+2 >= len(st) || (st[i+2] != 'Z' && st[i+2] != 'X')
}
