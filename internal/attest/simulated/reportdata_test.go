package simulated_test

import (
	"bytes"
	"crypto/sha512"
	"strings"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/attest"
	"github.com/flarekit/terraform-provider-flare/internal/attest/simulated"
)

// Policy.ReportData (a protocol's own REPORT_DATA binding, as flare-kbs
// uses) and Policy.AnyMeasurement (the caller checks MEASUREMENT).
func TestVerifyExplicitReportData(t *testing.T) {
	dev, err := simulated.New(simulated.Options{Measurement: meas, HostData: host})
	if err != nil {
		t.Fatal(err)
	}
	rd := sha512.Sum512([]byte("some protocol's binding"))
	raw, err := dev.QuoteProvider().GetRawQuote(rd)
	if err != nil {
		t.Fatal(err)
	}
	ev := &attest.Evidence{Report: raw[:1184], CertTable: raw[1184:]}

	v, err := attest.Verify(ev, attest.Policy{ReportData: rd[:], AnyMeasurement: true, Simulated: true}, time.Time{})
	if err != nil || !v.Verified || v.Measurement == "" || !v.Simulated {
		t.Fatalf("explicit REPORT_DATA, any measurement: %v %+v", err, v)
	}
	v, err = attest.Verify(ev, attest.Policy{ReportData: rd[:], ExpectedMeasurement: meas, Simulated: true}, time.Time{})
	if err != nil || !v.Verified {
		t.Fatalf("explicit REPORT_DATA, measurement: %v", err)
	}
	other := sha512.Sum512([]byte("another nonce"))
	v, err = attest.Verify(ev, attest.Policy{ReportData: other[:], AnyMeasurement: true, Simulated: true}, time.Time{})
	if err == nil || v == nil || v.Verified || !strings.Contains(strings.Join(v.Reasons, ";"), "report_data:") {
		t.Fatalf("other REPORT_DATA accepted: %v %+v", err, v)
	}
	v, err = attest.Verify(ev, attest.Policy{ReportData: rd[:], ExpectedMeasurement: bytes.Repeat([]byte{1}, 48), Simulated: true}, time.Time{})
	if err == nil || !strings.Contains(err.Error(), "measurement:") {
		t.Fatalf("wrong measurement accepted: %v", err)
	}
	for name, p := range map[string]attest.Policy{
		"both bindings":         {ReportData: rd[:], Nonce: []byte("0123456789abcdef"), AnyMeasurement: true, Simulated: true},
		"short report data":     {ReportData: rd[:10], AnyMeasurement: true, Simulated: true},
		"any and expected":      {ReportData: rd[:], AnyMeasurement: true, ExpectedMeasurement: meas, Simulated: true},
		"no measurement at all": {ReportData: rd[:], Simulated: true},
	} {
		if v, err := attest.Verify(ev, p, time.Time{}); err == nil || v != nil {
			t.Errorf("%s: policy accepted: %v %+v", name, err, v)
		}
	}
	// Without Simulated, the fake chain is refused.
	if v, err := attest.Verify(ev, attest.Policy{ReportData: rd[:], AnyMeasurement: true}, time.Time{}); err == nil || v.Verified {
		t.Fatalf("simulated evidence accepted as SNP: %+v", v)
	}
}
