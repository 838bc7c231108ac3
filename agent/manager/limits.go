package manager

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/internal/atomicfile"
	"github.com/flarekit/terraform-provider-flare/internal/cvm"
)

// HostMemoryMiB reads MemTotal from a /proc/meminfo-style file, in MiB.
func HostMemoryMiB(path string) (int, error) {
	if path == "" {
		path = "/proc/meminfo"
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil || kb <= 0 {
				return 0, fmt.Errorf("%s: MemTotal %q is not a number of kB", path, fields[1])
			}
			if len(fields) >= 3 && !strings.EqualFold(fields[2], "kB") {
				return 0, fmt.Errorf("%s: MemTotal is in %q, not kB", path, fields[2])
			}
			return int(kb >> 10), nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s has no MemTotal line", path)
}

// checkMemory refuses a kit whose memory_mib exceeds the host's memory,
// alone or together with the CVMs that run already. Caller holds
// launchMu.
func (m *Manager) checkMemory(man *cvm.Manifest) error {
	host, err := HostMemoryMiB(m.MemInfo)
	if err != nil {
		return fmt.Errorf("%w: cannot read the host's memory to check memory_mib: %v", ErrUnavailable, err)
	}
	if man.MemoryMiB > host {
		return fmt.Errorf("%w: kit %s asks for memory_mib %d, more than this host's memory of %d MiB (MemTotal in /proc/meminfo)",
			ErrBadKit, man.ID, man.MemoryMiB, host)
	}
	used, n := 0, 0
	for _, c := range m.List() {
		if api.Active(c.State) {
			used += c.MemoryMiB
			n++
		}
	}
	if used+man.MemoryMiB > host {
		return fmt.Errorf("%w: kit %s asks for memory_mib %d, and the CVMs running here (%d) have %d MiB: together %d MiB, more than this host's memory of %d MiB (MemTotal in /proc/meminfo)",
			ErrUnavailable, man.ID, man.MemoryMiB, n, used, used+man.MemoryMiB, host)
	}
	return nil
}

// removeStaleUploads deletes what uploads left under state_dir/kits when
// the agent ended while receiving them (a kit launched from there by an
// older agent stays).
func (m *Manager) removeStaleUploads() {
	ents, err := os.ReadDir(m.KitsDir())
	if err != nil {
		return
	}
	inUse := map[string]bool{}
	for _, c := range m.List() {
		inUse[c.KitDir] = true
	}
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "upload-") {
			continue
		}
		p := filepath.Join(m.KitsDir(), e.Name())
		used := false
		for d := range inUse {
			if d == p || strings.HasPrefix(d, p+string(filepath.Separator)) {
				used = true
			}
		}
		if !used {
			m.log.Info("removing an upload left by an earlier run", "dir", p)
			_ = os.RemoveAll(p)
		}
	}
}

// startConsoleRotation keeps every CVM's console.log below
// console_log_max_bytes (Recover starts it).
func (m *Manager) startConsoleRotation() {
	max := m.cfg.ConsoleLogMaxBytes
	if max <= 0 {
		return
	}
	every := m.RotateEvery
	if every <= 0 {
		every = time.Second
	}
	m.mu.Lock()
	if m.stopRotation != nil || m.closing {
		m.mu.Unlock()
		return
	}
	stop := make(chan struct{})
	m.stopRotation = stop
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			m.mu.Lock()
			ins := make([]*instance, 0, len(m.cvms))
			for _, in := range m.cvms {
				ins = append(ins, in)
			}
			m.mu.Unlock()
			for _, in := range ins {
				in.mu.Lock()
				p, id := in.rec.ConsoleLog, in.rec.CVM.ID
				in.mu.Unlock()
				if p == "" {
					continue
				}
				if rotated, err := RotateLog(p, max); err != nil {
					m.log.Warn("cannot rotate the console log", "cvm", id, "log", p, "err", err)
				} else if rotated {
					m.log.Debug("console log rotated", "cvm", id, "log", p, "max_bytes", max)
				}
			}
		}
	}()
}

// RotateLog moves the last max bytes of p to p.1 (replacing it) and
// empties p when p is larger than max. QEMU keeps p open with O_APPEND,
// so its next write lands at the start of the emptied file.
func RotateLog(p string, max int64) (bool, error) {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() <= max {
		return false, err
	}
	off := fi.Size() - max
	b := make([]byte, max)
	n, err := f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	if err := atomicfile.Write(p+".1", b[:n], 0o600); err != nil {
		return false, err
	}
	return true, f.Truncate(0)
}

// selfCheck runs the agent's own attestation round in the background (a
// few tries: the guest's first report after boot takes longer), so the
// status page shows the agent's verdict rather than a caller's.
func (in *instance) selfCheck() {
	m := in.m
	id := in.status().ID
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for try := 0; try < 3; try++ {
			m.mu.Lock()
			closing := m.closing
			m.mu.Unlock()
			if closing || in.status().State != api.StateRunning {
				return
			}
			timeout := m.cfg.AttestTimeout.D()
			if timeout <= 0 {
				timeout = 30 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
			_, err := m.SelfAttest(ctx, id)
			cancel()
			if err == nil {
				return
			}
			m.log.Debug("the agent's own attestation round failed", "cvm", id, "try", try+1, "err", err)
			time.Sleep(2 * time.Second)
		}
	}()
}
