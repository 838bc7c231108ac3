package attest_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/verify/testdata"

	"github.com/flarekit/terraform-provider-flare/internal/attest"
	"github.com/flarekit/terraform-provider-flare/internal/attest/simulated"
)

// FuzzVerifyEvidence: evidence comes from the guest, which the host
// controls, and reaches Verify on the agent and in the provider. For any
// report, certificate table and guest key, Verify must not panic, must
// answer a valid policy with a verdict (a rejection, never another
// error), and must verify only what it should: never without the
// simulated policy (the fuzzer cannot sign as AMD), and never a report
// whose measurement, host data or REPORT_DATA differ from the policy's.
// Seeds: simulated evidence that verifies (with and without a certificate
// table) and go-sev-guest's real Milan report.
func FuzzVerifyEvidence(f *testing.F) {
	meas := bytes.Repeat([]byte{0x42}, abi.MeasurementSize)
	host := bytes.Repeat([]byte{0x24}, abi.HostDataSize)
	nonce := []byte("0123456789abcdef0123456789abcdef")
	key := bytes.Repeat([]byte{0x17}, 32)
	now := time.Now()

	dev, err := simulated.New(simulated.Options{Measurement: meas, HostData: host})
	if err != nil {
		f.Fatal(err)
	}
	good, err := attest.GetEvidence(dev, nonce, key)
	if err != nil {
		f.Fatal(err)
	}
	pol := func(sim bool) attest.Policy {
		return attest.Policy{ExpectedMeasurement: meas, HostData: host, Nonce: nonce, Simulated: sim}
	}
	if v, err := attest.Verify(good, pol(true), now); err != nil || !v.Verified {
		f.Fatalf("the seed evidence does not verify: %v", err)
	}
	f.Add(good.Report, good.CertTable, key, true)
	f.Add(good.Report, good.CertTable, key, false)
	f.Add(good.Report, []byte(nil), key, true)
	f.Add(good.Report, good.CertTable, []byte(nil), true)
	f.Add(testdata.AttestationBytes[:abi.ReportSize], []byte(nil), key, false)
	f.Add(testdata.AttestationBytes[:abi.ReportSize], good.CertTable, key, true)
	f.Add([]byte{}, []byte{}, []byte{}, false)

	f.Fuzz(func(t *testing.T, report, certTable, guestKey []byte, sim bool) {
		ev := &attest.Evidence{Format: attest.EvidenceFormat, Report: report, CertTable: certTable,
			Nonce: nonce, GuestKey: guestKey, Simulated: sim}
		// The wire form round-trips, and what UnmarshalEvidence accepts
		// is what Verify gets.
		b, err := attest.MarshalEvidence(ev)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := attest.UnmarshalEvidence(b); err == nil {
			if !bytes.Equal(back.Report, report) || !bytes.Equal(back.CertTable, certTable) || !bytes.Equal(back.GuestKey, guestKey) {
				t.Fatal("evidence does not round-trip through its wire form")
			}
		} else if len(report) == abi.ReportSize {
			t.Fatalf("UnmarshalEvidence refused well-formed evidence: %v", err)
		}

		v, err := attest.Verify(ev, pol(sim), now)
		if err != nil && !errors.Is(err, attest.ErrRejected) {
			t.Fatalf("a valid policy gave an error that is not a rejection: %v", err)
		}
		if v == nil {
			t.Fatalf("no verdict (err %v)", err)
		}
		if v.Verified != (err == nil) || v.Verified != (len(v.Reasons) == 0) {
			t.Fatalf("verdict Verified=%v with err %v and reasons %q", v.Verified, err, v.Reasons)
		}
		if !v.Verified {
			return
		}
		if !sim {
			t.Fatalf("verified without the simulated policy: %+v", v)
		}
		if !v.Simulated || v.Mode != attest.ModeSimulated {
			t.Fatalf("simulated evidence verified as %q", v.Mode)
		}
		r, err := abi.ReportToProto(report)
		if err != nil {
			t.Fatalf("verified a report go-sev-guest cannot parse: %v", err)
		}
		rd := attest.ReportData(nonce, guestKey)
		if !bytes.Equal(r.GetMeasurement(), meas) || !bytes.Equal(r.GetHostData(), host) || !bytes.Equal(r.GetReportData(), rd[:]) {
			t.Fatalf("verified a report with measurement %x host data %x report data %x",
				r.GetMeasurement(), r.GetHostData(), r.GetReportData())
		}
		if v.Measurement != hex.EncodeToString(meas) {
			t.Fatalf("verdict measurement %s", v.Measurement)
		}
	})
}

// TestCertTableRangeOverflow: a certificate table entry whose offset +
// length wraps around 2^32 is a format rejection, not a panic (offset
// near 2^32) nor a 4 GiB allocation (length near 2^32), as go-sev-guest
// v0.15's own check allows. FuzzVerifyEvidence found the first.
func TestCertTableRangeOverflow(t *testing.T) {
	meas := bytes.Repeat([]byte{0x42}, abi.MeasurementSize)
	nonce := []byte("0123456789abcdef0123456789abcdef")
	dev, err := simulated.New(simulated.Options{Measurement: meas})
	if err != nil {
		t.Fatal(err)
	}
	good, err := attest.GetEvidence(dev, nonce, nil)
	if err != nil {
		t.Fatal(err)
	}
	table := func(offset, length uint32) []byte {
		b := make([]byte, 2*abi.CertTableEntrySize+64)
		copy(b, []byte("0123456789abcdef")) // any non-zero GUID
		binary.LittleEndian.PutUint32(b[16:], offset)
		binary.LittleEndian.PutUint32(b[20:], length)
		return b // then the all-zero terminator and 64 bytes of data
	}
	for name, tc := range map[string][2]uint32{
		"offset wraps": {0xFFFFFF90, 0x100},
		"length wraps": {2 * abi.CertTableEntrySize, 0xFFFFFFF0},
	} {
		t.Run(name, func(t *testing.T) {
			ev := *good
			ev.CertTable = table(tc[0], tc[1])
			v, err := attest.Verify(&ev, attest.Policy{ExpectedMeasurement: meas, Nonce: nonce, Simulated: true}, time.Time{})
			if !errors.Is(err, attest.ErrRejected) || v == nil || v.Verified {
				t.Fatalf("verdict %+v, err %v", v, err)
			}
			found := false
			for _, r := range v.Reasons {
				found = found || strings.HasPrefix(r, "format: certificate table")
			}
			if !found {
				t.Fatalf("reasons %q lack the certificate table", v.Reasons)
			}
		})
	}
}
