package flareinit

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"
	"golang.org/x/sys/unix"

	"github.com/flarekit/terraform-provider-flare/agent/guest"
	"github.com/flarekit/terraform-provider-flare/agent/launch"
	"github.com/flarekit/terraform-provider-flare/internal/guestconfig"
)

// NewRoot is where the root drive is mounted; the workload is chrooted
// into it.
const NewRoot = "/newroot"

// Main is flare-init as PID 1: it runs the boot and powers the guest off
// when the workload exits or anything fails. It never returns.
func Main(version string) {
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelInfo}))
	log = log.With("component", "flare-init")
	b := &boot{log: log, version: version}
	err := b.run(context.Background())
	if err != nil {
		// The measurement goes out again so the operator's console log
		// shows what the broker saw.
		log.Error("FAILED; powering off", "err", err, "measurement", b.measurement)
		fmt.Fprintf(os.Stdout, "flare-init: FAILED: %v\n", err)
	}
	b.shutdown()
}

type boot struct {
	log         *slog.Logger
	version     string
	cfg         *guestconfig.Config
	att         *attester
	measurement string
	mapped      string // dm device of the root, if any
	mounts      []string
}

func (b *boot) run(ctx context.Context) error {
	b.log.Info("starting", "version", b.version)
	if err := mountEarly(); err != nil {
		return err
	}
	raw, err := os.ReadFile(guestconfig.Path)
	if err != nil {
		return fmt.Errorf("read %s from the initrd: %w", guestconfig.Path, err)
	}
	if b.cfg, err = guestconfig.Parse(raw); err != nil {
		return err
	}
	cfg := b.cfg
	if err := loadModules(b.log, cfg.Modules); err != nil {
		return err
	}
	// configfs is a module in Debian's kernels: mount it after loading.
	_ = os.MkdirAll("/sys/kernel/config", 0o755)
	_ = unix.Mount("configfs", "/sys/kernel/config", "configfs", 0, "")

	if b.att, err = newAttester(); err != nil {
		return err
	}
	if b.measurement, err = b.att.measurement(); err != nil {
		return fmt.Errorf("read the launch measurement: %w", err)
	}
	if b.att.simulated {
		b.log.Warn("SIMULATED SEV-SNP: no SEV-SNP hardware; reports come from go-sev-guest's test device and fake AMD chain and prove nothing",
			"measurement", b.measurement)
	}
	// As NVFlare's InitApp does: the operator reads this from boot.log.
	fmt.Fprintf(os.Stdout, "Measurement: %s%s\n", b.measurement, map[bool]string{true: " (SIMULATED)"}[b.att.simulated])

	rules, err := firewallRules(cfg)
	if err != nil {
		return err
	}
	if err := applyFirewall(rules); err != nil {
		return err
	}
	b.log.Info("firewall up", "in_tcp", rules.InTCP, "out_tcp", rules.OutTCP, "out_udp", rules.OutUDP)

	if err := bringUpLoopback(); err != nil {
		return err
	}
	var resolv string
	if cfg.Network.Mode == guestconfig.NetworkDHCP {
		lease, err := dhcp(ctx, 10*time.Second)
		if err != nil {
			return err
		}
		resolv = resolvConf(lease.DNS)
		b.log.Info("network up", "interface", lease.Interface, "address", lease.Address, "router", lease.Router, "dns", lease.DNS)
	}
	hosts := hostsFile(cfg.HostsEntries)
	// Go's resolver in this process reads them too (the broker's name).
	if err := os.WriteFile("/etc/hosts", []byte(hosts), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile("/etc/resolv.conf", []byte(resolv), 0o644); err != nil {
		return err
	}

	// Drives appear as virtio_blk probes them; give them a few seconds.
	var drives map[string]string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if drives, err = drivesBySerial("/sys/block"); err != nil {
			return err
		}
		if allDrives(cfg, drives) || time.Now().After(deadline) {
			break
		}
	}
	rootDev, ok := drives[cfg.Root.Serial]
	if !ok {
		return fmt.Errorf("no drive with serial %q (root); drives: %v", cfg.Root.Serial, drives)
	}
	if cfg.KeyRelease != nil {
		t0 := time.Now()
		key, err := fetchRootKey(ctx, b.log, cfg.KeyRelease, b.att)
		if err != nil {
			return fmt.Errorf("root key from %s (%s): %w", cfg.KeyRelease.URL, cfg.KeyRelease.Resource, err)
		}
		b.log.Info("key released", "resource", cfg.KeyRelease.Resource, "took", time.Since(t0).Round(time.Millisecond))
		fmt.Fprintln(os.Stdout, "flare-init: key released")
		dev, err := openCrypt(ctx, "crypt_root", rootDev, key)
		clear(key)
		if err != nil {
			return fmt.Errorf("open the encrypted root %s: %w", rootDev, err)
		}
		b.mapped, rootDev = "crypt_root", dev
	}
	if err := b.mount(rootDev, NewRoot, "ext4", 0); err != nil {
		return fmt.Errorf("mount the root: %w", err)
	}
	for _, d := range cfg.Drives {
		dev, ok := drives[d.Serial]
		if !ok {
			return fmt.Errorf("no drive with serial %q (%s)", d.Serial, d.Name)
		}
		var flags uintptr = unix.MS_NOSUID | unix.MS_NODEV
		if d.ReadOnly {
			flags |= unix.MS_RDONLY
		}
		if err := b.mount(dev, filepath.Join(NewRoot, d.MountPoint), "ext4", flags); err != nil {
			return fmt.Errorf("mount %s: %w", d.Name, err)
		}
	}
	if cfg.StartupKit {
		src := filepath.Join(NewRoot, guestconfig.StartupKitOnRoot)
		dst := filepath.Join(NewRoot, guestconfig.StartupKitMount)
		if err := b.bindReadOnly(src, dst); err != nil {
			return fmt.Errorf("startup kit: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Join(NewRoot, guestconfig.Workspace), 0o755); err != nil {
		return err
	}
	if err := b.mountSystem(NewRoot); err != nil {
		return err
	}
	for name, data := range map[string]string{"etc/hosts": hosts, "etc/resolv.conf": resolv} {
		p := filepath.Join(NewRoot, name)
		os.Remove(p) // a symlink in the image must not redirect the write
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			return fmt.Errorf("write /%s: %w", name, err)
		}
	}

	// The agent's attestation requests (flare_cvm_attestation) keep
	// working while the workload runs.
	var src guest.Source = &guest.HardwareSource{}
	if b.att.simulated {
		src = &guest.SimulatedSource{}
	}
	r := &guest.Responder{Source: src, Log: b.log.With("component", "responder"), Version: b.version}
	go func() {
		if err := r.ServePort(ctx, "/dev/virtio-ports/"+launch.AttestPortName, 30*time.Second); err != nil {
			b.log.Warn("attestation responder stopped", "err", err)
		}
	}()

	wb, err := os.ReadFile(filepath.Join(NewRoot, guestconfig.WorkloadPath))
	if err != nil {
		return fmt.Errorf("the root has no workload: %w", err)
	}
	w, err := guestconfig.ParseWorkload(wb)
	if err != nil {
		return err
	}
	code, err := b.runWorkload(*w)
	if err != nil {
		return err
	}
	b.log.Info("workload exited", "status", code)
	fmt.Fprintf(os.Stdout, "flare-init: workload exited with status %d\n", code)
	return nil
}

// mountEarly mounts what the kernel leaves to init.
func mountEarly() error {
	for _, m := range []struct{ src, dst, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/run", "tmpfs"}, {"tmpfs", "/tmp", "tmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dst, m.fs, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	return os.MkdirAll("/etc", 0o755)
}

func (b *boot) mount(dev, dst, fs string, flags uintptr) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dev, dst, fs, flags, ""); err != nil {
		return fmt.Errorf("mount %s on %s: %w", dev, dst, err)
	}
	b.mounts = append(b.mounts, dst)
	return nil
}

