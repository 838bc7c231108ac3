package guest

import (
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-sev-guest/client"

	"github.com/flarekit/terraform-provider-flare/agent/guestproto"
	"github.com/flarekit/terraform-provider-flare/internal/attest"
	"github.com/flarekit/terraform-provider-flare/internal/attest/simulated"
)

// HardwareSource gets reports from the AMD secure processor: configfs-tsm
// when the kernel offers it, else the /dev/sev-guest ioctl device.
type HardwareSource struct {
	mu sync.Mutex
}

// Simulated is false.
func (*HardwareSource) Simulated() bool { return false }

// Evidence implements Source. sim is ignored: real hardware measures.
func (h *HardwareSource) Evidence(nonce, guestKey []byte, _ *guestproto.SimulatedPlatform) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ev *attest.Evidence
	qp, qerr := client.GetQuoteProvider()
	if qerr == nil && qp.IsSupported() {
		var err error
		if ev, err = attest.GetEvidenceQuote(qp, nonce, guestKey); err != nil {
			return nil, err
		}
	} else {
		dev, err := client.OpenDevice()
		if err != nil {
			return nil, fmt.Errorf("no SEV-SNP guest device (/dev/sev-guest, configfs-tsm): %v; is this an SEV-SNP guest with the sev-guest module loaded?", err)
		}
		defer dev.Close()
		if ev, err = attest.GetEvidence(dev, nonce, guestKey); err != nil {
			return nil, err
		}
	}
	return attest.MarshalEvidence(ev)
}

// SimulatedSource is the SIMULATED platform: internal/attest/simulated
// (go-sev-guest's test device and fake AMD chain). The report fields the
// real firmware would measure (measurement, host data, policy) come from
// the agent's request, which takes them from the kit's launch.json.
type SimulatedSource struct {
	mu      sync.Mutex
	devices map[guestproto.SimulatedPlatform]*simulated.Device
}

// Simulated is true.
func (*SimulatedSource) Simulated() bool { return true }

// Evidence implements Source.
func (s *SimulatedSource) Evidence(nonce, guestKey []byte, sim *guestproto.SimulatedPlatform) ([]byte, error) {
	var p guestproto.SimulatedPlatform
	if sim != nil {
		p = *sim
	}
	dev, err := s.device(p)
	if err != nil {
		return nil, err
	}
	ev, err := attest.GetEvidence(dev, nonce, guestKey)
	if err != nil {
		return nil, err
	}
	ev.Simulated = true
	return attest.MarshalEvidence(ev)
}

func (s *SimulatedSource) device(p guestproto.SimulatedPlatform) (*simulated.Device, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.devices[p]; d != nil {
		return d, nil
	}
	o := simulated.Options{}
	var err error
	if p.Measurement != "" {
		if o.Measurement, err = decodeHex("measurement", p.Measurement, 48); err != nil {
			return nil, err
		}
	}
	if p.HostData != "" {
		if o.HostData, err = decodeHex("host_data", p.HostData, 32); err != nil {
			return nil, err
		}
	}
	if p.Policy != "" {
		if _, err := fmt.Sscanf(p.Policy, "0x%x", &o.Policy); err != nil {
			return nil, fmt.Errorf("simulated platform: policy %q is not 0x-hex", p.Policy)
		}
	}
	d, err := simulated.New(o)
	if err != nil {
		return nil, err
	}
	if s.devices == nil {
		s.devices = map[guestproto.SimulatedPlatform]*simulated.Device{}
	}
	if len(s.devices) > 16 {
		clear(s.devices)
	}
	s.devices[p] = d
	return d, nil
}

func decodeHex(name, s string, n int) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != n {
		return nil, errors.New("simulated platform: " + name + " is not " + fmt.Sprint(n) + " bytes in hex")
	}
	return b, nil
}

// SimulatedQuoteProvider is the SIMULATED platform p as a go-sev-guest
// QuoteProvider (fake AMD chain; the certificate table rides in every
// quote), for guest code that speaks other protocols (flare-init's key
// broker client).
func SimulatedQuoteProvider(p guestproto.SimulatedPlatform) (client.QuoteProvider, error) {
	var s SimulatedSource
	d, err := s.device(p)
	if err != nil {
		return nil, err
	}
	return d.QuoteProvider(), nil
}
