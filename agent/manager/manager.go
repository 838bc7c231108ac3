// Package manager runs CVMs: it launches QEMU from a kit, keeps each CVM's
// state on disk (state_dir/cvms/<id>/state.json, written atomically),
// watches QEMU over QMP, applies the restart policy, stops CVMs cleanly,
// re-attaches to running QEMUs after an agent restart, and fetches and
// verifies attestation reports from the guest responder.
package manager

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/config"
	"github.com/flarekit/terraform-provider-flare/agent/guestproto"
	"github.com/flarekit/terraform-provider-flare/agent/launch"
	"github.com/flarekit/terraform-provider-flare/internal/atomicfile"
	"github.com/flarekit/terraform-provider-flare/internal/cvm"
	"github.com/flarekit/terraform-provider-flare/internal/qmp"
)

// Errors the HTTP layer maps to status codes.
var (
	ErrNotFound    = errors.New("no such CVM")
	ErrConflict    = errors.New("conflict")
	ErrBadKit      = errors.New("bad kit")
	ErrUnavailable = errors.New("unavailable")
	// ErrBusy: too many requests of this kind are in progress (429).
	ErrBusy = errors.New("busy")
)

// Expected are the values a CVM's reports must carry, from its launch.json.
type Expected struct {
	Measurement string // hex, 48 bytes; empty: not checked (a reason says so)
	HostData    string // hex, 32 bytes; empty: must be zero
	Policy      string // 0x-hex
	// Simulated: the CVM was launched in simulated mode, so the fake AMD
	// chain its guest sends is trusted, and only for this CVM.
	Simulated bool
}

// Verifier checks evidence from a guest against the caller's nonce and the
// CVM's expected values. It fills every report field it could parse and
// sets Verified and Reasons; an error means the evidence could not be read.
type Verifier interface {
	Verify(evidence, nonce []byte, exp Expected) (*api.Verdict, error)
}

// Manager owns every CVM of this agent.
type Manager struct {
	cfg      *config.Config
	host     *launch.Host
	mode     string // effective mode: snp or simulated ("" when snp is configured but unavailable)
	modeErr  error
	log      *slog.Logger
	verifier Verifier
	Metrics  *Metrics
	// KitRoot is the project's root CA (the site kit's rootCA.pem): a kit
	// launches only if its signature.json verifies under it. Set it
	// before serving.
	KitRoot *x509.Certificate
	// Site is the participant this agent runs kits for (the CN of the
	// site's startup kit certificate): a kit of another participant is
	// refused. Set it before serving.
	Site string

	launchMu sync.Mutex       // the one-CVM-per-kit check, serials and registration
	serials  map[string]int64 // highest serial launched per participant (serials.json); nil until loaded
	// MemInfo is the file the host's memory is read from (MemTotal);
	// empty: /proc/meminfo.
	MemInfo string
	// RotateEvery is how often console logs are checked against
	// console_log_max_bytes; 0: every second.
	RotateEvery time.Duration

	mu           sync.Mutex
	cvms         map[string]*instance
	closing      bool
	stopRotation chan struct{}
	wg           sync.WaitGroup
}

// record is state.json.
type record struct {
	CVM            api.CVM  `json:"cvm"`
	QEMU           string   `json:"qemu"`
	Args           []string `json:"args"`
	QMPSocket      string   `json:"qmp_socket"`
	AttestSocket   string   `json:"attest_socket"`
	ConsoleLog     string   `json:"console_log"`
	PIDFile        string   `json:"pid_file"`
	StopRequested  bool     `json:"stop_requested"`
	ShutdownReason string   `json:"shutdown_reason,omitempty"`
	// Owned: KitDir is an unpacked upload under state_dir/kits.
	Owned bool `json:"owned,omitempty"`
	// RunDir is the CVM's own copy of its kit (state_dir/cvms/<id>/kit),
	// checked file by file at launch; QEMU opens only files in it, and
	// every restart and re-attach checks it again. Options are the launch
	// options its QEMU arguments are built with; Serial is launch.json's.
	RunDir  string          `json:"run_dir,omitempty"`
	Options *launch.Options `json:"options,omitempty"`
	Serial  int64           `json:"serial,omitempty"`
}

type instance struct {
	m   *Manager
	dir string

	mu     sync.Mutex
	rec    record
	mon    *qmp.SocketMonitor
	exited chan struct{} // closed when the current QEMU's end is handled

	opMu     sync.Mutex // serializes launch, relaunch and stop
	attestMu sync.Mutex // one guest round trip at a time; guards attest
	attest   attestConn
	// attestWaiting counts attestation requests waiting for attestMu.
	attestWaiting atomic.Int32
}

