package simulated_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/attest"
	"github.com/flarekit/terraform-provider-flare/internal/attest/simulated"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	sgtest "github.com/google/go-sev-guest/testing"
)

var (
	meas = bytes.Repeat([]byte{0x42}, 48)
	host = bytes.Repeat([]byte{0x24}, 32)
	key  = []byte("guest-key-fingerprint")
)

func tcb(t *testing.T, p kds.TCBParts) uint64 {
	v, err := kds.ComposeTCBParts(p)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(v)
}

func policy(nonce []byte) attest.Policy {
	return attest.Policy{ExpectedMeasurement: meas, HostData: host, Nonce: nonce, GuestKey: key, Simulated: true}
}

func TestSimulatedDeviceEndToEnd(t *testing.T) {
	reported := tcb(t, kds.TCBParts{BlSpl: 3, TeeSpl: 0, SnpSpl: 8, UcodeSpl: 115})
	start := time.Now()
	dev, err := simulated.New(simulated.Options{Measurement: meas, HostData: host, TCB: reported, GuestSVN: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("simulated device with its fake AMD chain: %s", time.Since(start))
	nonce, _ := attest.NewNonce()

	for name, get := range map[string]func() (*attest.Evidence, error){
		"device":         func() (*attest.Evidence, error) { return attest.GetEvidence(dev, nonce, key) },
		"quote provider": func() (*attest.Evidence, error) { return attest.GetEvidenceQuote(dev.QuoteProvider(), nonce, key) },
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			ev, err := get()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("evidence: %s", time.Since(start))
			if ev.Source != attest.SourceSimulated || !ev.Simulated {
				t.Errorf("evidence source %q simulated %v", ev.Source, ev.Simulated)
			}
			// No TrustedRoots: the fake chain comes from the evidence,
			// accepted because its ARK is go-sev-guest's test key.
			start = time.Now()
			v, err := attest.Verify(ev, policy(nonce), time.Time{})
			t.Logf("verify: %s", time.Since(start))
			if err != nil || !v.Verified || !v.Simulated || v.Mode != "simulated" {
				t.Fatalf("verdict %+v, %v", v, err)
			}
			if v.ReportedTCB.SNP != 8 || v.ReportedTCB.Microcode != 115 || v.ReportedTCB.BootLoader != 3 ||
				v.GuestSVN != 2 || v.ProductLine != "Milan" || !strings.HasPrefix(v.ChipID, "53494d554c41544544") /* "SIMULATED" */ {
				t.Errorf("verdict fields %+v", v)
			}
			// Explicit roots work the same.
			p := policy(nonce)
			p.TrustedRoots = dev.Roots()
			if _, err := attest.Verify(ev, p, time.Time{}); err != nil {
				t.Fatal(err)
			}
			// The TCB floor.
			p.MinimumTCB = reported
			if _, err := attest.Verify(ev, p, time.Time{}); err != nil {
				t.Errorf("minimum TCB equal to the reported one: %v", err)
			}
			p.MinimumTCB = tcb(t, kds.TCBParts{BlSpl: 3, SnpSpl: 9, UcodeSpl: 115})
			if v, err := attest.Verify(ev, p, time.Time{}); !errors.Is(err, attest.ErrRejected) || !strings.HasPrefix(v.Reasons[0], "tcb:") {
				t.Errorf("minimum TCB above the reported one: %v", err)
			}
			// A policy for real SEV-SNP refuses it.
			p = policy(nonce)
			p.Simulated = false
			v, err = attest.Verify(ev, p, time.Time{})
			if !errors.Is(err, attest.ErrRejected) || v.Simulated || len(v.Reasons) != 2 ||
				!strings.HasPrefix(v.Reasons[0], "simulated:") || !strings.HasPrefix(v.Reasons[1], "certificate_chain:") {
				t.Errorf("real-SNP policy on simulated evidence: %+v %v", v, err)
			}
		})
	}
}

