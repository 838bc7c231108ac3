package e2e_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
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

	"github.com/flarekit/terraform-provider-flare/agent/initramfs"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// host paths the test needs; FLARE_E2E_* variables override them.
type hostDeps struct {
	qemu, kernel, kver, busybox, ovmf string
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// needHost skips the test, naming every missing piece and how to get it.
func needHost(t *testing.T) hostDeps {
	t.Helper()
	var d hostDeps
	var missing []string
	var err error
	if d.qemu, err = exec.LookPath(envOr("FLARE_E2E_QEMU", "qemu-system-x86_64")); err != nil {
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
	d.kernel = os.Getenv("FLARE_E2E_KERNEL")
	if d.kernel == "" {
		ks, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64")
		sort.Strings(ks)
		for i := len(ks) - 1; i >= 0; i-- {
			v := strings.TrimPrefix(filepath.Base(ks[i]), "vmlinuz-")
			if _, err := os.Stat(filepath.Join("/lib/modules", v, "modules.dep")); err == nil {
				d.kernel = ks[i]
				break
			}
		}
	}
	if d.kernel == "" {
		missing = append(missing, "a Debian cloud kernel /boot/vmlinuz-*-cloud-amd64 with its /lib/modules (apt-get install linux-image-cloud-amd64)")
	} else {
		d.kver = strings.TrimPrefix(filepath.Base(d.kernel), "vmlinuz-")
	}
	d.busybox = envOr("FLARE_E2E_BUSYBOX", "/bin/busybox")
	if f, err := elf.Open(d.busybox); err != nil {
		missing = append(missing, "a static busybox at "+d.busybox+" (apt-get install busybox-static)")
	} else {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				missing = append(missing, d.busybox+" is dynamically linked: install busybox-static")
				break
			}
		}
		f.Close()
	}
	d.ovmf = envOr("FLARE_E2E_OVMF", "/usr/share/ovmf/OVMF.fd")
	if _, err := os.Stat(d.ovmf); err != nil {
		missing = append(missing, d.ovmf+" (apt-get install ovmf)")
	}
	if len(missing) > 0 {
		t.Skipf("flare-agent end-to-end test needs: %s; `make agent-e2e` installs them", strings.Join(missing, "; "))
	}
	return d
}

// buildAgent compiles flare-agent (static, CGO off) into dir.
func buildAgent(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "flare-agent")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, "github.com/flarekit/terraform-provider-flare/agent/cmd/flare-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build flare-agent: %v\n%s", err, b)
	}
	return out
}

// modulesFor returns the module files (in load order) that make names
// available in kernel version kver, skipping built-in ones.
func modulesFor(t *testing.T, kver string, names []string) []string {
	t.Helper()
	base := filepath.Join("/lib/modules", kver)
	norm := func(s string) string {
		s = filepath.Base(s)
		for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
			s = strings.TrimSuffix(s, ext)
		}
		return strings.ReplaceAll(s, "-", "_")
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(base, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[norm(l)] = true
		}
	}
	paths := map[string]string{}
	deps := map[string][]string{}
	f, err := os.Open(filepath.Join(base, "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		mod, ds, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n := norm(mod)
		paths[n] = filepath.Join(base, mod)
		for _, d := range strings.Fields(ds) {
			deps[n] = append(deps[n], norm(d))
		}
	}
	var order []string
	seen := map[string]bool{}
	var visit func(n string)
	visit = func(n string) {
		if seen[n] || builtin[n] {
			return
		}
		seen[n] = true
		ds := deps[n]
		for i := len(ds) - 1; i >= 0; i-- {
			visit(ds[i])
		}
		p, ok := paths[n]
		if !ok {
			t.Fatalf("module %s is neither built into %s nor in modules.dep", n, kver)
		}
		if !strings.HasSuffix(p, ".ko") {
			t.Skipf("module %s is compressed (%s): busybox insmod in the test initramfs cannot load it", n, p)
		}
		order = append(order, p)
	}
	for _, n := range names {
		visit(strings.ReplaceAll(n, "-", "_"))
	}
	return order
}

// buildInitrd writes the guest initramfs: busybox, the static
// flare-agent running `guest --simulated --power-button`, and the virtio
// modules.
func buildInitrd(t *testing.T, d hostDeps, agentBin, out string) {
	t.Helper()
	mods := modulesFor(t, d.kver, []string{"virtio_pci", "virtio_console", "virtio_blk", "button", "evdev"})
	var insmods strings.Builder
	entries := []initramfs.Entry{
		{Name: "bin/busybox", Mode: 0o755, Source: d.busybox},
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

// dockerSave writes a one-layer docker-save archive (the CVM kit's root
// drive; this test's guest never mounts it).
func dockerSave(t *testing.T, dir string) string {
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

// testPKI is a project CA and participant certificates.
type testPKI struct {
	ca  pki.CA
	dir string
}

func newPKI(t *testing.T, dir string) *testPKI {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRootCA(key, "e2e-project", pki.ValidityFor(time.Now(), 30))
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{ca: pki.CA{Cert: root, Signer: key}, dir: dir}
}

// kit writes a startup kit folder <dir>/<name>/startup with rootCA.pem and
// <base>.crt/.key, and returns the kit folder.
func (p *testPKI) kit(t *testing.T, name, base string, subj pki.Subject) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := p.ca.Issue(pki.LeafRequest{Subject: subj, PublicKey: &key.PublicKey, DNSNames: []string{subj.CommonName},
		Validity: pki.ValidityFor(time.Now(), 30)})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(p.dir, name)
	startup := filepath.Join(dir, "startup")
	if err := os.MkdirAll(startup, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, data := range map[string][]byte{"rootCA.pem": pki.CertPEM(p.ca.Cert), base + ".crt": pki.CertPEM(cert), base + ".key": pki.KeyPEM(key)} {
		if err := os.WriteFile(filepath.Join(startup, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// agentProc is a running `flare-agent serve`.
type agentProc struct {
	cmd *exec.Cmd
	log string
}

func startAgent(t *testing.T, bin, cfg, logFile, healthURL string, tlsCfg *tls.Config) *agentProc {
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
	p := &agentProc{cmd: cmd, log: logFile}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("flare-agent exited: %v\n%s", err, tailFile(logFile, 40))
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
			t.Fatalf("flare-agent did not become healthy: %v\n%s", err, tailFile(logFile, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *agentProc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	for i := 0; i < 100 && syscall.Kill(p.cmd.Process.Pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *agentProc) term() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	for i := 0; i < 250 && syscall.Kill(p.cmd.Process.Pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	_ = p.cmd.Process.Kill()
}

func tailFile(p string, n int) string {
	b, _ := os.ReadFile(p)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// qemuPIDs lists live processes whose command line mentions marker.
func qemuPIDs(marker string) []int {
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

func killAll(marker string) {
	for _, pid := range qemuPIDs(marker) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func alive(pid int) bool {
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

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// tamperArchive flips one byte of the kit's initrd inside the tgz.
func tamperArchive(t *testing.T, tgz []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	changed := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(h.Name, "/initrd.img") && len(data) > 0 {
			data[len(data)-1] ^= 1
			changed = true
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	if !changed {
		t.Fatal("no initrd.img in the kit archive")
	}
	tw.Close()
	zw.Close()
	return out.Bytes()
}