// New prepares a manager; call Recover before serving. Its metrics are
// registered on reg (nil: a private registry).
func New(cfg *config.Config, host *launch.Host, verifier Verifier, log *slog.Logger, reg prometheus.Registerer) *Manager {
	m := &Manager{cfg: cfg, host: host, verifier: verifier, log: log, cvms: map[string]*instance{}}
	m.mode, m.modeErr = host.EffectiveMode(cfg.Mode)
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m.Metrics = NewMetrics(reg, m)
	return m
}

// Mode is the mode launches use now ("" if none is possible) and why not.
func (m *Manager) Mode() (string, error) { return m.mode, m.modeErr }

// Host is the probe result.
func (m *Manager) Host() *launch.Host { return m.host }

func (m *Manager) cvmsDir() string { return filepath.Join(m.cfg.StateDir, "cvms") }

// KitsDir holds unpacked uploads.
func (m *Manager) KitsDir() string { return filepath.Join(m.cfg.StateDir, "kits") }

func newID(kitID string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return kitID + "-" + hex.EncodeToString(b)
}

func (in *instance) persistLocked() error {
	b, err := json.MarshalIndent(in.rec, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(in.dir, "state.json"), append(b, '\n'), 0o600)
}

func (in *instance) persist() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.persistLocked(); err != nil {
		in.m.log.Error("cannot write CVM state", "cvm", in.rec.CVM.ID, "err", err)
	}
}

func (in *instance) status() api.CVM {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.rec.CVM
}

func (in *instance) update(f func(r *record)) {
	in.mu.Lock()
	defer in.mu.Unlock()
	f(&in.rec)
	if err := in.persistLocked(); err != nil {
		in.m.log.Error("cannot write CVM state", "cvm", in.rec.CVM.ID, "err", err)
	}
}

// List returns every CVM, oldest first.
func (m *Manager) List() []api.CVM {
	m.mu.Lock()
	ins := make([]*instance, 0, len(m.cvms))
	for _, in := range m.cvms {
		ins = append(ins, in)
	}
	m.mu.Unlock()
	out := make([]api.CVM, 0, len(ins))
	for _, in := range ins {
		out = append(out, in.status())
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func (m *Manager) get(id string) (*instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	in := m.cvms[id]
	if in == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return in, nil
}

// Get returns one CVM's status.
func (m *Manager) Get(id string) (api.CVM, error) {
	in, err := m.get(id)
	if err != nil {
		return api.CVM{}, err
	}
	return in.status(), nil
}

// ConsoleLog returns the path of a CVM's serial console log.
func (m *Manager) ConsoleLog(id string) (string, error) {
	in, err := m.get(id)
	if err != nil {
		return "", err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.rec.ConsoleLog, nil
}

// CheckKitDir applies allowed_kit_dirs.
func (m *Manager) CheckKitDir(dir string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("%w: kit_dir is empty", ErrBadKit)
	}
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("%w: kit_dir %q is not an absolute path on the agent's host", ErrBadKit, dir)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("%w: kit_dir %s: %v", ErrBadKit, dir, err)
	}
	if len(m.cfg.AllowedKitDirs) == 0 {
		return real, nil
	}
	for _, a := range m.cfg.AllowedKitDirs {
		ra, err := filepath.EvalSymlinks(a)
		if err != nil {
			continue
		}
		if rel, err := filepath.Rel(ra, real); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return real, nil
		}
	}
	return "", fmt.Errorf("%w: kit_dir %s is outside allowed_kit_dirs (%s)", ErrBadKit, dir, strings.Join(m.cfg.AllowedKitDirs, ", "))
}

