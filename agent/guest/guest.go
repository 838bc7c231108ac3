// Package guest is the attestation responder that runs inside the CVM
// (`flare-agent guest`): it reads requests from the virtio-serial port
// org.flare.attest and answers each nonce with SEV-SNP evidence whose
// REPORT_DATA is SHA-512(nonce ‖ guest key fingerprint), the guest key
// being a fresh per-boot ECDSA P-256 key.
package guest

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/guestproto"
)

// Source produces serialized evidence (internal/attest's wire form) for a
// nonce and guest key fingerprint.
type Source interface {
	Evidence(nonce, guestKey []byte, sim *guestproto.SimulatedPlatform) ([]byte, error)
	// Simulated reports whether this is the simulated platform.
	Simulated() bool
}

// Responder answers requests.
type Responder struct {
	Source  Source
	Log     *slog.Logger
	Version string

	once     sync.Once
	key      *ecdsa.PrivateKey
	keyFP    []byte
	keyError error
}

// GuestKey returns the per-boot key's fingerprint: SHA-256 of its PKIX
// public key. The key is made on first use and lives only in memory.
func (r *Responder) GuestKey() ([]byte, error) {
	r.once.Do(func() {
		r.key, r.keyError = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if r.keyError != nil {
			return
		}
		der, err := x509.MarshalPKIXPublicKey(&r.key.PublicKey)
		if err != nil {
			r.keyError = err
			return
		}
		s := sha256.Sum256(der)
		r.keyFP = s[:]
	})
	return r.keyFP, r.keyError
}

// Handle answers one request line.
func (r *Responder) Handle(line []byte) *guestproto.Response {
	var req guestproto.Request
	if err := json.Unmarshal(line, &req); err != nil {
		return &guestproto.Response{Error: "request is not JSON: " + err.Error(), Simulated: r.Source.Simulated(), Version: r.Version}
	}
	resp := &guestproto.Response{ID: req.ID, Simulated: r.Source.Simulated(), Version: r.Version}
	switch req.Op {
	case guestproto.OpPing:
		return resp
	case "", guestproto.OpAttest:
	default:
		resp.Error = fmt.Sprintf("unknown op %q", req.Op)
		return resp
	}
	key, err := r.GuestKey()
	if err != nil {
		resp.Error = "guest key: " + err.Error()
		return resp
	}
	sim := req.Simulated
	if !r.Source.Simulated() {
		sim = nil // real hardware measures; the host has no say
	}
	ev, err := r.Source.Evidence(req.Nonce, key, sim)
	if err != nil {
		resp.Error = err.Error()
		return resp
	}
	resp.Evidence = ev
	return resp
}

// Serve answers requests from rw, one JSON line each way, until ctx is
// done or rw fails. A virtio-serial port reads as end-of-file while no host
// program is connected to it; with retryEOF, Serve then waits and reads
// again (keeping the port open, so the host sees the guest side stay open).
func (r *Responder) Serve(ctx context.Context, rw io.ReadWriter, retryEOF bool) error {
	br := bufio.NewReaderSize(rw, 64<<10)
	var line []byte
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		chunk, isPrefix, err := br.ReadLine()
		if err != nil {
			if errors.Is(err, io.EOF) && retryEOF {
				line = nil // a partial line from a host that went away
				time.Sleep(100 * time.Millisecond)
				br.Reset(rw)
				continue
			}
			return err
		}
		line = append(line, chunk...)
		if isPrefix {
			if len(line) > guestproto.MaxLine {
				line = nil
				r.Log.Warn("dropping an overlong request line")
			}
			continue
		}
		if len(line) == 0 {
			continue
		}
		t0 := time.Now()
		resp := r.Handle(line)
		line = nil
		b, err := json.Marshal(resp)
		if err != nil {
			return err
		}
		if _, err := rw.Write(append(b, '\n')); err != nil {
			return err
		}
		r.Log.Info("answered", "id", resp.ID, "error", resp.Error, "simulated", resp.Simulated, "ms", time.Since(t0).Milliseconds())
	}
}

// ServePort opens the virtio-serial port, waiting up to wait for it to
// appear (the virtio_console module may still be loading), and serves it.
func (r *Responder) ServePort(ctx context.Context, port string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		dev := ResolvePort(port)
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			if time.Now().Before(deadline) && ctx.Err() == nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return fmt.Errorf("attestation port: %w", err)
		}
		r.Log.Info("serving attestation requests", "port", port, "device", dev, "simulated", r.Source.Simulated())
		err = r.Serve(ctx, f, true)
		f.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.Log.Warn("port error; reopening", "err", err)
		time.Sleep(time.Second)
		deadline = time.Now().Add(wait)
	}
}

// ResolvePort finds the device of a virtio-serial port. udev makes
// /dev/virtio-ports/<name> links; a minimal initramfs without udev has only
// /dev/vportNpM, whose name is in /sys/class/virtio-ports/vportNpM/name.
func ResolvePort(port string) string {
	if _, err := os.Stat(port); err == nil {
		return port
	}
	if filepath.Dir(port) != "/dev/virtio-ports" {
		return port
	}
	want := filepath.Base(port)
	dirs, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, n := range dirs {
		b, err := os.ReadFile(n)
		if err == nil && strings.TrimSpace(string(b)) == want {
			return filepath.Join("/dev", filepath.Base(filepath.Dir(n)))
		}
	}
	return port
}
