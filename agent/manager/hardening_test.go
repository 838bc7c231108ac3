package manager

// Issue 11 items 4 (a caller's attestation round does not change what
// the status page shows) and 5 (memory_mib against the host's memory,
// console.log capped, uploads left by an earlier run removed).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/config"
	"github.com/flarekit/terraform-provider-flare/agent/guestproto"
	"github.com/flarekit/terraform-provider-flare/agent/launch"
)

// fakeVerifier accepts any evidence, except for nonces starting 0xff,
// which it rejects.
type fakeVerifier struct{}

func (fakeVerifier) Verify(evidence, nonce []byte, exp Expected) (*api.Verdict, error) {
	v := &api.Verdict{Verified: true, Simulated: exp.Simulated}
	if nonce[0] == 0xff {
		v.Verified, v.Reasons = false, []string{"rejected by the test"}
	}
	return v, nil
}

// fakeGuest answers every request on a unix socket with evidence.
func fakeGuest(t *testing.T, sock string) {
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					var req guestproto.Request
					json.Unmarshal(sc.Bytes(), &req)
					b, _ := json.Marshal(guestproto.Response{ID: req.ID, Evidence: []byte("evidence"), Simulated: true})
					c.Write(append(b, '\n'))
				}
			}()
		}
	}()
}

// runningCVM registers a running CVM whose attestation socket is a fake
// guest.
func runningCVM(t *testing.T, m *Manager, stateDir, id string, last *api.Summary) *instance {
	dir := filepath.Join(stateDir, "cvms", id)
	os.MkdirAll(dir, 0o700)
	sock := filepath.Join(dir, "attest.sock")
	fakeGuest(t, sock)
	in := &instance{m: m, dir: dir, exited: make(chan struct{}),
		rec: record{CVM: api.CVM{ID: id, State: api.StateRunning, Mode: api.ModeSimulated, GuestReady: true, LastVerdict: last}, AttestSocket: sock}}
	m.mu.Lock()
	m.cvms[id] = in
	m.mu.Unlock()
	return in
}

// TestCallerAttestationKeepsStatus: any certificate of the project may
// attest, but its round (whatever its verdict) does not overwrite the
// verdict the CVM's status and the status page show (review finding 16).
func TestCallerAttestationKeepsStatus(t *testing.T) {
	dir, err := os.MkdirTemp("", "fa-att-") // short: a unix socket lives here
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := &config.Config{StateDir: dir, Mode: api.ModeSimulated, AttestTimeout: config.Duration(5 * time.Second)}
	m := New(cfg, &launch.Host{}, fakeVerifier{}, testLogger(t), nil)
	ownAt := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	runningCVM(t, m, dir, "c-1", &api.Summary{Verified: true, Simulated: true, At: ownAt})
	ctx := context.Background()

	for _, nonce := range [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{0xff}, 32)} {
		v, err := m.Attest(ctx, "c-1", nonce)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := m.Get("c-1")
		if got.LastVerdict == nil || !got.LastVerdict.Verified || !got.LastVerdict.At.Equal(ownAt) {
			t.Errorf("after a caller's round (verified %v) the CVM's status shows %+v, want the agent's own verdict of %s", v.Verified, got.LastVerdict, ownAt)
		}
	}
}

// TestSelfAttestSetsStatus: the agent's own round is what the status shows.
func TestSelfAttestSetsStatus(t *testing.T) {
	dir, err := os.MkdirTemp("", "fa-att-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := &config.Config{StateDir: dir, Mode: api.ModeSimulated, AttestTimeout: config.Duration(5 * time.Second)}
	m := New(cfg, &launch.Host{}, fakeVerifier{}, testLogger(t), nil)
	runningCVM(t, m, dir, "c-2", nil)
	if got, _ := m.Get("c-2"); got.LastVerdict != nil {
		t.Fatalf("verdict before any round: %+v", got.LastVerdict)
	}
	if _, err := m.Attest(context.Background(), "c-2", bytes.Repeat([]byte{1}, 32)); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Get("c-2"); got.LastVerdict != nil {
		t.Fatalf("a caller's round set the status: %+v", got.LastVerdict)
	}
	v, err := m.SelfAttest(context.Background(), "c-2")
	if err != nil || !v.Verified {
		t.Fatalf("own round: %+v %v", v, err)
	}
	if got, _ := m.Get("c-2"); got.LastVerdict == nil || !got.LastVerdict.Verified || !got.LastVerdict.At.Equal(v.At) {
		t.Fatalf("after the agent's own round: %+v", got.LastVerdict)
	}
	// The status page's verdict is on disk too (it survives an agent restart).
	b, _ := os.ReadFile(filepath.Join(dir, "cvms", "c-2", "state.json"))
	if !strings.Contains(string(b), `"last_verdict"`) {
		t.Errorf("state.json lacks the verdict: %s", b)
	}
}

// TestAttestQueueBounded: requests waiting for one CVM's guest are
// bounded; more are refused as busy (429) instead of queueing forever.
func TestAttestQueueBounded(t *testing.T) {
	dir, err := os.MkdirTemp("", "fa-att-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := &config.Config{StateDir: dir, Mode: api.ModeSimulated, AttestTimeout: config.Duration(5 * time.Second)}
	m := New(cfg, &launch.Host{}, fakeVerifier{}, testLogger(t), nil)
	in := runningCVM(t, m, dir, "c-3", nil)
	in.attestMu.Lock() // a round in progress
	var wg sync.WaitGroup
	errs := make(chan error, 3*MaxAttestQueue)
	for i := 0; i < 3*MaxAttestQueue; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := m.Attest(ctx, "c-3", bytes.Repeat([]byte{1}, 32))
			errs <- err
		}()
	}
	time.Sleep(300 * time.Millisecond)
	in.attestMu.Unlock()
	wg.Wait()
	close(errs)
	busy, ok := 0, 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case strings.Contains(err.Error(), "waiting already"):
			busy++
		default:
			t.Errorf("unexpected: %v", err)
		}
	}
	if ok != MaxAttestQueue || busy != 2*MaxAttestQueue {
		t.Fatalf("%d answered, %d refused as busy; want %d and %d", ok, busy, MaxAttestQueue, 2*MaxAttestQueue)
	}
}

