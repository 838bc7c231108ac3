package manager

// Reproductions of the security review's findings 1 (a kit's qcow2 drive
// makes QEMU open host files) and 5/18 (what was checked is not what runs;
// kits are not bound to a site; old kits never expire), against real QEMU:
// every test launches QEMU from a signed kit made here (Debian's OVMF and
// cloud kernel, qcow2 drives from qemu-img) and looks at what the QEMU
// process really opened (/proc/<pid>/fd) or wrote.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/agenttest"
	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/config"
	"github.com/flarekit/terraform-provider-flare/agent/launch"
	"github.com/flarekit/terraform-provider-flare/internal/cvm"
	"github.com/flarekit/terraform-provider-flare/internal/kit"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// fixture is a project CA, a host file QEMU must never open (secret.raw)
// and one it must never write (target.raw), and a state dir for managers.
type fixture struct {
	t        *testing.T
	deps     agenttest.Host
	base     string
	root     *x509.Certificate
	signer   *rsa.PrivateKey
	secret   string
	target   string
	stateDir string
	host     *launch.Host
	n        int
}

const secretText = "TOP-SECRET host file: QEMU must never open this\n"

func newFixture(t *testing.T) *fixture {
	t.Helper()
	if testing.Short() {
		t.Skip("starts QEMU; not in -short")
	}
	deps := agenttest.NeedHost(t)
	// Short base: unix socket paths are limited to 107 bytes.
	base, err := os.MkdirTemp("", "fa-int-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		agenttest.KillAll(base)
		os.RemoveAll(base)
	})
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRootCA(key, "integrity-project", pki.ValidityFor(time.Now(), 30), pki.Profile{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, deps: deps, base: base, root: root, signer: key,
		secret: filepath.Join(base, "secret.raw"), target: filepath.Join(base, "target.raw"), stateDir: filepath.Join(base, "st")}
	if err := os.WriteFile(f.secret, append([]byte(secretText), make([]byte, 1<<20-len(secretText))...), 0o600); err != nil {
		t.Fatal(err)
	}
	f.host = launch.Probe(context.Background(), deps.QEMU)
	if f.host.QEMUError != "" {
		t.Fatal(f.host.QEMUError)
	}
	return f
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// qcow2 makes a 16 MiB qcow2 image with qemu-img's extra arguments.
func (f *fixture) qcow2(name string, extra ...string) string {
	f.t.Helper()
	p := filepath.Join(f.base, name)
	args := append([]string{"create", "-q", "-f", "qcow2"}, extra...)
	run(f.t, "qemu-img", append(args, p, "16M")...)
	return p
}

// zeroTarget (re)creates target.raw, 1 MiB of zeros.
func (f *fixture) zeroTarget() {
	f.t.Helper()
	if err := os.WriteFile(f.target, make([]byte, 1<<20), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

type kitOpts struct {
	participant string
	serial      int64 // 0: no serial in launch.json
	drive       string
	cmdline     string
	memoryMiB   int // 0: 256
}

func copyTo(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func fileOf(t *testing.T, dir, name string) cvm.File {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return cvm.File{File: name, Size: int64(len(b)), SHA256: sum(b)}
}

// kit writes a kit folder signed by the fixture's CA, with the drive file
// o.drive (copied) as its root drive, and returns the folder. launch.json
// (and so the signature) binds every file by its SHA-256.
func (f *fixture) kit(o kitOpts) (string, []byte) {
	t := f.t
	t.Helper()
	f.n++
	id := fmt.Sprintf("%08x", 0xa0000000+f.n)
	if o.participant == "" {
		o.participant = "site-1"
	}
	if o.drive == "" {
		o.drive = f.qcow2(fmt.Sprintf("clean-%d.qcow2", f.n))
	}
	if o.cmdline == "" {
		o.cmdline = "console=ttyS0"
	}
	dir := filepath.Join(f.base, "kits", strconv.Itoa(f.n), o.participant, "cvm_"+id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	copyTo(t, f.deps.OVMF, filepath.Join(dir, "OVMF.fd"))
	copyTo(t, f.deps.Kernel, filepath.Join(dir, "vmlinuz"))
	copyTo(t, o.drive, filepath.Join(dir, "root.qcow2"))
	d := fileOf(t, dir, "root.qcow2")
	m := cvm.Manifest{Version: cvm.ManifestVersion, ID: id, Participant: o.participant, Role: "server",
		ComputeEnv: "onprem_cvm", CCCPUMechanism: "amd_sev_snp", VCPUs: 1, VCPUType: "EPYC-v4", MemoryMiB: 256,
		Firmware: fileOf(t, dir, "OVMF.fd"), Kernel: fileOf(t, dir, "vmlinuz"), KernelCmdline: o.cmdline, KernelHashes: true,
		GuestPolicy: "0x30000", GuestFeatures: "0x1",
		Drives: []cvm.Drive{{Name: "root", File: "root.qcow2", Format: "qcow2", VirtualSize: 16 << 20, SizeGB: 1,
			FileSize: d.Size, SHA256: d.SHA256, Serial: "root", MountPoint: "/", Filesystem: "ext4", Label: "root"}},
		AllowedPorts: []int{}, AllowedOutPorts: []int{}, HostsEntries: map[string]string{}, CCIssuers: []cvm.Issuer{}}
	if o.memoryMiB != 0 {
		m.MemoryMiB = o.memoryMiB
	}
	mj, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if o.serial != 0 {
		var raw map[string]any
		json.Unmarshal(mj, &raw)
		raw["serial"] = o.serial
		mj, _ = json.Marshal(raw)
	}
	mj, _ = json.MarshalIndent(json.RawMessage(mj), "", "  ")
	own := []kit.File{{Path: cvm.ManifestFile, Data: append(mj, '\n')}, {Path: cvm.ScriptFile, Data: []byte("#!/bin/sh\n")},
		{Path: cvm.ReadmeFile, Data: []byte("test kit\n")}}
	sigs, err := kit.SignFolder(own, f.signer)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range append(own, kit.File{Path: kit.SignatureFile, Data: sigs}) {
		if err := os.WriteFile(filepath.Join(dir, k.Path), k.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, own[0].Data
}

// manager starts a manager on the fixture's state dir for site "site-1",
// restarting crashed QEMUs (on-failure, 2).
func (f *fixture) manager() *Manager {
	f.t.Helper()
	cfg := &config.Config{StateDir: f.stateDir, Mode: api.ModeSimulated, Accel: "tcg", Network: "none",
		Restart: config.Restart{Policy: config.RestartOnFailure, MaxRestarts: 2}, StopTimeout: config.Duration(time.Second)}
	m := New(cfg, f.host, AttestVerifier{}, testLogger(f.t), nil)
	m.KitRoot = f.root
	m.Site = "site-1"
	if err := m.Recover(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	return m
}

// opened lists the files a QEMU process has open.
func opened(pid int) []string {
	var out []string
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil {
			out = append(out, l)
		}
	}
	return out
}

// noHostFileOpen fails when any QEMU of the fixture has secret.raw or
// target.raw open, or target.raw is no longer all zeros.
func (f *fixture) noHostFileOpen(what string) {
	f.t.Helper()
	for _, pid := range agenttest.QEMUPIDs(f.base) {
		for _, p := range opened(pid) {
			if p == f.secret || p == f.target {
				f.t.Errorf("%s: QEMU (pid %d) opened the host file %s", what, pid, p)
			}
		}
	}
	if b, err := os.ReadFile(f.target); err == nil && bytes.ContainsFunc(b, func(r rune) bool { return r != 0 }) {
		f.t.Errorf("%s: guest data reached the host file %s: %q…", what, f.target, b[:16])
	}
}

// hmp runs a human monitor command on a CVM's QMP connection.
func hmp(t *testing.T, m *Manager, id, cmd string) string {
	t.Helper()
	in, err := m.get(id)
	if err != nil {
		t.Fatal(err)
	}
	in.mu.Lock()
	mon := in.mon
	in.mu.Unlock()
	if mon == nil {
		t.Fatalf("CVM %s has no QMP connection", id)
	}
	var out string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := mon.Execute(ctx, "human-monitor-command", map[string]any{"command-line": cmd}, &out); err != nil {
		t.Fatalf("HMP %s: %v", cmd, err)
	}
	return out
}

// launched reports a launch that should have been refused, showing what
// QEMU did with the host files (the review's reproduction), and stops it.
func (f *fixture) launched(m *Manager, c api.CVM, what string) {
	t := f.t
	t.Helper()
	t.Errorf("%s: the agent launched it (CVM %s, pid %d)", what, c.ID, c.PID)
	if c.PID != 0 && c.State == api.StateRunning {
		t.Logf("QEMU's monitor, info block:\n%s", hmp(t, m, c.ID, "info block"))
		// A guest disk write, as the review did with qemu-io.
		t.Logf("qemu-io root write: %q", hmp(t, m, c.ID, `qemu-io root "write -P 0x41 0 512"`))
		f.noHostFileOpen(what)
	}
	_, _ = m.Stop(context.Background(), c.ID)
}

func wantRefused(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	if err == nil {
		return // reported by launched
	}
	if !errors.Is(err, ErrBadKit) {
		t.Errorf("%s: error %v is not a bad-kit (400) error", what, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not name %q", what, err, w)
		}
	}
	t.Logf("%s: refused: %v", what, err)
}

// TestDriveExternalReferenceRefused is the review's finding 1: a qcow2
// drive naming a backing file or an external data file makes QEMU (root,
// as the shipped unit runs it) open that host path, and write a data file.
// Every such drive must be refused, signed or not, by path or by upload.
func TestDriveExternalReferenceRefused(t *testing.T) {
	f := newFixture(t)
	f.zeroTarget()
	m := f.manager()
	defer m.Close()
	target2 := filepath.Join(f.base, "target2.raw")
	cases := []struct {
		name  string
		drive func() string
		want  []string
	}{
		{"backing file", func() string { return f.qcow2("backing.qcow2", "-b", f.secret, "-F", "raw") }, []string{"root.qcow2", "backing file", f.secret}},
		{"external data file", func() string {
			p := f.qcow2("datafile.qcow2", "-o", "data_file="+f.target)
			f.zeroTarget()
			return p
		}, []string{"root.qcow2", "data file", f.target}},
		{"backing and data file", func() string {
			return f.qcow2("both.qcow2", "-b", f.secret, "-F", "raw", "-o", "data_file="+target2)
		}, []string{"root.qcow2", "backing file", "data file"}},
	}
	for _, tc := range cases {
		t.Run("signed kit/"+tc.name, func(t *testing.T) {
			f.t = t
			f.zeroTarget()
			dir, _ := f.kit(kitOpts{drive: tc.drive(), serial: 1})
			c, err := m.Launch(context.Background(), dir, "admin", false, false)
			if err == nil {
				f.launched(m, c, tc.name)
			}
			wantRefused(t, tc.name, err, tc.want...)
			f.noHostFileOpen(tc.name)
		})
		t.Run("upload/"+tc.name, func(t *testing.T) {
			f.t = t
			f.zeroTarget()
			dir, _ := f.kit(kitOpts{drive: tc.drive(), serial: 1})
			tgz := tgzOf(t, dir)
			dest := filepath.Join(f.stateDir, "kits", fmt.Sprintf("upload-%d", f.n))
			os.MkdirAll(filepath.Dir(dest), 0o700)
			kitDir, _, err := launch.Unpack(bytes.NewReader(tgz), dest, 1<<30)
			if err == nil {
				c, lerr := m.Launch(context.Background(), kitDir, "admin", false, true)
				if lerr == nil {
					f.launched(m, c, "upload, "+tc.name)
				}
				err = lerr
			}
			if err == nil {
				return
			}
			for _, w := range tc.want[:2] {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("upload, %s: error %q does not name %q", tc.name, err, w)
				}
			}
			t.Logf("upload, %s: refused: %v", tc.name, err)
			f.noHostFileOpen(tc.name)
		})
	}
	// Finding 1(a): drives are not hashed on path launches, so whoever can
	// write into the kit folder swaps a drive under a valid signature.
	t.Run("path launch/drive swapped after signing", func(t *testing.T) {
		f.t = t
		f.zeroTarget()
		dir, _ := f.kit(kitOpts{serial: 1})
		copyTo(t, f.qcow2("swap.qcow2", "-b", f.secret, "-F", "raw"), filepath.Join(dir, "root.qcow2"))
		c, err := m.Launch(context.Background(), dir, "admin", false, false)
		if err == nil {
			f.launched(m, c, "swapped drive")
		}
		wantRefused(t, "swapped drive", err, "root.qcow2")
		f.noHostFileOpen("swapped drive")
	})
	if pids := agenttest.QEMUPIDs(f.base); len(pids) > 0 {
		t.Errorf("QEMU processes left: %v", pids)
	}
}

// tgzOf packs a kit folder as flare_cvm_kit's archive does:
// <participant>/cvm_<id>/<file>.
func tgzOf(t *testing.T, dir string) []byte {
	t.Helper()
	prefix := filepath.Base(filepath.Dir(dir)) + "/" + filepath.Base(dir)
	out, err := exec.Command("tar", "-czf", "-", "-C", filepath.Dir(filepath.Dir(dir)), prefix).Output()
	if err != nil {
		t.Fatalf("tar: %v", err)
	}
	return out
}

// argValue returns what follows flag in QEMU's command line, for the
// option key= inside it ("" for the whole value).
func argValue(args []string, flag, key string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] != flag {
			continue
		}
		if key == "" {
			return args[i+1]
		}
		for _, kv := range strings.Split(args[i+1], ",") {
			if v, ok := strings.CutPrefix(kv, key+"="); ok {
				return v
			}
		}
	}
	return ""
}

func qemuArgs(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

func waitFor(t *testing.T, m *Manager, id string, d time.Duration, ok func(api.CVM) bool) api.CVM {
	t.Helper()
	var c api.CVM
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		c, _ = m.Get(id)
		if ok(c) {
			return c
		}
	}
	return c
}

func killWait(t *testing.T, pid int) {
	t.Helper()
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for deadline := time.Now().Add(10 * time.Second); agenttest.Alive(pid) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}

// flipLastByte changes a file in place, keeping its size.
func flipLastByte(t *testing.T, p string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	b := make([]byte, 1)
	f.ReadAt(b, fi.Size()-1)
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, fi.Size()-1); err != nil {
		t.Fatal(err)
	}
}

// setBackingFile edits a qcow2 header in place to name a backing file (as
// `qemu-img rebase -u` would, but without the image lock, so it works on
// the image a running QEMU has open).
func setBackingFile(t *testing.T, p, backing string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const off = 0x2000 // inside cluster 0, after header and extensions
	if _, err := f.WriteAt([]byte(backing), off); err != nil {
		t.Fatal(err)
	}
	var h [12]byte
	binary.BigEndian.PutUint64(h[0:8], off)
	binary.BigEndian.PutUint32(h[8:12], uint32(len(backing)))
	if _, err := f.WriteAt(h[:], 8); err != nil {
		t.Fatal(err)
	}
}

// TestRestartRunsWhatWasChecked is the review's finding 5 for automatic
// restarts: QEMU is re-run from state.json's arguments, by path, with
// nothing verified again, so a kit folder changed after the launch (a
// drive naming a host file, another kernel) is what the restart runs.
func TestRestartRunsWhatWasChecked(t *testing.T) {
	f := newFixture(t)
	f.zeroTarget()
	m := f.manager()
	defer m.Close()
	dir, _ := f.kit(kitOpts{serial: 1})
	c, err := m.Launch(context.Background(), dir, "admin", false, false)
	if err != nil {
		t.Fatal(err)
	}
	// Swap the kit folder's files under the running CVM.
	copyTo(t, f.qcow2("swap.qcow2", "-b", f.secret, "-F", "raw"), filepath.Join(dir, "root.qcow2"))
	kb, _ := os.ReadFile(filepath.Join(dir, "vmlinuz"))
	os.WriteFile(filepath.Join(dir, "vmlinuz"), append(kb, "evil"...), 0o644)
	killWait(t, c.PID)
	got := waitFor(t, m, c.ID, 30*time.Second, func(c2 api.CVM) bool {
		return (c2.State == api.StateRunning && c2.Restarts == 1 && c2.PID != c.PID && c2.PID != 0) || c2.State == api.StateFailed || c2.State == api.StateCrashed
	})
	t.Logf("after the crash: state %s, restarts %d, pid %d, last error %q", got.State, got.Restarts, got.PID, got.LastError)
	f.noHostFileOpen("restart after the kit folder changed")
	if got.State == api.StateRunning {
		args := qemuArgs(t, got.PID)
		kernel := argValue(args, "-kernel", "")
		kb2, _ := os.ReadFile(kernel)
		if bytes.HasSuffix(kb2, []byte("evil")) {
			t.Errorf("the restart booted the changed kernel %s", kernel)
		}
	} else {
		t.Errorf("the restart did not run the checked kit: %s (%s)", got.State, got.LastError)
	}
	_, _ = m.Stop(context.Background(), c.ID)
}

// TestRestartAfterAgentRestartVerifies: the agent is down, QEMU ends, the
// files it ran from are changed; the agent's restart policy must verify
// them again and refuse.
func TestRestartAfterAgentRestartVerifies(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(f *fixture, args []string)
		want   []string
	}{
		{"drive names a backing file", func(f *fixture, args []string) {
			// The header edit needs no image lock: qemu-img rebase could race
			// the lock of the QEMU just killed.
			setBackingFile(f.t, argValue(args, "-drive", "file"), f.secret)
		}, []string{"root.qcow2", "backing file"}},
		{"kernel changed", func(f *fixture, args []string) {
			flipLastByte(f.t, argValue(args, "-kernel", ""))
		}, []string{"vmlinuz", "SHA-256"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.zeroTarget()
			m := f.manager()
			dir, _ := f.kit(kitOpts{serial: 1})
			c, err := m.Launch(context.Background(), dir, "admin", false, false)
			if err != nil {
				t.Fatal(err)
			}
			args := qemuArgs(t, c.PID)
			m.Close() // the agent goes away; QEMU runs on
			killWait(t, c.PID)
			tc.tamper(f, args)
			m2 := f.manager()
			defer m2.Close()
			got := waitFor(t, m2, c.ID, 30*time.Second, func(c2 api.CVM) bool {
				return (c2.State == api.StateRunning && c2.PID != 0) || c2.State == api.StateFailed || c2.State == api.StateCrashed
			})
			t.Logf("state %s, pid %d, last error %q", got.State, got.PID, got.LastError)
			f.noHostFileOpen(tc.name)
			if got.State == api.StateRunning {
				t.Errorf("%s: the agent restarted QEMU from files that changed since they were checked", tc.name)
				_, _ = m2.Stop(context.Background(), c.ID)
				return
			}
			for _, w := range tc.want {
				if !strings.Contains(got.LastError, w) {
					t.Errorf("last error %q does not name %q", got.LastError, w)
				}
			}
		})
	}
}

// TestReattachVerifies: after an agent restart, re-attaching to a running
// QEMU checks its kit again; files changed meanwhile (a drive header
// naming a host file, the kernel) mean the CVM is stopped, not adopted.
func TestReattachVerifies(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(f *fixture, args []string)
		want   []string
	}{
		{"drive names a backing file", func(f *fixture, args []string) {
			setBackingFile(f.t, argValue(args, "-drive", "file"), f.secret)
		}, []string{"root.qcow2", "backing file"}},
		{"kernel changed", func(f *fixture, args []string) {
			flipLastByte(f.t, argValue(args, "-kernel", ""))
		}, []string{"vmlinuz", "SHA-256"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			m := f.manager()
			dir, _ := f.kit(kitOpts{serial: 1})
			c, err := m.Launch(context.Background(), dir, "admin", false, false)
			if err != nil {
				t.Fatal(err)
			}
			args := qemuArgs(t, c.PID)
			m.Close()
			tc.tamper(f, args)
			m2 := f.manager()
			defer m2.Close()
			got, _ := m2.Get(c.ID)
			t.Logf("state %s, pid %d, last error %q", got.State, got.PID, got.LastError)
			if got.State == api.StateRunning {
				t.Errorf("%s: the agent re-attached to a CVM whose files changed since they were checked", tc.name)
				_, _ = m2.Stop(context.Background(), c.ID)
				return
			}
			if agenttest.Alive(c.PID) {
				t.Errorf("QEMU pid %d still runs after the re-attach was refused", c.PID)
			}
			for _, w := range tc.want {
				if !strings.Contains(got.LastError, w) {
					t.Errorf("last error %q does not name %q", got.LastError, w)
				}
			}
		})
	}
}

// TestManifestParsedFromVerifiedBytes is the review's finding 5 for
// launch.json: it was parsed from one read and its signature checked on a
// second, so a launch.json that changes between the reads (here a FIFO
// that serves a tampered manifest first and the signed one second) runs
// unsigned settings.
func TestManifestParsedFromVerifiedBytes(t *testing.T) {
	f := newFixture(t)
	m := f.manager()
	defer m.Close()
	dir, signed := f.kit(kitOpts{serial: 1})
	tampered := bytes.Replace(signed, []byte(`"kernel_cmdline": "console=ttyS0"`), []byte(`"kernel_cmdline": "console=ttyS0 TAMPERED"`), 1)
	if bytes.Equal(tampered, signed) {
		t.Fatal("could not tamper launch.json")
	}
	p := filepath.Join(dir, cvm.ManifestFile)
	os.Remove(p)
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			w, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				return
			}
			select {
			case <-done:
				w.Close()
				return
			default:
			}
			if i == 0 {
				w.Write(tampered)
			} else {
				w.Write(signed)
			}
			w.Close()
			// Let this reader finish before the next open for writing.
			time.Sleep(200 * time.Millisecond)
		}
	}()
	defer func() {
		close(done)
		if r, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			time.Sleep(50 * time.Millisecond)
			io.Copy(io.Discard, r)
			r.Close()
		}
	}()
	c, err := m.Launch(context.Background(), dir, "admin", false, false)
	if err == nil {
		in, _ := m.get(c.ID)
		in.mu.Lock()
		args := in.rec.Args
		in.mu.Unlock()
		if strings.Contains(strings.Join(args, " "), "TAMPERED") {
			t.Errorf("QEMU runs a kernel command line that is not in the signed launch.json: %q", argValue(args, "-append", ""))
		}
		_, _ = m.Stop(context.Background(), c.ID)
		return
	}
	wantRefused(t, "launch.json as a FIFO", err, "launch.json")
}

