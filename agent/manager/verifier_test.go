package manager

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/flarekit/terraform-provider-flare/agent/guest"
	"github.com/flarekit/terraform-provider-flare/agent/guestproto"
	"github.com/flarekit/terraform-provider-flare/internal/attest"
)

const (
	testMeasurement = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"
	testHostData    = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	testPolicy      = "0x30000"
)

// evidence runs the real guest responder (simulated source) for nonce,
// with the simulated platform reporting measurement and hostData.
func evidence(t *testing.T, r *guest.Responder, nonce []byte, measurement, hostData string) []byte {
	t.Helper()
	req, _ := json.Marshal(guestproto.Request{ID: "1", Nonce: nonce,
		Simulated: &guestproto.SimulatedPlatform{Measurement: measurement, HostData: hostData, Policy: testPolicy}})
	resp := r.Handle(req)
	if resp.Error != "" {
		t.Fatal(resp.Error)
	}
	if !resp.Simulated {
		t.Fatal("simulated responder did not say so")
	}
	return resp.Evidence
}

func hasReason(reasons []string, check string) bool {
	for _, r := range reasons {
		if strings.HasPrefix(r, check+":") {
			return true
		}
	}
	return false
}

func TestVerifierSimulated(t *testing.T) {
	r := &guest.Responder{Source: &guest.SimulatedSource{}, Log: testLogger(t)}
	v := AttestVerifier{}
	exp := Expected{Measurement: testMeasurement, HostData: testHostData, Policy: testPolicy, Simulated: true}
	nonce := bytes.Repeat([]byte{7}, 32)
	good := evidence(t, r, nonce, testMeasurement, testHostData)

	t.Run("happy path", func(t *testing.T) {
		got, err := v.Verify(good, nonce, exp)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Verified || !got.Simulated || got.Measurement != testMeasurement || got.HostData != testHostData || got.Policy != "0x30000" {
			t.Fatalf("verdict %+v", got)
		}
		if got.GuestKey == "" || got.ChipID == "" || got.TCB.Reported == "" {
			t.Fatalf("fields missing: %+v", got)
		}
	})
	t.Run("simulated evidence for an SNP launch", func(t *testing.T) {
		e := exp
		e.Simulated = false
		got, err := v.Verify(good, nonce, e)
		if err != nil {
			t.Fatal(err)
		}
		if got.Verified || got.Simulated {
			t.Fatalf("fake chain accepted for an SNP CVM: %+v", got)
		}
		t.Logf("reasons: %v", got.Reasons)
	})
	t.Run("stale nonce", func(t *testing.T) {
		other := bytes.Repeat([]byte{8}, 32)
		got, err := v.Verify(good, other, exp)
		if err != nil {
			t.Fatal(err)
		}
		if got.Verified || !hasReason(got.Reasons, "nonce") || !hasReason(got.Reasons, "report_data") {
			t.Fatalf("stale evidence accepted or wrong reasons: %v", got.Reasons)
		}
	})
	t.Run("wrong measurement", func(t *testing.T) {
		bad := evidence(t, r, nonce, strings.Repeat("ab", 48), testHostData)
		got, err := v.Verify(bad, nonce, exp)
		if err != nil {
			t.Fatal(err)
		}
		if got.Verified || !hasReason(got.Reasons, "measurement") {
			t.Fatalf("wrong measurement accepted: %v", got.Reasons)
		}
	})
	t.Run("wrong host data", func(t *testing.T) {
		bad := evidence(t, r, nonce, testMeasurement, strings.Repeat("cd", 32))
		got, err := v.Verify(bad, nonce, exp)
		if err != nil {
			t.Fatal(err)
		}
		if got.Verified || !hasReason(got.Reasons, "host_data") {
			t.Fatalf("wrong host data accepted: %v", got.Reasons)
		}
	})
	t.Run("forged signature", func(t *testing.T) {
		ev, err := attest.UnmarshalEvidence(good)
		if err != nil {
			t.Fatal(err)
		}
		ev.Report[0x90] ^= 0xff // change MEASUREMENT after signing...
		want, _ := hex.DecodeString(testMeasurement)
		want[0] ^= 0xff // ...and expect exactly that, so only the signature can catch it
		forged, _ := attest.MarshalEvidence(ev)
		e := exp
		e.Measurement = hex.EncodeToString(want)
		got, err := v.Verify(forged, nonce, e)
		if err != nil {
			t.Fatal(err)
		}
		if got.Verified || !hasReason(got.Reasons, "signature") {
			t.Fatalf("forged report accepted: %v", got.Reasons)
		}
	})
	t.Run("no expected measurement", func(t *testing.T) {
		e := exp
		e.Measurement = ""
		got, err := v.Verify(good, nonce, e)
		if err != nil {
			t.Fatal(err)
		}
		if got.Verified || !hasReason(got.Reasons, "measurement") {
			t.Fatalf("accepted without an expected measurement: %v", got.Reasons)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		if _, err := v.Verify([]byte("{}"), nonce, exp); err == nil {
			t.Fatal("garbage evidence gave no error")
		}
	})
}

// BenchmarkVerify is the agent's verification of one simulated report
// (signature and chain with go-sev-guest verify, fields with validate).
func BenchmarkVerify(b *testing.B) {
	r := &guest.Responder{Source: &guest.SimulatedSource{}, Log: testLogger(b)}
	nonce := bytes.Repeat([]byte{7}, 32)
	req, _ := json.Marshal(guestproto.Request{ID: "1", Nonce: nonce,
		Simulated: &guestproto.SimulatedPlatform{Measurement: testMeasurement, HostData: testHostData, Policy: testPolicy}})
	ev := r.Handle(req).Evidence
	exp := Expected{Measurement: testMeasurement, HostData: testHostData, Policy: testPolicy, Simulated: true}
	v := AttestVerifier{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got, err := v.Verify(ev, nonce, exp)
		if err != nil || !got.Verified {
			b.Fatal(err, got.Reasons)
		}
	}
}

// BenchmarkSimulatedEvidence is the guest side: one report from the
// simulated device (host CPU; a TCG guest is slower).
func BenchmarkSimulatedEvidence(b *testing.B) {
	r := &guest.Responder{Source: &guest.SimulatedSource{}, Log: testLogger(b)}
	nonce := bytes.Repeat([]byte{7}, 32)
	req, _ := json.Marshal(guestproto.Request{ID: "1", Nonce: nonce,
		Simulated: &guestproto.SimulatedPlatform{Measurement: testMeasurement, HostData: testHostData, Policy: testPolicy}})
	r.Handle(req)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if resp := r.Handle(req); resp.Error != "" {
			b.Fatal(resp.Error)
		}
	}
}
