// Package attest is the SEV-SNP attestation evidence format, the nonce
// binding, and the verification policy of flare-agent.
//
// The guest (flare-agent guest, inside the CVM) answers a verifier's nonce
// with Evidence: a raw SNP attestation report whose REPORT_DATA is
// ReportData(nonce, guestKey), plus the certificate table of the extended
// report. The verifier (the agent) checks it with Verify: the report
// signature and the VCEK chain up to AMD's roots with go-sev-guest's verify
// package, then the report fields against a Policy (expected launch
// measurement from the CVM kit, guest policy, HOST_DATA, minimum TCB, the
// nonce binding) with go-sev-guest's validate package.
//
// Simulated mode: without SEV-SNP hardware, go-sev-guest's test device and
// its fake AMD certificate chain (signed with keys published in the
// go-sev-guest repository) stand in for the AMD secure processor. Evidence
// from it is only accepted when Policy.Simulated is set, and every Verdict
// about it has Simulated = true and Mode = "simulated". It proves nothing
// about confidentiality and must never be shown as SEV-SNP.
package attest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"
)

// EvidenceFormat names the JSON layout of Evidence.
const EvidenceFormat = "flare-sev-snp-evidence/v1"

// Nonce sizes: NonceSize is what NewNonce makes; Verify and GetEvidence
// refuse nonces shorter than MinNonceSize or longer than MaxNonceSize.
const (
	NonceSize    = 32
	MinNonceSize = 16
	MaxNonceSize = 1024
)

// Evidence sources, as the guest reports them (informational: the verifier
// decides from the trusted roots whether evidence is simulated).
const (
	SourceSevGuest  = "sev-guest" // /dev/sev-guest ioctl (client.Device)
	SourceTSM       = "tsm"       // configfs-tsm or another client.QuoteProvider
	SourceSimulated = "simulated" // go-sev-guest's test device, fake AMD chain
)

// Evidence is what the guest returns for a nonce. []byte fields are base64
// in JSON.
type Evidence struct {
	Format string `json:"format"`
	// Report is the raw 1184-byte (0x4A0) SNP ATTESTATION_REPORT.
	Report []byte `json:"report"`
	// CertTable is the extended report's certificate table (GHCB layout:
	// GUID/offset/length entries, then the DER certificates): VCEK or
	// VLEK, ASK, ARK, when the host provisioned them. Often empty on
	// upstream kernels; the verifier then uses its VCEK cache.
	CertTable []byte `json:"cert_table,omitempty"`
	// Nonce is the verifier's nonce the report answers.
	Nonce []byte `json:"nonce"`
	// GuestKey is the guest key fingerprint bound into REPORT_DATA
	// together with the nonce (may be empty).
	GuestKey []byte `json:"guest_key,omitempty"`
	// Source says how the guest obtained the report (SourceSevGuest,
	// SourceTSM, SourceSimulated).
	Source string `json:"source,omitempty"`
	// Simulated is the guest's own statement that the report comes from a
	// simulated device. Verify never trusts a report more because of it.
	Simulated bool `json:"simulated,omitempty"`
}

// ReportData is the SNP REPORT_DATA binding a verifier nonce and the guest
// key fingerprint: SHA-512(nonce ‖ guestKeyFingerprint), exactly 64 bytes.
// The verifier fixes the nonce's length, so the concatenation is
// unambiguous for it.
func ReportData(nonce []byte, guestKeyFingerprint []byte) [64]byte {
	h := sha512.New()
	h.Write(nonce)
	h.Write(guestKeyFingerprint)
	var out [64]byte
	copy(out[:], h.Sum(nil))
	return out
}

// NewNonce returns NonceSize random bytes.
func NewNonce() ([]byte, error) {
	n := make([]byte, NonceSize)
	if _, err := rand.Read(n); err != nil {
		return nil, err
	}
	return n, nil
}