// TestKitBoundToSite is the review's finding 18, first half: the agent ran
// any kit its project's CA signed, for any participant.
func TestKitBoundToSite(t *testing.T) {
	f := newFixture(t)
	m := f.manager()
	defer m.Close()
	dir, _ := f.kit(kitOpts{participant: "site-2", serial: 1})
	c, err := m.Launch(context.Background(), dir, "admin", false, false)
	if err == nil {
		t.Errorf("a kit of participant site-2 launched on site-1's agent (CVM %s)", c.ID)
		_, _ = m.Stop(context.Background(), c.ID)
		return
	}
	wantRefused(t, "kit of another site", err, "site-2", "site-1")
}

// TestOlderKitRefused is finding 18, second half: once a kit with a newer
// serial ran for a participant, older kits of it are refused, also after
// the agent restarts.
func TestOlderKitRefused(t *testing.T) {
	f := newFixture(t)
	m := f.manager()
	older, _ := f.kit(kitOpts{serial: 100})
	newer, _ := f.kit(kitOpts{serial: 200})
	unserialized, _ := f.kit(kitOpts{})
	c, err := m.Launch(context.Background(), newer, "admin", false, false)
	if err != nil {
		t.Fatalf("newer kit: %v", err)
	}
	if _, err := m.Stop(context.Background(), c.ID); err != nil {
		t.Fatal(err)
	}
	c2, err := m.Launch(context.Background(), older, "admin", false, false)
	if err == nil {
		t.Errorf("the older kit (serial 100) launched after serial 200 ran (CVM %s)", c2.ID)
		_, _ = m.Stop(context.Background(), c2.ID)
	} else {
		wantRefused(t, "older kit", err, "serial 100", "200")
	}
	if c3, err := m.Launch(context.Background(), unserialized, "admin", false, false); err == nil {
		t.Errorf("a kit without a serial launched (CVM %s)", c3.ID)
		_, _ = m.Stop(context.Background(), c3.ID)
	} else {
		wantRefused(t, "kit without serial", err, "serial")
	}
	m.Close()
	// The highest serial survives an agent restart; the newest kit may run again.
	m2 := f.manager()
	defer m2.Close()
	if c4, err := m2.Launch(context.Background(), older, "admin", false, false); err == nil {
		t.Errorf("after an agent restart the older kit launched (CVM %s)", c4.ID)
		_, _ = m2.Stop(context.Background(), c4.ID)
	} else {
		wantRefused(t, "older kit after agent restart", err, "serial 100")
	}
	c5, err := m2.Launch(context.Background(), newer, "admin", false, false)
	if err != nil {
		t.Fatalf("the newest kit again: %v", err)
	}
	_, _ = m2.Stop(context.Background(), c5.ID)
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