func TestHostMemoryMiB(t *testing.T) {
	p := filepath.Join(t.TempDir(), "meminfo")
	os.WriteFile(p, []byte("MemTotal:        2048000 kB\nMemFree:  1 kB\n"), 0o644)
	if n, err := HostMemoryMiB(p); err != nil || n != 2000 {
		t.Fatalf("%d %v", n, err)
	}
	os.WriteFile(p, []byte("MemFree:  1 kB\n"), 0o644)
	if _, err := HostMemoryMiB(p); err == nil {
		t.Fatal("no MemTotal accepted")
	}
	if n, err := HostMemoryMiB(""); err != nil || n < 64 {
		t.Fatalf("/proc/meminfo: %d %v", n, err)
	}
}

func TestRotateLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	// O_APPEND, as QEMU's append=on opens it.
	w, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write(bytes.Repeat([]byte("old line\n"), 1000)) // 9000 bytes
	if r, err := RotateLog(p, 10000); r || err != nil {
		t.Fatalf("rotated below the cap: %v %v", r, err)
	}
	w.Write(bytes.Repeat([]byte("new line\n"), 500))
	if r, err := RotateLog(p, 10000); !r || err != nil {
		t.Fatalf("not rotated above the cap: %v %v", r, err)
	}
	w.Write([]byte("after rotation\n"))
	b, _ := os.ReadFile(p)
	if string(b) != "after rotation\n" {
		t.Fatalf("console.log after rotation: %q", b)
	}
	old, _ := os.ReadFile(p + ".1")
	if len(old) != 10000 || !bytes.HasSuffix(old, []byte("new line\n")) {
		t.Fatalf("console.log.1: %d bytes", len(old))
	}
}

