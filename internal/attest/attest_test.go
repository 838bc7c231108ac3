package attest_test

import (
	"bytes"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/attest"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sgtest "github.com/google/go-sev-guest/testing"
	"github.com/google/go-sev-guest/verify/testdata"
	"github.com/google/go-sev-guest/verify/trust"
)

var (
	measurement = bytes.Repeat([]byte{0xa5}, 48)
	hostData    = bytes.Repeat([]byte{0x5a}, 32)
	guestKey    = bytes.Repeat([]byte{0x17}, 32) // a key fingerprint
	nonce       = []byte("0123456789abcdef0123456789abcdef")
	otherNonce  = []byte("fedcba9876543210fedcba9876543210")
)

func TestReportData(t *testing.T) {
	got := attest.ReportData(nonce, guestKey)
	want := sha512.Sum512(append(append([]byte{}, nonce...), guestKey...))
	if got != want {
		t.Fatalf("ReportData = %x, want SHA-512(nonce ‖ key) %x", got, want)
	}
	if attest.ReportData(nonce, nil) == got || attest.ReportData(otherNonce, guestKey) == got {
		t.Fatal("ReportData ignores an input")
	}
	n, err := attest.NewNonce()
	if err != nil || len(n) != attest.NonceSize {
		t.Fatalf("NewNonce: %x %v", n, err)
	}
}

// rawReport is an SNP report (version 3, Milan) for go-sev-guest's test
// device, which signs it with its fake VCEK when asked for reportData.
func rawReport(reportData [64]byte, meas, host []byte, policy uint64) [sgReportSize]byte {
	r := sgtest.CreateRawReport(&sgtest.TestReportOptions{
		ReportData: reportData[:], Version: 3, FMS: abi.MaskedCpuid1EaxFromSevProduct(abi.DefaultSevProduct()),
	})
	binary.LittleEndian.PutUint64(r[0x08:], policy)
	copy(r[0x90:0xC0], meas)
	copy(r[0xC0:0xE0], host)
	return r
}

const sgReportSize = len(sgtest.TestCase{}.Output)

// testDevice is go-sev-guest's test device (sgtest.TcDevice) with the
// reports it answers, and the TrustedRoots of its fake AMD chain
// (simulated: the keys are go-sev-guest's published test keys).
func testDevice(t *testing.T, reports map[[64]byte][sgReportSize]byte) (*sgtest.Device, map[string][]*trust.AMDRootCerts) {
	t.Helper()
	var tcs []sgtest.TestCase
	for rd, r := range reports {
		tcs = append(tcs, sgtest.TestCase{Name: hex.EncodeToString(rd[:4]), Input: rd, Output: r})
	}
	d, err := sgtest.TcDevice(tcs, &sgtest.DeviceOptions{Now: time.Now().Add(-time.Hour), Product: abi.DefaultSevProduct()})
	if err != nil {
		t.Fatal(err)
	}
	return d, attest.SimulatedRoots(d.Signer.Ark, d.Signer.Ask, d.Signer.Asvk)
}

func basePolicy(roots map[string][]*trust.AMDRootCerts) attest.Policy {
	return attest.Policy{
		ExpectedMeasurement: measurement,
		HostData:            hostData,
		Nonce:               nonce,
		GuestKey:            guestKey,
		TrustedRoots:        roots,
		Simulated:           true,
	}
}

