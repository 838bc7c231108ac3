//go:build linux

package cryptroot

// TestGuestUnlock boots a real Linux guest (Debian's cloud kernel under
// QEMU TCG; this sandbox's kernel has no dm) whose /init is this very
// test binary: as PID 1 it loads virtio and dm-crypt, unlocks a LUKS1
// drive made by qemu-img (as internal/cvm makes the root) and a LUKS2
// drive with 4096-byte sectors made by cryptsetup reencrypt, reads each
// /dev/mapper device and prints its SHA-256, which must be the raw
// image's. Needs qemu-system-x86, qemu-utils, cryptsetup-bin and
// linux-image-cloud-amd64; skips without them (fails under
// FLARE_REQUIRE_HOST=1, set by make test).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flarekit/terraform-provider-flare/internal/devmapper"
	"github.com/flarekit/terraform-provider-flare/internal/initramfs"
	"github.com/flarekit/terraform-provider-flare/internal/kmod"
)

const guestPayload = 4 << 20 // bytes of plaintext per drive

func TestMain(m *testing.M) {
	if os.Getpid() == 1 {
		guestMain()
		return
	}
	os.Exit(m.Run())
}

func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("FLARE_REQUIRE_HOST") != "" {
		t.Fatalf("FLARE_REQUIRE_HOST is set: "+format, args...)
	}
	t.Skipf(format, args...)
}

func lookTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin/", "/sbin/"} {
		if _, err := os.Stat(d + name); err == nil {
			return d + name
		}
	}
	return ""
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
}