// Launch starts the kit in kitDir from its checked copy in the CVM's state
// folder (launch.Stage). owned marks kitDir as the agent's own unpacked
// upload, whose files are moved rather than copied; verifyDrives then hashes
// them again (Unpack hashed them already). Path launches hash every file.
func (m *Manager) Launch(ctx context.Context, kitDir, by string, verifyDrives, owned bool) (api.CVM, error) {
	t0 := time.Now()
	if m.mode == "" {
		m.Metrics.Launches.WithLabelValues("none", "error").Inc()
		return api.CVM{}, fmt.Errorf("%w: %v", ErrUnavailable, m.modeErr)
	}
	if m.host.QEMUError != "" {
		m.Metrics.Launches.WithLabelValues(m.mode, "error").Inc()
		return api.CVM{}, fmt.Errorf("%w: %s", ErrUnavailable, m.host.QEMUError)
	}
	// launch.json is parsed from the bytes whose signature was checked.
	k, err := launch.LoadKit(kitDir, m.KitRoot)
	if err != nil {
		return api.CVM{}, fmt.Errorf("%w: %v", ErrBadKit, err)
	}
	man := k.Manifest
	if err := m.checkSite(man); err != nil {
		return api.CVM{}, err
	}
	// QEMU locks its images, and two guests on one set of drives would
	// corrupt them: one running CVM per kit folder.
	m.launchMu.Lock()
	for _, c := range m.List() {
		if api.Active(c.State) && c.KitDir == kitDir {
			m.launchMu.Unlock()
			return api.CVM{}, fmt.Errorf("%w: kit %s already runs as CVM %s (%s)", ErrConflict, kitDir, c.ID, c.State)
		}
	}
	if err := m.checkSerial(man); err != nil {
		m.launchMu.Unlock()
		return api.CVM{}, err
	}
	if err := m.checkMemory(man); err != nil {
		m.launchMu.Unlock()
		return api.CVM{}, err
	}

	id := newID(man.ID)
	dir := filepath.Join(m.cvmsDir(), id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		m.launchMu.Unlock()
		return api.CVM{}, err
	}
	// The files QEMU opens are the agent's own copy, checked as copied.
	runDir := filepath.Join(dir, "kit")
	if err := launch.Stage(k, runDir, owned, owned && !verifyDrives); err != nil {
		m.launchMu.Unlock()
		os.RemoveAll(dir)
		return api.CVM{}, fmt.Errorf("%w: %v", ErrBadKit, err)
	}
	if owned {
		// The upload's files now live in the CVM's folder.
		os.RemoveAll(kitDir)
		for d := filepath.Dir(kitDir); strings.HasPrefix(d, m.KitsDir()+string(filepath.Separator)); d = filepath.Dir(d) {
			if os.Remove(d) != nil {
				break
			}
		}
		kitDir = runDir
	}
	tVerify := time.Since(t0)
	now := time.Now().UTC()
	accel := "kvm"
	if m.mode == api.ModeSimulated && (m.cfg.Accel == "tcg" || (m.cfg.Accel == "auto" && !m.host.KVM)) {
		accel = "tcg"
	}
	in := &instance{m: m, dir: dir, exited: make(chan struct{})}
	in.rec = record{
		CVM: api.CVM{
			ID: id, KitID: man.ID, KitDir: kitDir, Participant: man.Participant, Role: man.Role,
			Mode: m.mode, Accel: accel, State: api.StateStarting,
			VCPUs: man.VCPUs, MemoryMiB: man.MemoryMiB, GuestPolicy: man.GuestPolicy, HostData: man.HostData,
			ExpectedMeasurement: man.ExpectedMeasurement, CreatedAt: now, LaunchedBy: by,
		},
		QEMU:         m.host.QEMU,
		QMPSocket:    filepath.Join(dir, "qmp.sock"),
		AttestSocket: filepath.Join(dir, "attest.sock"),
		ConsoleLog:   filepath.Join(dir, "console.log"),
		PIDFile:      filepath.Join(dir, "qemu.pid"),
		Owned:        owned,
		RunDir:       runDir,
		Serial:       man.Serial,
	}
	o := launch.Options{
		Mode: m.mode, KVM: accel == "kvm", CPU: m.cfg.SimulatedCPU, Firmware: m.cfg.SimulatedFirmware, CBitPos: m.host.SNP.CBitPos, ReducedPhysBits: 1,
		Name: "flare-" + id, QMPSocket: in.rec.QMPSocket, AttestSocket: in.rec.AttestSocket,
		ConsoleLog: in.rec.ConsoleLog, PIDFile: in.rec.PIDFile,
		Network: m.cfg.Network, ForwardAddress: m.cfg.ForwardAddress,
	}
	if m.mode == api.ModeSimulated {
		// The SIMULATED platform reports the measurement the kit's signed
		// launch.json states: the agent has checked every measured file
		// (firmware, kernel, initrd; cmdline and vCPUs are in launch.json)
		// against it, which is what the AMD secure processor would measure.
		sp, err := json.Marshal(guestproto.SimulatedPlatform{Measurement: man.ExpectedMeasurement, HostData: man.HostData, Policy: man.GuestPolicy})
		if err == nil {
			o.SimulatedPlatform = filepath.Join(dir, "simulated-snp.json")
			err = os.WriteFile(o.SimulatedPlatform, sp, 0o600)
		}
		if err != nil {
			m.launchMu.Unlock()
			os.RemoveAll(dir)
			return api.CVM{}, err
		}
	}
	in.rec.Options = &o
	args, err := launch.Args(man, runDir, o)
	if err != nil {
		m.launchMu.Unlock()
		os.RemoveAll(dir)
		return api.CVM{}, fmt.Errorf("%w: %v", ErrBadKit, err)
	}
	in.rec.Args = args
	in.persist()
	m.mu.Lock()
	m.cvms[id] = in
	m.mu.Unlock()
	m.launchMu.Unlock()

	in.opMu.Lock()
	defer in.opMu.Unlock()
	if err := in.start(ctx); err != nil {
		m.Metrics.Launches.WithLabelValues(m.mode, "error").Inc()
		return in.status(), err
	}
	m.launchMu.Lock()
	m.noteSerial(man)
	m.launchMu.Unlock()
	total := time.Since(t0)
	in.update(func(r *record) {
		if r.CVM.Launch != nil {
			r.CVM.Launch.VerifyMillis = ms(tVerify)
			r.CVM.Launch.TotalMillis = ms(total)
		}
	})
	m.Metrics.Launches.WithLabelValues(m.mode, "ok").Inc()
	m.Metrics.LaunchSeconds.WithLabelValues("verify").Observe(tVerify.Seconds())
	m.Metrics.LaunchSeconds.WithLabelValues("total").Observe(total.Seconds())
	st := in.status()
	m.log.Info("CVM launched", "cvm", id, "kit", man.ID, "participant", man.Participant, "mode", m.mode, "accel", accel,
		"pid", st.PID, "by", by, "total_ms", ms(total), "qemu_ms", st.Launch.QEMUMillis, "qmp_ms", st.Launch.QMPMillis)
	if m.mode == api.ModeSimulated {
		m.log.Warn("CVM runs in SIMULATED mode: no SEV-SNP protection; its attestation reports come from a test device signed by a fake AMD chain",
			"cvm", id)
	}
	return st, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// start runs QEMU from rec.Args and attaches to it. Caller holds opMu.
func (in *instance) start(ctx context.Context) error {
	m := in.m
	in.mu.Lock()
	rec := in.rec
	in.mu.Unlock()
	_ = os.Remove(rec.QMPSocket)
	_ = os.Remove(rec.AttestSocket)
	t0 := time.Now()
	pid, err := launch.Start(ctx, rec.QEMU, rec.Args, rec.PIDFile)
	tQEMU := time.Since(t0)
	if err != nil {
		in.update(func(r *record) {
			r.CVM.State, r.CVM.LastError, r.CVM.PID = api.StateFailed, err.Error(), 0
		})
		m.log.Error("QEMU did not start", "cvm", rec.CVM.ID, "err", err)
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	started := time.Now().UTC()
	in.mu.Lock()
	in.exited = make(chan struct{})
	in.rec.CVM.PID, in.rec.CVM.StartedAt, in.rec.CVM.StoppedAt = pid, &started, nil
	in.rec.CVM.GuestReady, in.rec.ShutdownReason = false, ""
	in.rec.CVM.Launch = &api.LaunchTimings{QEMUMillis: ms(tQEMU)}
	_ = in.persistLocked()
	in.mu.Unlock()
	t1 := time.Now()
	if err := in.attach(ctx); err != nil {
		// QEMU runs but QMP does not answer: kill it, it cannot be managed.
		_ = launch.Kill(pid, rec.QMPSocket)
		in.update(func(r *record) { r.CVM.State, r.CVM.LastError = api.StateFailed, err.Error() })
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	tQMP := time.Since(t1)
	in.update(func(r *record) { r.CVM.Launch.QMPMillis = ms(tQMP) })
	m.Metrics.LaunchSeconds.WithLabelValues("qemu").Observe(tQEMU.Seconds())
	m.Metrics.LaunchSeconds.WithLabelValues("qmp").Observe(tQMP.Seconds())
	return nil
}

// attach connects QMP, reads the run state and starts watching QEMU.
func (in *instance) attach(ctx context.Context) error {
	in.mu.Lock()
	sock, id, pid := in.rec.QMPSocket, in.rec.CVM.ID, in.rec.CVM.PID
	in.mu.Unlock()
	var mon *qmp.SocketMonitor
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		mon, err = qmp.NewSocketMonitor("unix", sock, 5*time.Second)
		if err == nil {
			if err = mon.Connect(); err == nil {
				break
			}
		}
		if time.Now().After(deadline) || !launch.Alive(pid, sock) {
			return fmt.Errorf("QMP at %s: %w", sock, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Subscribe before asking anything, so no event is missed.
	evCtx, cancel := context.WithCancel(context.Background())
	events, err := mon.Events(evCtx)
	if err != nil {
		cancel()
		mon.Disconnect()
		return err
	}
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
	err = mon.Execute(qctx, "query-status", nil, &st)
	qcancel()
	if err != nil {
		cancel()
		mon.Disconnect()
		return fmt.Errorf("QMP query-status: %w", err)
	}
	in.mu.Lock()
	in.mon = mon
	exited := in.exited
	in.rec.CVM.QEMUStatus = st.Status
	if in.rec.StopRequested {
		in.rec.CVM.State = api.StateStopping
	} else {
		in.rec.CVM.State = api.StateRunning
	}
	_ = in.persistLocked()
	in.mu.Unlock()
	in.m.wg.Add(1)
	go func() {
		defer in.m.wg.Done()
		defer cancel()
		in.watch(mon, events, pid, exited)
	}()
	in.m.log.Debug("QMP attached", "cvm", id, "pid", pid, "status", st.Status)
	return nil
}

// watch follows QEMU's events until the QMP connection ends, then decides
// what the end means.
func (in *instance) watch(mon *qmp.SocketMonitor, events <-chan qmp.Event, pid int, exited chan struct{}) {
	m := in.m
	id := in.status().ID
	for ev := range events {
		switch ev.Event {
		case "VSERPORT_CHANGE":
			if port, _ := ev.Data["id"].(string); port == launch.AttestPortID {
				open, _ := ev.Data["open"].(bool)
				in.update(func(r *record) { r.CVM.GuestReady = open })
				m.log.Info("guest attestation port", "cvm", id, "open", open)
				if open {
					in.selfCheck()
				}
			}
		case "SHUTDOWN":
			reason, _ := ev.Data["reason"].(string)
			in.update(func(r *record) { r.ShutdownReason = reason })
			m.log.Info("QEMU shutdown event", "cvm", id, "reason", reason)
		case "STOP", "RESUME", "GUEST_PANICKED":
			go func(name string) {
				var st struct {
					Status string `json:"status"`
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if mon.Execute(ctx, "query-status", nil, &st) == nil {
					in.update(func(r *record) { r.CVM.QEMUStatus = st.Status })
				}
			}(ev.Event)
			if ev.Event == "GUEST_PANICKED" {
				in.update(func(r *record) { r.ShutdownReason = "guest-panic" })
			}
		}
	}
	mon.Disconnect()
	m.mu.Lock()
	closing := m.closing
	m.mu.Unlock()
	if closing {
		return // the agent is shutting down; QEMU keeps running
	}
	in.mu.Lock()
	sock := in.rec.QMPSocket
	in.mu.Unlock()
	if !launch.WaitExit(context.Background(), pid, sock, 10*time.Second) {
		// QMP went away but QEMU lives: try to attach again.
		m.log.Warn("QMP connection lost while QEMU runs; re-attaching", "cvm", id, "pid", pid)
		in.mu.Lock()
		in.mon = nil
		in.mu.Unlock()
		if err := in.attach(context.Background()); err == nil {
			return
		}
		m.log.Error("cannot re-attach; killing QEMU", "cvm", id, "pid", pid)
		_ = launch.Kill(pid, sock)
		launch.WaitExit(context.Background(), pid, sock, 5*time.Second)
	}
	in.exitedHandled(exited, "")
}

// exitedHandled records that QEMU ended and applies the restart policy.
// note describes the exit when no SHUTDOWN event was seen.
func (in *instance) exitedHandled(exited chan struct{}, note string) {
	m := in.m
	now := time.Now().UTC()
	restart := false
	in.mu.Lock()
	r := &in.rec
	in.mon = nil
	r.CVM.PID, r.CVM.GuestReady, r.CVM.StoppedAt, r.CVM.QEMUStatus = 0, false, &now, ""
	reason := r.ShutdownReason
	switch {
	case r.StopRequested:
		r.CVM.State = api.StateStopped
	case reason == "guest-shutdown":
		r.CVM.State, r.CVM.LastError = api.StateStopped, "the guest powered itself off"
	default:
		why := "QEMU exited without a stop request"
		if reason != "" {
			why += " (shutdown reason " + reason + ")"
		}
		if note != "" {
			why += ": " + note
		}
		r.CVM.LastError = why
		if m.cfg.Restart.Policy == config.RestartOnFailure && r.CVM.Restarts < m.cfg.Restart.MaxRestarts {
			r.CVM.Restarts++
			r.CVM.State = api.StateStarting
			restart = true
		} else {
			r.CVM.State = api.StateCrashed
			if m.cfg.Restart.Policy == config.RestartOnFailure {
				r.CVM.LastError += fmt.Sprintf("; not restarted: %d restarts already (restart.max_restarts %d)", r.CVM.Restarts, m.cfg.Restart.MaxRestarts)
			}
		}
	}
	_ = in.persistLocked()
	st := r.CVM
	in.mu.Unlock()
	select {
	case <-exited:
	default:
		close(exited)
	}
	go func() { // an attestation in flight fails on its own
		in.attestMu.Lock()
		in.attest.close()
		in.attestMu.Unlock()
	}()
	switch {
	case restart:
		m.log.Warn("QEMU crashed; restarting", "cvm", st.ID, "reason", st.LastError, "restart", st.Restarts, "max", m.cfg.Restart.MaxRestarts)
		m.Metrics.Restarts.Inc()
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			in.opMu.Lock()
			defer in.opMu.Unlock()
			in.mu.Lock()
			stop := in.rec.StopRequested
			in.mu.Unlock()
			if stop {
				in.update(func(r *record) { r.CVM.State = api.StateStopped })
				return
			}
			if err := in.reverify(true); err != nil {
				in.update(func(r *record) {
					r.CVM.State, r.CVM.LastError = api.StateFailed, "restart refused: "+err.Error()
				})
				m.log.Error("restart refused: the CVM's kit no longer verifies", "cvm", st.ID, "err", err)
				return
			}
			if err := in.start(context.Background()); err != nil {
				m.log.Error("restart failed", "cvm", st.ID, "err", err)
			}
		}()
	case st.State == api.StateCrashed:
		m.log.Error("QEMU crashed", "cvm", st.ID, "reason", st.LastError)
	default:
		m.log.Info("CVM stopped", "cvm", st.ID, "note", st.LastError)
	}
}

// Stop stops a CVM: ACPI power-down, then QMP quit after stop_timeout,
// then SIGKILL. It returns the final status; stopping a CVM that is not
// running returns its status unchanged.
func (m *Manager) Stop(ctx context.Context, id string) (api.CVM, error) {
	in, err := m.get(id)
	if err != nil {
		return api.CVM{}, err
	}
	// A restart in progress holds opMu; flag the stop first so it does not
	// start QEMU again.
	in.update(func(r *record) {
		if api.Active(r.CVM.State) {
			r.StopRequested = true
		}
	})
	in.opMu.Lock()
	defer in.opMu.Unlock()
	in.mu.Lock()
	if !api.Active(in.rec.CVM.State) {
		st := in.rec.CVM
		in.mu.Unlock()
		return st, nil
	}
	in.rec.StopRequested = true
	in.rec.CVM.State = api.StateStopping
	_ = in.persistLocked()
	mon, exited, pid, sock := in.mon, in.exited, in.rec.CVM.PID, in.rec.QMPSocket
	in.mu.Unlock()
	m.log.Info("stopping CVM", "cvm", id, "pid", pid)

	wait := func(d time.Duration) bool {
		select {
		case <-exited:
			return true
		case <-time.After(d):
			return false
		case <-ctx.Done():
			return false
		}
	}
	how := ""
	if mon != nil {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := mon.Execute(c, "system_powerdown", nil, nil)
		cancel()
		if err != nil {
			m.log.Warn("system_powerdown failed", "cvm", id, "err", err)
		}
		if wait(m.cfg.StopTimeout.D()) {
			how = "powerdown"
		} else {
			m.log.Info("guest did not power off within stop_timeout; sending quit", "cvm", id, "stop_timeout", m.cfg.StopTimeout.D())
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			_ = mon.Execute(c, "quit", nil, nil)
			cancel()
			if wait(10 * time.Second) {
				how = "quit"
			}
		}
	}
	if how == "" {
		m.log.Warn("killing QEMU", "cvm", id, "pid", pid)
		_ = launch.Kill(pid, sock)
		if !wait(10*time.Second) && mon == nil {
			// No watcher (QMP never attached): record the end here.
			if launch.WaitExit(ctx, pid, sock, 5*time.Second) {
				in.exitedHandled(exited, "killed")
			}
		}
		how = "kill"
	}
	m.Metrics.Stops.WithLabelValues(how).Inc()
	st := in.status()
	if api.Active(st.State) {
		return st, fmt.Errorf("%w: CVM %s did not stop (pid %d)", ErrUnavailable, id, pid)
	}
	return st, nil
}

// Recover loads state_dir/cvms/*/state.json and re-attaches to every QEMU
// that still runs; CVMs whose QEMU ended while the agent was down get the
// restart policy.
func (m *Manager) Recover(ctx context.Context) error {
	if err := os.MkdirAll(m.cvmsDir(), 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(m.cvmsDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(m.cvmsDir(), e.Name())
		b, err := os.ReadFile(filepath.Join(dir, "state.json"))
		if err != nil {
			m.log.Warn("skipping CVM folder without state", "dir", dir, "err", err)
			continue
		}
		in := &instance{m: m, dir: dir, exited: make(chan struct{})}
		if err := json.Unmarshal(b, &in.rec); err != nil || in.rec.CVM.ID != e.Name() {
			m.log.Error("skipping unreadable state", "dir", dir, "err", err)
			continue
		}
		m.mu.Lock()
		m.cvms[in.rec.CVM.ID] = in
		m.mu.Unlock()
		st := in.rec.CVM
		if !api.Active(st.State) {
			continue
		}
		pid := st.PID
		if pid == 0 {
			pid, _ = launch.ReadPIDFile(in.rec.PIDFile)
			in.rec.CVM.PID = pid
		}
		if launch.Alive(pid, in.rec.QMPSocket) {
			if err := in.reverifyRunning(pid); err != nil {
				m.log.Error("re-attach refused: the running CVM's kit no longer verifies; killing its QEMU", "cvm", st.ID, "pid", pid, "err", err)
				_ = launch.Kill(pid, in.rec.QMPSocket)
				launch.WaitExit(ctx, pid, in.rec.QMPSocket, 5*time.Second)
				now := time.Now().UTC()
				in.update(func(r *record) {
					r.CVM.State, r.CVM.LastError, r.CVM.PID, r.CVM.GuestReady, r.CVM.StoppedAt, r.CVM.QEMUStatus =
						api.StateFailed, "re-attach refused, QEMU killed: "+err.Error(), 0, false, &now, ""
				})
				continue
			}
			if err := in.attach(ctx); err == nil {
				m.log.Info("re-attached to running CVM", "cvm", st.ID, "pid", pid, "state", in.status().State, "guest_ready", in.status().GuestReady)
				if in.status().GuestReady {
					in.selfCheck()
				}
				continue
			} else {
				m.log.Error("QEMU runs but QMP does not answer; killing it", "cvm", st.ID, "pid", pid, "err", err)
				_ = launch.Kill(pid, in.rec.QMPSocket)
				launch.WaitExit(ctx, pid, in.rec.QMPSocket, 5*time.Second)
			}
		}
		in.exitedHandled(in.exited, "QEMU ended while the agent was not running")
	}
	m.removeStaleUploads()
	m.startConsoleRotation()
	return nil
}

// Close detaches from every QEMU and leaves them running.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.stopRotation != nil {
		close(m.stopRotation)
		m.stopRotation = nil
	}
	m.closing = true
	ins := make([]*instance, 0, len(m.cvms))
	for _, in := range m.cvms {
		ins = append(ins, in)
	}
	m.mu.Unlock()
	for _, in := range ins {
		in.mu.Lock()
		mon := in.mon
		in.mu.Unlock()
		if mon != nil {
			mon.Disconnect()
		}
		in.attestMu.Lock()
		in.attest.close()
		in.attestMu.Unlock()
	}
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

// ManifestOf reads the launch.json of a CVM's kit.
func (m *Manager) ManifestOf(id string) (*cvm.Manifest, error) {
	in, err := m.get(id)
	if err != nil {
		return nil, err
	}
	in.mu.Lock()
	dir := in.rec.RunDir
	in.mu.Unlock()
	if dir == "" {
		dir = in.status().KitDir
	}
	return launch.ReadManifest(dir)
}

// checkSite refuses a kit of another participant than the agent's site.
func (m *Manager) checkSite(man *cvm.Manifest) error {
	if m.Site == "" {
		return fmt.Errorf("%w: this agent does not know its site (the CN of its site kit's certificate), so it runs no kit", ErrUnavailable)
	}
	if man.Participant != m.Site {
		return fmt.Errorf("%w: kit %s is for participant %q, and this agent runs only kits of its site %q (the CN of the certificate in kit_dir): launch it on %s's agent",
			ErrBadKit, man.ID, man.Participant, m.Site, man.Participant)
	}
	return nil
}

func (m *Manager) serialsFile() string { return filepath.Join(m.cfg.StateDir, "serials.json") }

// loadSerials reads serials.json once. Caller holds launchMu.
func (m *Manager) loadSerials() error {
	if m.serials != nil {
		return nil
	}
	s := map[string]int64{}
	b, err := os.ReadFile(m.serialsFile())
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("%s: %w (it holds the highest kit serial per participant; fix or remove it)", m.serialsFile(), err)
		}
	}
	m.serials = s
	return nil
}

// checkSerial refuses a kit older than one of its participant that ran
// already. Caller holds launchMu.
func (m *Manager) checkSerial(man *cvm.Manifest) error {
	if err := m.loadSerials(); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if hi := m.serials[man.Participant]; man.Serial < hi {
		return fmt.Errorf("%w: kit %s of %s has serial %d, older than serial %d which already ran on this agent: a superseded kit does not launch again; launch the newest kit of %s (flare_cvm_kit's kit_dir)",
			ErrBadKit, man.ID, man.Participant, man.Serial, hi, man.Participant)
	}
	return nil
}

// noteSerial records that man ran. Caller holds launchMu.
func (m *Manager) noteSerial(man *cvm.Manifest) {
	if m.loadSerials() != nil || man.Serial <= m.serials[man.Participant] {
		return
	}
	m.serials[man.Participant] = man.Serial
	b, _ := json.MarshalIndent(m.serials, "", "  ")
	if err := atomicfile.Write(m.serialsFile(), append(b, '\n'), 0o600); err != nil {
		m.log.Error("cannot record the kit serial", "participant", man.Participant, "serial", man.Serial, "err", err)
	}
}

// reverify checks the CVM's own copy of its kit again before QEMU runs it
// once more: the signature over its launch.json (parsed from those
// bytes), the site, the serial (restart true), firmware, kernel and initrd
// against their SHA-256, and that no drive names another file. It then
// rebuilds QEMU's arguments from the verified launch.json rather than
// trusting state.json's.
func (in *instance) reverify(restart bool) error {
	m := in.m
	in.mu.Lock()
	rec := in.rec
	in.mu.Unlock()
	legacy := rec.RunDir == "" || rec.Options == nil
	if legacy && restart {
		return fmt.Errorf("CVM %s was launched by an older flare-agent that kept no checked copy of its kit, so it is not restarted; launch kit %s again", rec.CVM.ID, rec.CVM.KitDir)
	}
	dir := rec.RunDir
	if legacy {
		// Launched by an older agent from the kit folder itself: check
		// that folder as it is (a running QEMU keeps its arguments).
		dir = rec.CVM.KitDir
	}
	k, err := launch.LoadKit(dir, m.KitRoot)
	if err != nil {
		return err
	}
	man := k.Manifest
	if man.ID != rec.CVM.KitID {
		return fmt.Errorf("%s holds kit %s, but CVM %s was launched from kit %s", dir, man.ID, rec.CVM.ID, rec.CVM.KitID)
	}
	if err := m.checkSite(man); err != nil {
		return err
	}
	if restart {
		m.launchMu.Lock()
		err := m.checkSerial(man)
		m.launchMu.Unlock()
		if err != nil {
			return err
		}
	}
	if err := launch.VerifyFiles(dir, man, false); err != nil {
		return err
	}
	if legacy {
		return nil
	}
	args, err := launch.Args(man, rec.RunDir, *rec.Options)
	if err != nil {
		return err
	}
	in.update(func(r *record) { r.Args = args })
	return nil
}

// reverifyRunning checks, before re-attaching to a QEMU that outlived the
// agent, the CVM's kit copy (reverify) and that the process runs exactly
// the arguments that copy gives.
func (in *instance) reverifyRunning(pid int) error {
	if err := in.reverify(false); err != nil {
		return err
	}
	in.mu.Lock()
	args := in.rec.Args
	in.mu.Unlock()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return fmt.Errorf("cannot read QEMU's command line: %w", err)
	}
	got := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	if len(got) < 1 || !slices.Equal(got[1:], args) {
		return fmt.Errorf("QEMU pid %d does not run the arguments of the CVM's checked kit", pid)
	}
	return nil
}