func TestSimulatedNoCertsUsesCache(t *testing.T) {
	dev, err := simulated.New(simulated.Options{Measurement: meas, HostData: host, OmitCerts: true})
	if err != nil {
		t.Fatal(err)
	}
	nonce, _ := attest.NewNonce()
	ev, err := attest.GetEvidence(dev, nonce, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.CertTable) != 0 {
		t.Fatalf("cert table of %d bytes with OmitCerts", len(ev.CertTable))
	}
	p := policy(nonce)
	p.TrustedRoots = dev.Roots()
	if v, err := attest.Verify(ev, p, time.Time{}); !errors.Is(err, attest.ErrRejected) || !strings.HasPrefix(v.Reasons[0], "vcek:") {
		t.Fatalf("without certificates or cache: %v", err)
	}
	p.VCEKCacheDir = t.TempDir()
	if _, err := attest.CacheVCEK(p.VCEKCacheDir, dev.VCEK()); err != nil {
		t.Fatal(err)
	}
	if v, err := attest.Verify(ev, p, time.Time{}); err != nil || v.VCEKSource != "cache" {
		t.Fatalf("with the cache: %+v %v", v, err)
	}
	// Without explicit roots there is nothing to take the fake chain from.
	p.TrustedRoots = nil
	if v, err := attest.Verify(ev, p, time.Time{}); !errors.Is(err, attest.ErrRejected) || !strings.HasPrefix(v.Reasons[0], "certificate_chain:") {
		t.Fatalf("no roots, no table: %v", err)
	}
}

// TestSimulatedRefusesOtherFakeChains: simulated mode without configured
// roots takes the chain from the evidence only when its ARK is
// go-sev-guest's published test key, not any self-made chain.
func TestSimulatedRefusesOtherFakeChains(t *testing.T) {
	rsaKey := func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	ecKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	keys := &sgtest.AmdKeys{Ark: rsaKey(), Ask: rsaKey(), Asvk: rsaKey(), Vcek: ecKey(), Vlek: ecKey()}
	b := &sgtest.AmdSignerBuilder{Keys: keys, ProductName: "Milan-B1", CSPID: "x",
		ArkCreationTime: time.Now().Add(-time.Hour), AskCreationTime: time.Now().Add(-time.Hour),
		AsvkCreationTime: time.Now().Add(-time.Hour), VcekCreationTime: time.Now().Add(-time.Hour), VlekCreationTime: time.Now().Add(-time.Hour)}
	signer, err := b.TestOnlyCertChain()
	if err != nil {
		t.Fatal(err)
	}
	nonce, _ := attest.NewNonce()
	rd := attest.ReportData(nonce, key)
	r := sgtest.CreateRawReport(&sgtest.TestReportOptions{ReportData: rd[:], Version: 3,
		FMS: abi.MaskedCpuid1EaxFromSevProduct(abi.DefaultSevProduct())})
	copy(r[0x08:], []byte{0, 0, 3, 0, 0, 0, 0, 0}) // policy 0x30000
	copy(r[0x90:0xC0], meas)
	copy(r[0xC0:0xE0], host)
	d, err := sgtest.TcDevice([]sgtest.TestCase{{Input: rd, Output: r}}, &sgtest.DeviceOptions{Signer: signer, Product: abi.DefaultSevProduct()})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := attest.GetEvidence(d, nonce, key)
	if err != nil {
		t.Fatal(err)
	}
	v, err := attest.Verify(ev, policy(nonce), time.Time{})
	if !errors.Is(err, attest.ErrRejected) || len(v.Reasons) != 1 || !strings.Contains(v.Reasons[0], "not go-sev-guest's test ARK") {
		t.Fatalf("self-made chain: %+v %v", v, err)
	}
	// Configured explicitly, such roots are simulated too.
	p := policy(nonce)
	p.TrustedRoots = attest.SimulatedRoots(signer.Ark, signer.Ask, signer.Asvk)
	if v, err := attest.Verify(ev, p, time.Time{}); err != nil || !v.Simulated {
		t.Fatalf("explicit roots: %+v %v", v, err)
	}
	p.Simulated = false
	if _, err := attest.Verify(ev, p, time.Time{}); err == nil || errors.Is(err, attest.ErrRejected) {
		t.Fatalf("non-AMD roots without Simulated: %v", err)
	}
}

func TestSimulatedConcurrent(t *testing.T) {
	dev, err := simulated.New(simulated.Options{Measurement: meas, HostData: host})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nonce, _ := attest.NewNonce()
			ev, err := attest.GetEvidence(dev, nonce, key)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := attest.Verify(ev, policy(nonce), time.Time{}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

func TestOptionsChecked(t *testing.T) {
	for name, o := range map[string]simulated.Options{
		"measurement": {Measurement: []byte{1}},
		"host data":   {HostData: []byte{1}},
		"policy":      {Policy: 1},
		"product":     {ProductName: "Zen-9"},
	} {
		if _, err := simulated.New(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