func (b *boot) bindReadOnly(src, dst string) error {
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is not a directory on the root", strings.TrimPrefix(src, NewRoot))
	}
	if fi, err := os.Stat(dst); err != nil || !fi.IsDir() {
		return fmt.Errorf("mount point %s is missing on the user_config drive", strings.TrimPrefix(dst, NewRoot))
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", dst, err)
	}
	b.mounts = append(b.mounts, dst)
	return unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, "")
}

// mountSystem gives the workload's root its /proc, /sys, /dev (with
// /dev/sev-guest for NVFlare's SNP authorizer) and a tmpfs /tmp.
func (b *boot) mountSystem(root string) error {
	for _, m := range []struct {
		src, dst, fs string
		flags        uintptr
	}{
		{"proc", "proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sysfs", "sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RDONLY},
		{"devtmpfs", "dev", "devtmpfs", unix.MS_NOSUID},
		{"tmpfs", "dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV},
		{"devpts", "dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC},
		{"tmpfs", "tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV},
		{"tmpfs", "run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV},
	} {
		if err := b.mount(m.src, filepath.Join(root, m.dst), m.fs, m.flags); err != nil {
			return err
		}
	}
	return nil
}

// runWorkload starts the image's entrypoint chrooted into the root, as the
// image's user, and waits for it while reaping every orphan (PID 1's job).
func (b *boot) runWorkload(w guestconfig.Workload) (int, error) {
	env := w.Env
	if !hasEnv(env, "PATH") {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	if !hasEnv(env, "HOME") {
		env = append(env, "HOME=/root")
	}
	argv := w.Argv()
	exe, err := lookPathIn(NewRoot, argv[0], envValue(env, "PATH"))
	if err != nil {
		return 0, fmt.Errorf("workload: %w", err)
	}
	cred, err := lookupUser(NewRoot, w.User)
	if err != nil {
		return 0, fmt.Errorf("workload: user %q: %w", w.User, err)
	}
	logPath := filepath.Join(NewRoot, guestconfig.WorkloadLog)
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return 0, fmt.Errorf("workload log: %w", err)
	}
	defer lf.Close()
	out := io.MultiWriter(lf, &prefixWriter{w: os.Stdout, prefix: "workload: "})
	dir := w.WorkingDir
	if dir == "" {
		dir = "/"
	}
	cmd := &exec.Cmd{Path: exe, Args: argv, Env: env, Dir: dir, Stdout: out, Stderr: out,
		SysProcAttr: &syscall.SysProcAttr{Chroot: NewRoot, Credential: cred, Setsid: true}}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("workload: start %v: %w", argv, err)
	}
	b.log.Info("workload started", "argv", argv, "pid", cmd.Process.Pid, "uid", cred.Uid, "dir", dir)
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("wait for the workload: %w", err)
		}
		if pid == cmd.Process.Pid {
			if ws.Signaled() {
				return 128 + int(ws.Signal()), nil
			}
			return ws.ExitStatus(), nil
		}
	}
}

// shutdown syncs, unmounts, closes the root mapping and powers off.
func (b *boot) shutdown() {
	unix.Sync()
	for i := len(b.mounts) - 1; i >= 0; i-- {
		_ = unix.Unmount(b.mounts[i], unix.MNT_DETACH)
	}
	if b.mapped != "" {
		closeCrypt(b.mapped)
	}
	unix.Sync()
	fmt.Fprintln(os.Stdout, "flare-init: powering off")
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Unreachable unless the reboot call failed: PID 1 exiting panics the
	// kernel, and panic=-1 with QEMU's -no-reboot ends the VM too.
	os.Exit(1)
}

// attester gets SEV-SNP reports: from the hardware (configfs-tsm or
// /dev/sev-guest), or from the SIMULATED platform the agent describes in
// fw_cfg when there is no SEV-SNP hardware.
type attester struct {
	qp        client.QuoteProvider
	simulated bool
}

// SimulatedPlatformFwCfg is the fw_cfg file flare-agent adds in simulated
// mode: guestproto.SimulatedPlatform JSON (the measurement the agent
// computed from the files it launched, host data, policy).
const SimulatedPlatformFwCfg = launch.SimulatedPlatformFwCfg

func newAttester() (*attester, error) {
	if qp, err := client.GetQuoteProvider(); err == nil && qp.IsSupported() {
		return &attester{qp: qp}, nil
	}
	if _, err := os.Stat("/dev/sev-guest"); err == nil {
		qp, err := client.GetQuoteProvider()
		if err == nil {
			return &attester{qp: qp}, nil
		}
	}
	p := filepath.Join("/sys/firmware/qemu_fw_cfg/by_name", SimulatedPlatformFwCfg, "raw")
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, errors.New("no SEV-SNP guest device (configfs-tsm, /dev/sev-guest) and no simulated platform: this is not an SEV-SNP guest")
	}
	qp, err := simulatedQuoteProvider(raw)
	if err != nil {
		return nil, err
	}
	return &attester{qp: qp, simulated: true}, nil
}

// measurement reads MEASUREMENT from a report with zero REPORT_DATA.
func (a *attester) measurement() (string, error) {
	raw, err := a.qp.GetRawQuote([64]byte{})
	if err != nil {
		return "", err
	}
	if len(raw) < abi.ReportSize {
		return "", fmt.Errorf("report of %d bytes", len(raw))
	}
	r, err := abi.ReportToProto(raw[:abi.ReportSize])
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(r.GetMeasurement()), nil
}

// prefixWriter prefixes every line; writes may split lines anywhere.
type prefixWriter struct {
	w       io.Writer
	prefix  string
	mu      sync.Mutex
	midLine bool
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []byte
	for _, c := range b {
		if !p.midLine {
			out = append(out, p.prefix...)
		}
		out = append(out, c)
		p.midLine = c != '\n'
	}
	_, err := p.w.Write(out)
	return len(b), err
}
