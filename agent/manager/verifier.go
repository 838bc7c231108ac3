package manager

import (
	"encoding/hex"
	"fmt"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/launch"
	"github.com/flarekit/terraform-provider-flare/internal/attest"
)

// AttestVerifier is the Verifier over internal/attest: go-sev-guest verify
// (signature, VCEK chain to AMD's roots; never fetching) and validate
// (measurement, policy, host data, REPORT_DATA = SHA-512(nonce ‖ guest
// key)).
//
// For a CVM launched in simulated mode (Expected.Simulated) the policy is
// Simulated with no TrustedRoots: internal/attest then trusts the fake
// ARK/ASK the guest sends in its certificate table, and only if that ARK
// carries go-sev-guest's published test key. CVMs launched with SEV-SNP
// are checked against AMD's roots only, so a simulated guest there fails.
type AttestVerifier struct {
	// VCEKCacheDir holds VCEKs for reports without a certificate table.
	VCEKCacheDir string
	// MinimumTCB, MinimumLaunchTCB are TCB_VERSION minimums (0: none).
	MinimumTCB, MinimumLaunchTCB uint64
	// Now is the verification time (nil: time.Now).
	Now func() time.Time
}

// Verify implements Verifier.
func (a AttestVerifier) Verify(evidence, nonce []byte, exp Expected) (*api.Verdict, error) {
	ev, err := attest.UnmarshalEvidence(evidence)
	if err != nil {
		return nil, err
	}
	var extra []string
	measurement := make([]byte, 48)
	if exp.Measurement == "" {
		extra = append(extra, "measurement: launch.json has no expected_measurement, so the launch digest cannot be checked")
	} else if measurement, err = hex.DecodeString(exp.Measurement); err != nil || len(measurement) != 48 {
		return nil, fmt.Errorf("expected measurement %q is not 48 bytes in hex", exp.Measurement)
	}
	hostData := make([]byte, 32) // QEMU without host-data reports zeros
	if exp.HostData != "" {
		if hostData, err = hex.DecodeString(exp.HostData); err != nil || len(hostData) != 32 {
			return nil, fmt.Errorf("expected host data %q is not 32 bytes in hex", exp.HostData)
		}
	}
	policy, err := launch.ParsePolicy(exp.Policy)
	if err != nil {
		return nil, fmt.Errorf("expected guest policy: %w", err)
	}
	p := attest.Policy{
		ExpectedMeasurement: measurement,
		GuestPolicy:         policy,
		HostData:            hostData,
		MinimumTCB:          a.MinimumTCB,
		MinimumLaunchTCB:    a.MinimumLaunchTCB,
		Nonce:               nonce,
		VCEKCacheDir:        a.VCEKCacheDir,
		Simulated:           exp.Simulated,
	}
	now := time.Time{}
	if a.Now != nil {
		now = a.Now()
	}
	v, err := attest.Verify(ev, p, now)
	if v == nil {
		return nil, err
	}
	out := &api.Verdict{
		Verified:      v.Verified && len(extra) == 0,
		Reasons:       append(extra, v.Reasons...),
		Simulated:     v.Simulated,
		Measurement:   v.Measurement,
		Policy:        fmt.Sprintf("0x%x", v.Policy),
		HostData:      v.HostData,
		ReportData:    v.ReportData,
		ChipID:        v.ChipID,
		ReportVersion: v.ReportVersion,
		VMPL:          v.VMPL,
		GuestSVN:      v.GuestSVN,
		PolicyDebug:   v.PolicyDebug,
		ProductLine:   v.ProductLine,
		Firmware:      v.Firmware,
		SigningKey:    v.SigningKey,
		VCEKSource:    v.VCEKSource,
		GuestKey:      v.GuestKey,
		TCB: api.TCB{
			Current: "0x" + v.CurrentTCB.Raw, Reported: "0x" + v.ReportedTCB.Raw,
			Committed: "0x" + v.CommittedTCB.Raw, Launch: "0x" + v.LaunchTCB.Raw,
			BlSPL: v.ReportedTCB.BootLoader, TeeSPL: v.ReportedTCB.TEE, SnpSPL: v.ReportedTCB.SNP, UcodeSPL: v.ReportedTCB.Microcode,
		},
	}
	if exp.Simulated && !v.Simulated {
		out.Verified = false
		out.Reasons = append(out.Reasons, "simulated: the CVM was launched in simulated mode but the verdict is not marked simulated")
	}
	return out, nil
}