func TestGuestUnlock(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: boots a guest under TCG")
	}
	if runtime.GOARCH != "amd64" {
		t.Skip("the guest is x86_64")
	}
	tools := map[string]string{}
	var missing []string
	for tool, pkg := range map[string]string{"qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils", "cryptsetup": "cryptsetup-bin"} {
		if tools[tool] = lookTool(tool); tools[tool] == "" {
			missing = append(missing, tool+" ("+pkg+")")
		}
	}
	var kernel, kver string
	ks, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64")
	sort.Strings(ks)
	for i := len(ks) - 1; i >= 0 && kernel == ""; i-- {
		v := strings.TrimPrefix(filepath.Base(ks[i]), "vmlinuz-")
		if _, err := os.Stat(filepath.Join("/lib/modules", v, "modules.dep")); err == nil {
			kernel, kver = ks[i], v
		}
	}
	if kernel == "" {
		missing = append(missing, "/boot/vmlinuz-*-cloud-amd64 with /lib/modules (linux-image-cloud-amd64)")
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		skipOrFail(t, "needs %s", strings.Join(missing, ", "))
	}
	dir := t.TempDir()
	pass := []byte(hex.EncodeToString(randBytes(32)))
	keyFile := filepath.Join(dir, "pass")
	if err := os.WriteFile(keyFile, pass, 0o600); err != nil {
		t.Fatal(err)
	}

	// Drive 1: LUKS1 by qemu-img, as internal/cvm makes the root.
	raw1 := randBytes(guestPayload)
	if err := os.WriteFile(filepath.Join(dir, "raw1"), raw1, 0o600); err != nil {
		t.Fatal(err)
	}
	luks1 := filepath.Join(dir, "luks1.img")
	for try := 1; ; try++ { // qemu-img's PBKDF2 benchmark can read 0 ms and give up
		out, err := exec.Command(tools["qemu-img"], "convert", "-q", "-f", "raw", "-O", "luks", "--object", "secret,id=s0,file="+keyFile,
			"-o", "key-secret=s0,iter-time=10", filepath.Join(dir, "raw1"), luks1).CombinedOutput()
		if err == nil {
			break
		}
		if try == 5 || !strings.Contains(string(out), "accurate CPU usage") {
			t.Fatalf("qemu-img: %v\n%s", err, out)
		}
	}
	// Drive 2: LUKS2, argon2id, 4096-byte sectors, encrypted in place.
	raw2 := randBytes(guestPayload)
	luks2 := filepath.Join(dir, "luks2.img")
	if err := os.WriteFile(luks2, append(bytes.Clone(raw2), make([]byte, 16<<20)...), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, tools["cryptsetup"], "reencrypt", "--encrypt", "--force-offline-reencrypt", "--disable-locks", "--batch-mode",
		"--type", "luks2", "--reduce-device-size", "16M", "--pbkdf", "argon2id", "--pbkdf-memory", "32768",
		"--pbkdf-force-iterations", "4", "--sector-size", "4096", "--key-file", keyFile, luks2)

	// The initramfs: this test binary as /init, the modules, the passphrase.
	initBin := filepath.Join(dir, "init")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "test", "-c", "-o", initBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test -c: %v\n%s", err, out)
	}
	mods, err := kmod.Resolve(filepath.Join("/lib/modules", kver), []string{"virtio_pci", "virtio_blk", "dm_crypt", "xts", "ecb"})
	if err != nil {
		t.Fatal(err)
	}
	entries := []initramfs.Entry{
		{Name: "init", Mode: 0o755, Source: initBin},
		{Name: "pass", Mode: 0o600, Data: pass},
	}
	var order []string
	for _, m := range mods {
		if !strings.HasSuffix(m.Path, ".ko") {
			skipOrFail(t, "module %s is compressed (%s); this test loads plain .ko files", m.Name, m.Path)
		}
		name := "lib/modules/" + filepath.Base(m.Path)
		entries = append(entries, initramfs.Entry{Name: name, Mode: 0o644, Source: m.Path})
		order = append(order, "/"+name)
	}
	entries = append(entries, initramfs.Entry{Name: "modules", Mode: 0o644, Data: []byte(strings.Join(order, "\n"))})
	initrd := filepath.Join(dir, "initrd")
	if err := initramfs.WriteFile(initrd, entries); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	qemu := exec.CommandContext(ctx, tools["qemu-system-x86_64"], "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "512",
		"-nographic", "-no-reboot", "-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 loglevel=4",
		"-drive", "file="+luks1+",format=raw,if=virtio", "-drive", "file="+luks2+",format=raw,if=virtio")
	start := time.Now()
	out, err := qemu.CombinedOutput()
	log := string(out)
	t.Logf("guest ran %v", time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatalf("qemu: %v\n%s", err, log)
	}
	results := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if _, rest, ok := strings.Cut(line, "CRYPTROOT "); ok {
			t.Log(rest)
			if f := strings.Fields(rest); len(f) >= 3 && f[1] == "sha256" {
				results[f[0]] = f[2]
			}
		}
	}
	if !strings.Contains(log, "CRYPTROOT done") {
		t.Fatalf("guest did not finish:\n%s", log)
	}
	for dev, raw := range map[string][]byte{"vda": raw1, "vdb": raw2} {
		sum := sha256.Sum256(raw)
		if got := results[dev]; got != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: guest read sha256 %q through dm-crypt, raw image has %x\n%s", dev, got, sum, log)
		}
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// guestMain is /init in the guest. It prints "CRYPTROOT ..." lines and
// powers off; the host reads them from the serial console.
func guestMain() {
	say := func(format string, a ...any) { fmt.Printf("CRYPTROOT "+format+"\n", a...) }
	if err := guest(say); err != nil {
		say("error %v", err)
	} else {
		say("done")
	}
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func guest(say func(string, ...any)) error {
	for _, m := range []struct{ fs, dir string }{{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}} {
		os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.fs, m.dir, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dir, err)
		}
	}
	mods, err := os.ReadFile("/modules")
	if err != nil {
		return err
	}
	for _, p := range strings.Fields(string(mods)) {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("finit_module %s: %w", p, err)
		}
	}
	v, err := devmapper.Version()
	if err != nil {
		return err
	}
	say("dm interface %d.%d.%d", v[0], v[1], v[2])
	pass, err := os.ReadFile("/pass")
	if err != nil {
		return err
	}
	ctx := context.Background()
	for _, dev := range []string{"vda", "vdb"} {
		path := "/dev/" + dev
		for i := 0; i < 100; i++ { // virtio_blk probes asynchronously
			if _, err := os.Stat(path); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		name := "crypt_" + dev
		start := time.Now()
		mapper, err := Unlock(ctx, name, path, pass)
		if err != nil {
			return err
		}
		took := time.Since(start)
		table, err := devmapper.Table(name)
		if err != nil {
			return err
		}
		for _, tg := range table {
			say("%s table %d %d %s %s", dev, tg.Start, tg.Length, tg.Type, tg.Params)
		}
		st, err := devmapper.Status(name)
		if err != nil {
			return err
		}
		f, err := os.Open(mapper)
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, io.LimitReader(f, guestPayload))
		f.Close()
		if err != nil {
			return fmt.Errorf("reading %s: %w", mapper, err)
		}
		say("%s sha256 %x unlock %v dev %d:%d active %v", dev, h.Sum(nil), took.Round(time.Millisecond), st.Major, st.Minor, st.Active)
		if err := Close(ctx, name); err != nil {
			return err
		}
		if _, err := os.Stat(mapper); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s still there after Close: %v", mapper, err)
		}
		if _, err := devmapper.Status(name); err == nil {
			return fmt.Errorf("%s still known to dm after Close", name)
		}
	}
	return nil
}