// wantRejected checks err is a rejection whose reasons start with
// exactly the given checks (in any order).
func wantRejected(t *testing.T, v *attest.Verdict, err error, checks ...string) {
	t.Helper()
	if !errors.Is(err, attest.ErrRejected) || v == nil || v.Verified {
		t.Fatalf("want rejection for %v, got verdict %+v err %v", checks, v, err)
	}
	var got []string
	for _, r := range v.Reasons {
		got = append(got, r[:strings.Index(r, ":")])
	}
	if strings.Join(sorted(got), ",") != strings.Join(sorted(checks), ",") {
		t.Fatalf("reasons %q, want checks %v", v.Reasons, checks)
	}
	t.Logf("rejected: %s", strings.Join(v.Reasons, " | "))
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestVerifyGoSevGuestTestDevice(t *testing.T) {
	rd := attest.ReportData(nonce, guestKey)
	staleRD := attest.ReportData(otherNonce, guestKey)
	wrongMeasRD := attest.ReportData(nonce, []byte("wrong measurement"))
	debugRD := attest.ReportData(nonce, []byte("debug policy"))
	dev, roots := testDevice(t, map[[64]byte][sgReportSize]byte{
		rd:          rawReport(rd, measurement, hostData, 0x30000),
		staleRD:     rawReport(staleRD, measurement, hostData, 0x30000),
		wrongMeasRD: rawReport(wrongMeasRD, bytes.Repeat([]byte{0xbb}, 48), hostData, 0x30000),
		debugRD:     rawReport(debugRD, measurement, hostData, 0xb0000),
	})
	now := time.Now()

	good, err := attest.GetEvidence(dev, nonce, guestKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(good.Report) != abi.ReportSize || len(good.CertTable) == 0 || good.Source != attest.SourceSevGuest {
		t.Fatalf("evidence: report %d bytes, cert table %d bytes, source %q", len(good.Report), len(good.CertTable), good.Source)
	}

	t.Run("good", func(t *testing.T) {
		start := time.Now()
		v, err := attest.Verify(good, basePolicy(roots), now)
		t.Logf("verify took %s", time.Since(start))
		if err != nil || !v.Verified {
			t.Fatalf("good report: %v %+v", err, v)
		}
		if !v.Simulated || v.Mode != attest.ModeSimulated {
			t.Errorf("fake AMD chain not reported as simulated: %+v", v)
		}
		if v.Measurement != hex.EncodeToString(measurement) || v.HostData != hex.EncodeToString(hostData) ||
			v.ReportData != hex.EncodeToString(rd[:]) || v.GuestKey != hex.EncodeToString(guestKey) ||
			v.Policy != 0x30000 || !v.PolicySMT || v.PolicyDebug || v.VMPL != 0 || v.SignatureAlgo != 1 ||
			v.SigningKey != "VCEK" || v.ProductLine != "Milan" || v.ReportVersion != 3 || v.VCEKSource != "cert_table" {
			t.Errorf("verdict fields: %+v", v)
		}
	})

	t.Run("evidence JSON round trip", func(t *testing.T) {
		b, err := attest.MarshalEvidence(good)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		json.Unmarshal(b, &m)
		if _, ok := m["report"].(string); !ok {
			t.Fatalf("report not base64 in %s", b[:80])
		}
		back, err := attest.UnmarshalEvidence(b)
		if err != nil {
			t.Fatal(err)
		}
		if v, err := attest.Verify(back, basePolicy(roots), now); err != nil || !v.Verified {
			t.Fatalf("after JSON: %v", err)
		}
		if _, err := attest.UnmarshalEvidence([]byte(`{"format":"x"}`)); err == nil {
			t.Error("wrong format accepted")
		}
	})

	t.Run("forged signature", func(t *testing.T) {
		forged := *good
		forged.Report = append([]byte(nil), good.Report...)
		forged.Report[0x2A0+5] ^= 0x01 // R, inside the signature
		v, err := attest.Verify(&forged, basePolicy(roots), now)
		wantRejected(t, v, err, "signature")
	})

	t.Run("forged field", func(t *testing.T) {
		forged := *good
		forged.Report = append([]byte(nil), good.Report...)
		copy(forged.Report[0x90:0xC0], bytes.Repeat([]byte{0xbb}, 48)) // claim another measurement
		p := basePolicy(roots)
		p.ExpectedMeasurement = bytes.Repeat([]byte{0xbb}, 48)
		v, err := attest.Verify(&forged, p, now)
		wantRejected(t, v, err, "signature")
	})

	t.Run("wrong measurement", func(t *testing.T) {
		ev, err := attest.GetEvidence(dev, nonce, []byte("wrong measurement"))
		if err != nil {
			t.Fatal(err)
		}
		p := basePolicy(roots)
		p.GuestKey = []byte("wrong measurement")
		v, err := attest.Verify(ev, p, now)
		wantRejected(t, v, err, "measurement")
	})

	t.Run("stale nonce", func(t *testing.T) {
		// A report made (and correctly signed) for an earlier nonce.
		ev, err := attest.GetEvidence(dev, otherNonce, guestKey)
		if err != nil {
			t.Fatal(err)
		}
		v, err := attest.Verify(ev, basePolicy(roots), now)
		wantRejected(t, v, err, "nonce", "report_data")
		// Relabelled with the current nonce: REPORT_DATA still gives it away.
		ev.Nonce = nonce
		v, err = attest.Verify(ev, basePolicy(roots), now)
		wantRejected(t, v, err, "report_data")
	})

	t.Run("wrong guest key", func(t *testing.T) {
		p := basePolicy(roots)
		p.GuestKey = []byte("another key")
		v, err := attest.Verify(good, p, now)
		wantRejected(t, v, err, "guest_key", "report_data")
		// Without an expected key the evidence's key is bound and reported.
		p.GuestKey = nil
		if v, err := attest.Verify(good, p, now); err != nil || v.GuestKey != hex.EncodeToString(guestKey) {
			t.Fatalf("no expected key: %v %+v", err, v)
		}
	})

	t.Run("wrong host_data", func(t *testing.T) {
		p := basePolicy(roots)
		p.HostData = bytes.Repeat([]byte{0x01}, 32)
		v, err := attest.Verify(good, p, now)
		wantRejected(t, v, err, "host_data")
	})

	t.Run("debug policy", func(t *testing.T) {
		ev, err := attest.GetEvidence(dev, nonce, []byte("debug policy"))
		if err != nil {
			t.Fatal(err)
		}
		p := basePolicy(roots)
		p.GuestKey = []byte("debug policy")
		v, err := attest.Verify(ev, p, now)
		wantRejected(t, v, err, "policy")
		p.GuestPolicy = 0xb0000 // allow debug
		if _, err := attest.Verify(ev, p, now); err != nil {
			t.Fatalf("debug allowed: %v", err)
		}
	})

	t.Run("minimum TCB and VMPL", func(t *testing.T) {
		p := basePolicy(roots)
		tcb, _ := kds.ComposeTCBParts(kds.TCBParts{SnpSpl: 8})
		p.MinimumTCB = uint64(tcb)
		v, err := attest.Verify(good, p, now)
		wantRejected(t, v, err, "tcb")
		p = basePolicy(roots)
		one := 1
		p.VMPL = &one
		v, err = attest.Verify(good, p, now)
		wantRejected(t, v, err, "vmpl")
	})

	t.Run("certificates expired", func(t *testing.T) {
		v, err := attest.Verify(good, basePolicy(roots), now.AddDate(30, 0, 0))
		wantRejected(t, v, err, "certificate_chain")
	})

	t.Run("fake chain is never real SNP", func(t *testing.T) {
		// AMD's embedded roots: the fake VCEK does not chain to them.
		p := basePolicy(nil)
		p.Simulated = false
		v, err := attest.Verify(good, p, now)
		wantRejected(t, v, err, "certificate_chain")
		if v.Simulated || v.Mode != attest.ModeSNP {
			t.Errorf("mode %q", v.Mode)
		}
		// The fake roots without Simulated: refused outright.
		p.TrustedRoots = roots
		if _, err := attest.Verify(good, p, now); err == nil || !strings.Contains(err.Error(), "Simulated") {
			t.Errorf("fake roots without Simulated: %v", err)
		}
	})

	t.Run("no VCEK, VCEK cache", func(t *testing.T) {
		bare := *good
		bare.CertTable = nil
		v, err := attest.Verify(&bare, basePolicy(roots), now)
		wantRejected(t, v, err, "vcek")
		dir := t.TempDir()
		path, err := attest.CacheVCEK(dir, dev.Signer.Vcek.Raw)
		if err != nil {
			t.Fatal(err)
		}
		rep, _ := abi.ReportToProto(good.Report)
		if path != attest.VCEKCachePath(dir, rep.GetChipId(), rep.GetReportedTcb()) {
			t.Errorf("cached at %s", path)
		}
		p := basePolicy(roots)
		p.VCEKCacheDir = dir
		v, err = attest.Verify(&bare, p, now)
		if err != nil || v.VCEKSource != "cache" {
			t.Fatalf("with the VCEK cache: %v %+v", err, v)
		}
	})

	t.Run("policy errors", func(t *testing.T) {
		for name, mod := range map[string]func(*attest.Policy){
			"no measurement": func(p *attest.Policy) { p.ExpectedMeasurement = nil },
			"short nonce":    func(p *attest.Policy) { p.Nonce = []byte("short") },
			"host data size": func(p *attest.Policy) { p.HostData = []byte{1} },
			"bad policy":     func(p *attest.Policy) { p.GuestPolicy = 1 },
		} {
			p := basePolicy(roots)
			mod(&p)
			if v, err := attest.Verify(good, p, now); err == nil || errors.Is(err, attest.ErrRejected) || v != nil {
				t.Errorf("%s: %v %v", name, v, err)
			}
		}
		short := *good
		short.Report = good.Report[:100]
		v, err := attest.Verify(&short, basePolicy(roots), now)
		wantRejected(t, v, err, "format")
	})
}

// TestRealMilanReport: go-sev-guest's real Milan report and VCEK verify
// offline against AMD's embedded roots (not simulated); its REPORT_DATA
// is not ours, so only the nonce binding fails.
func TestRealMilanReport(t *testing.T) {
	vcek, err := x509.ParseCertificate(testdata.VcekBytes)
	if err != nil {
		t.Fatal(err)
	}
	report := testdata.AttestationBytes[:abi.ReportSize]
	rep, err := abi.ReportToProto(report)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := attest.CacheVCEK(dir, testdata.VcekBytes); err != nil {
		t.Fatal(err)
	}
	ev := &attest.Evidence{Format: attest.EvidenceFormat, Report: report, Nonce: nonce}
	p := attest.Policy{
		ExpectedMeasurement:       rep.GetMeasurement(),
		GuestPolicy:               0xb0000, // this report allows debug
		Nonce:                     nonce,
		VCEKCacheDir:              dir,
		Product:                   &spb.SevProduct{Name: spb.SevProduct_SEV_PRODUCT_MILAN},
		PermitProvisionalFirmware: true,
	}
	v, err := attest.Verify(ev, p, vcek.NotBefore.Add(24*time.Hour))
	wantRejected(t, v, err, "report_data")
	if v.Simulated || v.Mode != attest.ModeSNP || v.VCEKSource != "cache" || v.ProductLine != "Milan" {
		t.Errorf("verdict: %+v", v)
	}
	t.Logf("real Milan report: measurement %s, reported TCB %+v", v.Measurement, v.ReportedTCB)
}