func checkNonce(nonce []byte) error {
	if len(nonce) < MinNonceSize || len(nonce) > MaxNonceSize {
		return fmt.Errorf("nonce is %d bytes, want %d to %d", len(nonce), MinNonceSize, MaxNonceSize)
	}
	return nil
}

// GetEvidence asks an SEV guest device (client.OpenDevice() in a real
// guest; a simulated device in tests) for an extended report at VMPL 0
// whose REPORT_DATA binds nonce and guestKey.
func GetEvidence(d client.Device, nonce, guestKey []byte) (*Evidence, error) {
	return getEvidence(nonce, guestKey, sourceOf(d, SourceSevGuest), func(rd [64]byte) ([]byte, []byte, error) {
		return client.GetRawExtendedReport(d, rd)
	})
}

// GetEvidenceQuote is GetEvidence through a client.QuoteProvider
// (client.GetQuoteProvider(): configfs-tsm, else the ioctl device).
func GetEvidenceQuote(qp client.QuoteProvider, nonce, guestKey []byte) (*Evidence, error) {
	return getEvidence(nonce, guestKey, sourceOf(qp, SourceTSM), func(rd [64]byte) ([]byte, []byte, error) {
		raw, err := qp.GetRawQuote(rd)
		if err != nil {
			return nil, nil, err
		}
		if len(raw) < abi.ReportSize {
			return nil, nil, fmt.Errorf("quote is %d bytes, shorter than a report (%d)", len(raw), abi.ReportSize)
		}
		return raw[:abi.ReportSize], raw[abi.ReportSize:], nil
	})
}

// sourceOf names the source; devices that say they are simulated (as
// internal/attest/simulated's) are SourceSimulated.
func sourceOf(dev any, real string) string {
	if s, ok := dev.(interface{ Simulated() bool }); ok && s.Simulated() {
		return SourceSimulated
	}
	return real
}

func getEvidence(nonce, guestKey []byte, source string, get func([64]byte) ([]byte, []byte, error)) (*Evidence, error) {
	if err := checkNonce(nonce); err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	rd := ReportData(nonce, guestKey)
	report, certs, err := get(rd)
	if err != nil {
		return nil, fmt.Errorf("attest: getting an SNP report: %w", err)
	}
	if len(report) < abi.ReportSize {
		return nil, fmt.Errorf("attest: report is %d bytes, want %d", len(report), abi.ReportSize)
	}
	report = report[:abi.ReportSize]
	// The guest checks what it got before sending it on.
	if got := report[0x50:0x90]; !bytes.Equal(got, rd[:]) {
		return nil, fmt.Errorf("attest: the device returned a report for other REPORT_DATA")
	}
	if len(certs) > 0 && allZero(certs) {
		certs = nil // the kernel's buffer with no table in it
	}
	return &Evidence{
		Format:    EvidenceFormat,
		Report:    append([]byte(nil), report...),
		CertTable: append([]byte(nil), certs...),
		Nonce:     append([]byte(nil), nonce...),
		GuestKey:  append([]byte(nil), guestKey...),
		Source:    source,
		Simulated: source == SourceSimulated,
	}, nil
}

// MarshalEvidence and UnmarshalEvidence are the wire form (JSON).
func MarshalEvidence(ev *Evidence) ([]byte, error) { return json.Marshal(ev) }

// UnmarshalEvidence parses and sanity-checks the wire form.
func UnmarshalEvidence(b []byte) (*Evidence, error) {
	var ev Evidence
	if err := json.Unmarshal(b, &ev); err != nil {
		return nil, fmt.Errorf("attest: evidence: %w", err)
	}
	if ev.Format != EvidenceFormat {
		return nil, fmt.Errorf("attest: evidence format %q, want %q", ev.Format, EvidenceFormat)
	}
	if len(ev.Report) != abi.ReportSize {
		return nil, fmt.Errorf("attest: evidence report is %d bytes, want %d", len(ev.Report), abi.ReportSize)
	}
	return &ev, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

var errNoEvidence = errors.New("attest: no evidence")
