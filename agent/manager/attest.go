package manager

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/guestproto"
	"github.com/flarekit/terraform-provider-flare/internal/attest"
)

// Attest asks the guest of CVM id for evidence bound to a caller's nonce
// and verifies it. A report that fails a check gives a verdict with
// Verified false; an error means there was nothing to check (unknown CVM,
// guest not answering, unreadable evidence). The verdict is the caller's
// alone: it does not change the CVM's status (LastVerdict, GuestReady),
// which only the agent's own rounds (SelfAttest) set.
func (m *Manager) Attest(ctx context.Context, id string, nonce []byte) (*api.Verdict, error) {
	return m.attest(ctx, id, nonce, false)
}

// SelfAttest is the agent's own round with a nonce of its own; its verdict
// is the CVM's LastVerdict (what the status page and CVM status show).
func (m *Manager) SelfAttest(ctx context.Context, id string) (*api.Verdict, error) {
	nonce := make([]byte, 32)
	_, _ = rand.Read(nonce)
	return m.attest(ctx, id, nonce, true)
}

// MaxAttestQueue is how many attestation requests may wait for one CVM's
// guest at once; more are refused with ErrBusy.
const MaxAttestQueue = 8

func (m *Manager) attest(ctx context.Context, id string, nonce []byte, own bool) (*api.Verdict, error) {
	if len(nonce) < attest.MinNonceSize || len(nonce) > attest.MaxNonceSize {
		return nil, fmt.Errorf("%w: nonce must be %d to %d bytes, got %d", ErrBadKit, attest.MinNonceSize, attest.MaxNonceSize, len(nonce))
	}
	in, err := m.get(id)
	if err != nil {
		return nil, err
	}
	st := in.status()
	if st.State != api.StateRunning {
		m.Metrics.Attestations.WithLabelValues(st.Mode, "error").Inc()
		return nil, fmt.Errorf("%w: CVM %s is %s, not running", ErrUnavailable, id, st.State)
	}
	in.mu.Lock()
	sock := in.rec.AttestSocket
	in.mu.Unlock()
	exp := Expected{Measurement: st.ExpectedMeasurement, HostData: st.HostData, Policy: st.GuestPolicy,
		Simulated: st.Mode == api.ModeSimulated}

	req := guestproto.Request{ID: reqID(), Op: guestproto.OpAttest, Nonce: nonce}
	if exp.Simulated {
		req.Simulated = &guestproto.SimulatedPlatform{Measurement: exp.Measurement, HostData: exp.HostData, Policy: exp.Policy}
	}
	if n := in.attestWaiting.Add(1); n > MaxAttestQueue {
		in.attestWaiting.Add(-1)
		return nil, fmt.Errorf("%w: %d attestation requests for CVM %s are waiting already; retry later", ErrBusy, n-1, id)
	}
	t0 := time.Now()
	in.attestMu.Lock()
	in.attestWaiting.Add(-1)
	if err := ctx.Err(); err != nil {
		in.attestMu.Unlock()
		return nil, fmt.Errorf("%w: attestation of CVM %s: %v while waiting for earlier requests", ErrUnavailable, id, err)
	}
	resp, err := in.attest.roundTrip(ctx, sock, req, m.cfg.AttestTimeout.D())
	in.attestMu.Unlock()
	fetch := time.Since(t0)
	if err != nil {
		m.Metrics.Attestations.WithLabelValues(st.Mode, "error").Inc()
		return nil, fmt.Errorf("%w: guest of CVM %s: %v", ErrUnavailable, id, err)
	}
	if resp.Error != "" {
		m.Metrics.Attestations.WithLabelValues(st.Mode, "error").Inc()
		return nil, fmt.Errorf("%w: guest of CVM %s could not produce evidence: %s", ErrUnavailable, id, resp.Error)
	}
	t1 := time.Now()
	v, err := m.verifier.Verify(resp.Evidence, nonce, exp)
	verify := time.Since(t1)
	if err != nil {
		m.Metrics.Attestations.WithLabelValues(st.Mode, "error").Inc()
		return nil, fmt.Errorf("%w: evidence from CVM %s: %v", ErrBadKit, id, err)
	}
	v.CVMID, v.Mode, v.Nonce, v.Evidence = id, st.Mode, nonce, resp.Evidence
	v.ExpectedMeasurement = exp.Measurement
	if resp.Simulated && !exp.Simulated {
		// A guest in an SNP launch that claims to be simulated must not
		// pass, whatever the verifier made of its evidence.
		v.Verified = false
		v.Reasons = append(v.Reasons, "the guest responder runs in simulated mode but the CVM was launched with SEV-SNP")
	}
	v.At = time.Now().UTC()
	v.FetchMillis, v.VerifyMillis = ms(fetch), ms(verify)
	result := "rejected"
	if v.Verified {
		result = "verified"
	}
	m.Metrics.Attestations.WithLabelValues(st.Mode, result).Inc()
	m.Metrics.AttestSeconds.WithLabelValues("fetch").Observe(fetch.Seconds())
	m.Metrics.AttestSeconds.WithLabelValues("verify").Observe(verify.Seconds())
	if own {
		in.update(func(r *record) {
			r.CVM.GuestReady = true
			r.CVM.LastVerdict = &api.Summary{Verified: v.Verified, Simulated: v.Simulated, At: v.At}
		})
	}
	m.log.Info("attestation", "cvm", id, "own", own, "verified", v.Verified, "simulated", v.Simulated, "reasons", v.Reasons,
		"fetch_ms", v.FetchMillis, "verify_ms", v.VerifyMillis)
	return v, nil
}