func TestRemoveStaleUploads(t *testing.T) {
	dir := t.TempDir()
	cfg := &config.Config{StateDir: dir, Mode: api.ModeSimulated, Restart: config.Restart{Policy: config.RestartNever}}
	kept := filepath.Join(dir, "kits", "upload-1", "site-1", "cvm_a")
	os.MkdirAll(kept, 0o700)
	os.MkdirAll(filepath.Join(dir, "kits", "upload-2", "site-1"), 0o700)
	os.WriteFile(filepath.Join(dir, "kits", "upload-2", "site-1", "root.qcow2"), []byte("partial"), 0o600)
	writeState(t, dir, record{CVM: api.CVM{ID: "a-1", State: api.StateStopped, KitDir: kept}})
	m := New(cfg, &launch.Host{}, AttestVerifier{}, testLogger(t), nil)
	if err := m.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if _, err := os.Stat(kept); err != nil {
		t.Errorf("the kit of a recorded CVM was removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "kits", "upload-2")); err == nil {
		t.Error("a partial upload of an earlier run is still there")
	}
}

// managerWith is f.manager with cfg changed by edit and the host's
// memory read from a file that says memMiB (0: /proc/meminfo).
func (f *fixture) managerWith(memMiB int, edit func(*config.Config)) *Manager {
	f.t.Helper()
	cfg := &config.Config{StateDir: f.stateDir, Mode: api.ModeSimulated, Accel: "tcg", Network: "none",
		Restart: config.Restart{Policy: config.RestartNever}, StopTimeout: config.Duration(time.Second)}
	if edit != nil {
		edit(cfg)
	}
	m := New(cfg, f.host, AttestVerifier{}, testLogger(f.t), nil)
	m.KitRoot = f.root
	m.Site = "site-1"
	if memMiB > 0 {
		p := filepath.Join(f.base, "meminfo")
		os.WriteFile(p, []byte("MemTotal:       "+strconv.Itoa(memMiB*1024)+" kB\nMemFree:          1000 kB\n"), 0o644)
		m.MemInfo = p
	}
	if err := m.Recover(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(m.Close)
	return m
}

// TestMemoryCapped: a kit's memory_mib above the host's memory, alone or
// beside the CVMs that run, is refused naming both numbers (QEMU with
// prealloc=false would start it and the host would swap or OOM later).
func TestMemoryCapped(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// More than this host has, by /proc/meminfo.
	host, err := HostMemoryMiB("")
	if err != nil {
		t.Fatal(err)
	}
	m := f.managerWith(0, nil)
	huge, _ := f.kit(kitOpts{serial: 1, memoryMiB: host + 1024})
	c, err := m.Launch(ctx, huge, "admin", false, false)
	if err == nil {
		t.Errorf("a %d MiB kit launched on a %d MiB host (CVM %s, pid %d)", host+1024, host, c.ID, c.PID)
		m.Stop(ctx, c.ID)
	} else if !errors.Is(err, ErrBadKit) || !strings.Contains(err.Error(), fmt.Sprintf("memory_mib %d", host+1024)) || !strings.Contains(err.Error(), fmt.Sprintf("%d MiB", host)) {
		t.Errorf("refusal %v does not name both numbers (400)", err)
	} else {
		t.Logf("refused: %v", err)
	}
	m.Close()
	// The fixture's kits ask for 256 MiB.
	m = f.managerWith(200, nil)
	k1, _ := f.kit(kitOpts{serial: 1})
	c, err = m.Launch(ctx, k1, "admin", false, false)
	if err == nil {
		t.Errorf("a 256 MiB kit launched on a 200 MiB host (CVM %s, pid %d)", c.ID, c.PID)
		m.Stop(ctx, c.ID)
	} else if !errors.Is(err, ErrBadKit) || !strings.Contains(err.Error(), "memory_mib 256") || !strings.Contains(err.Error(), "200 MiB") {
		t.Errorf("refusal %v does not name both numbers (400)", err)
	} else {
		t.Logf("refused: %v", err)
	}
	m.Close()

	m = f.managerWith(400, nil)
	c, err = m.Launch(ctx, k1, "admin", false, false)
	if err != nil {
		t.Fatalf("256 MiB on a 400 MiB host: %v", err)
	}
	defer m.Stop(ctx, c.ID)
	k2, _ := f.kit(kitOpts{serial: 2})
	c2, err := m.Launch(ctx, k2, "admin", false, false)
	if err == nil {
		t.Errorf("a second 256 MiB CVM launched on a 400 MiB host (CVM %s)", c2.ID)
		m.Stop(ctx, c2.ID)
	} else if !strings.Contains(err.Error(), "512 MiB") || !strings.Contains(err.Error(), "400 MiB") {
		t.Errorf("refusal %v does not name both numbers", err)
	} else {
		t.Logf("refused: %v", err)
	}
}

// TestConsoleLogCapped: the guest writes the console log; the agent keeps
// it below console_log_max_bytes (rotating to console.log.1) while QEMU
// keeps writing into it.
func TestConsoleLogCapped(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const max = 8192
	m := f.managerWith(0, func(c *config.Config) { c.ConsoleLogMaxBytes = max })
	m.RotateEvery = 50 * time.Millisecond
	// Recover started the rotation with the default period; start it anew.
	m.mu.Lock()
	close(m.stopRotation)
	m.stopRotation = nil
	m.mu.Unlock()
	m.startConsoleRotation()
	k, _ := f.kit(kitOpts{serial: 1, cmdline: "console=ttyS0 earlyprintk=serial loglevel=8 ignore_loglevel"})
	c, err := m.Launch(ctx, k, "admin", false, false)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop(ctx, c.ID)
	log := filepath.Join(f.stateDir, "cvms", c.ID, "console.log")
	// The kernel boots (and panics: no root) and writes well over 8 KiB.
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(log + ".1"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	old, err := os.ReadFile(log + ".1")
	if err != nil {
		b, _ := os.ReadFile(log)
		t.Fatalf("console.log was not rotated (%d bytes): %v", len(b), err)
	}
	// A guest writing fast: more output appended behind QEMU.
	w, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		w.Write(bytes.Repeat([]byte("x"), 10000))
		time.Sleep(5 * time.Millisecond)
	}
	w.Close()
	time.Sleep(300 * time.Millisecond)
	for _, p := range []string{log, log + ".1"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Size() > max || st.Blocks*512 > 2*max+8192 {
			t.Errorf("%s: %d bytes (%d allocated), cap %d", filepath.Base(p), fi.Size(), st.Blocks*512, max)
		}
	}
	t.Logf("console.log.1 holds %d bytes after the first rotation; kernel output: %q…", len(old), strings.SplitN(string(old), "\n", 3)[1])
	if !launch.Alive(c.PID, filepath.Join(f.stateDir, "cvms", c.ID, "qmp.sock")) {
		t.Fatal("QEMU died")
	}
}