// Ping checks that the guest responder answers.
func (m *Manager) Ping(ctx context.Context, id string, timeout time.Duration) error {
	in, err := m.get(id)
	if err != nil {
		return err
	}
	in.mu.Lock()
	sock := in.rec.AttestSocket
	in.mu.Unlock()
	in.attestMu.Lock()
	resp, err := in.attest.roundTrip(ctx, sock, guestproto.Request{ID: reqID(), Op: guestproto.OpPing}, timeout)
	in.attestMu.Unlock()
	if err == nil && resp.Error != "" {
		err = errors.New(resp.Error)
	}
	if err == nil {
		in.update(func(r *record) { r.CVM.GuestReady = true })
	}
	return err
}

func reqID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// attestConn is the agent's connection to a CVM's attestation socket
// (QEMU's chardev for the virtio-serial port). It stays open between
// requests: while no host program is connected, the guest's reads return
// end-of-file and its responder polls, so reconnecting per request would
// add that polling delay.
type attestConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func (a *attestConn) close() {
	if a.conn != nil {
		a.conn.Close()
		a.conn, a.r = nil, nil
	}
}

// roundTrip sends req and reads lines until the answer with req's id;
// answers to older, abandoned requests are skipped. Caller holds attestMu.
// A broken kept-open connection (QEMU restarted) is redialed once.
func (a *attestConn) roundTrip(ctx context.Context, sock string, req guestproto.Request, timeout time.Duration) (*guestproto.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		reused := a.conn != nil
		if !reused {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "unix", sock)
			if err != nil {
				return nil, fmt.Errorf("attestation channel %s: %w", sock, err)
			}
			a.conn, a.r = conn, bufio.NewReaderSize(conn, 64<<10)
		}
		resp, err := a.exchange(ctx, b, req.ID, timeout)
		if err == nil {
			return resp, nil
		}
		a.close()
		if !reused || attempt > 0 || ctx.Err() != nil {
			return nil, err
		}
	}
}

func (a *attestConn) exchange(ctx context.Context, line []byte, id string, timeout time.Duration) (*guestproto.Response, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = a.conn.SetDeadline(dl)
	}
	conn := a.conn
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := a.conn.Write(append(line, '\n')); err != nil {
		return nil, fmt.Errorf("sending request: %w", err)
	}
	for {
		l, err := readLine(a.r, guestproto.MaxLine)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("no answer within %s (is the guest responder running?)", timeout)
			}
			return nil, fmt.Errorf("reading answer: %w", err)
		}
		var resp guestproto.Response
		if err := json.Unmarshal(l, &resp); err != nil {
			continue // noise on the port (e.g. a partial line from before)
		}
		if resp.ID == id {
			return &resp, nil
		}
	}
}

func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var out []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		if err != nil {
			return nil, err
		}
		out = append(out, chunk...)
		if len(out) > max {
			return nil, fmt.Errorf("line longer than %d bytes", max)
		}
		if !isPrefix {
			return out, nil
		}
	}
}
