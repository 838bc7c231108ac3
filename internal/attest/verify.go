package attest

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/validate"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
)

// DefaultGuestPolicy is the most permissive guest policy accepted when
// Policy.GuestPolicy is 0: QEMU's default 0x30000 (SMT allowed, reserved
// bit 17), so no debugging, no migration agent, no CXL.
const DefaultGuestPolicy uint64 = 0x30000

// Modes of a Verdict.
const (
	ModeSNP       = "sev-snp"
	ModeSimulated = "simulated"
)

// Policy is what a report must show to be accepted.
type Policy struct {
	// ExpectedMeasurement is the launch digest (48 bytes) computed for the
	// CVM kit (internal/measure). Required unless AnyMeasurement.
	ExpectedMeasurement []byte
	// AnyMeasurement leaves MEASUREMENT unchecked: the caller checks it
	// itself from the Verdict (flare-kbs, which learns which resource the
	// guest wants, and so which measurements are allowed, only after the
	// attestation). ExpectedMeasurement must then be nil.
	AnyMeasurement bool
	// GuestPolicy is the most permissive SNP guest policy accepted (as
	// go-sev-guest's validate.Options.GuestPolicy: a report may not set
	// SMT, MIGRATE_MA, DEBUG or CXL_ALLOW unless this does; the ABI
	// version here is a minimum). 0 means DefaultGuestPolicy.
	GuestPolicy uint64
	// HostData is the expected HOST_DATA (32 bytes, QEMU's host-data);
	// nil: not checked.
	HostData []byte
	// MinimumTCB is the component-wise minimum of REPORTED_TCB, as a
	// TCB_VERSION (byte 0 boot loader, 1 TEE, 6 SNP, 7 microcode).
	MinimumTCB uint64
	// MinimumLaunchTCB is the same for LAUNCH_TCB.
	MinimumLaunchTCB uint64
	// MinimumGuestSVN is the minimum GUEST_SVN.
	MinimumGuestSVN uint32
	// VMPL is the VMPL the report must come from; nil means 0.
	VMPL *int
	// PermitProvisionalFirmware lets the committed TCB/firmware version be
	// lower than the current one.
	PermitProvisionalFirmware bool
	// Nonce is the nonce this verifier sent. Required unless ReportData
	// is set: it makes the report fresh.
	Nonce []byte
	// ReportData, when set, is the exact REPORT_DATA (64 bytes) the report
	// must carry, for protocols with a binding of their own (Trustee's KBS
	// protocol: SHA-384 of the canonical runtime data, zero-padded). Nonce
	// and GuestKey must then be nil, and the evidence's Nonce and GuestKey
	// are ignored.
	ReportData []byte
	// GuestKey is the guest key fingerprint that must be bound with the
	// nonce. nil: the evidence's GuestKey is bound instead (and reported
	// in the Verdict), i.e. the verifier learns which key the guest holds.
	GuestKey []byte
	// TrustedRoots are the ARK/ASK (ASVK) sets per product line. nil: the
	// AMD roots embedded in go-sev-guest (Milan, Genoa, Turin VCEK chains),
	// or, with Simulated, the fake chain the evidence carries provided its
	// ARK is go-sev-guest's published test key. Roots whose ARK is not one
	// of AMD's require Simulated.
	TrustedRoots map[string][]*trust.AMDRootCerts
	// VCEKCacheDir holds VCEK certificates for reports whose certificate
	// table has none (see VCEKCachePath, CacheVCEK). Nothing is ever
	// fetched from AMD's KDS.
	VCEKCacheDir string
	// Product forces the product for version 2 reports (no CPUID in the
	// report); nil: from the VCEK.
	Product *spb.SevProduct
	// Simulated accepts evidence from go-sev-guest's simulated device and
	// fake AMD chain (or any roots that are not AMD's). The Verdict is then
	// Simulated and its Mode "simulated".
	Simulated bool
}

// TCB is a TCB_VERSION and its parts.
type TCB struct {
	Raw        string `json:"raw"` // 16 hex digits
	BootLoader uint8  `json:"bootloader"`
	TEE        uint8  `json:"tee"`
	SNP        uint8  `json:"snp"`
	Microcode  uint8  `json:"microcode"`
}

// ParseTCBVersion reads a TCB_VERSION written as up to 16 hex digits,
// with or without 0x (byte 0, the lowest, is the boot loader SPL).
func ParseTCBVersion(s string) (uint64, error) {
	t := strings.TrimPrefix(strings.ToLower(s), "0x")
	v, err := strconv.ParseUint(t, 16, 64)
	if len(t) == 0 || len(t) > 16 || err != nil {
		return 0, fmt.Errorf("%q is not a TCB_VERSION: give up to 16 hex digits, e.g. 0x1500000000000004 (microcode 0x15, boot loader 4)", s)
	}
	return v, nil
}

func tcbOf(v uint64) TCB {
	p := kds.DecomposeTCBVersion(kds.TCBVersion(v))
	return TCB{Raw: fmt.Sprintf("%016x", v), BootLoader: p.BlSpl, TEE: p.TeeSpl, SNP: p.SnpSpl, Microcode: p.UcodeSpl}
}

// Verdict is the outcome of Verify and the report's fields. Byte fields
// are lower-case hex.
type Verdict struct {
	Verified bool `json:"verified"`
	// Simulated is true when the trusted roots are not AMD's (go-sev-guest's
	// fake chain): the report then proves nothing about SEV-SNP.
	Simulated bool   `json:"simulated"`
	Mode      string `json:"mode"` // ModeSNP or ModeSimulated
	// Reasons says, for a rejected report, each check that failed, as
	// "<check>: <detail>"; checks: format, nonce, report_data, guest_key,
	// measurement, host_data, signature, certificate_chain, vcek, policy,
	// tcb, firmware, guest_svn, vmpl, chip_id, simulated, validate.
	Reasons   []string  `json:"reasons,omitempty"`
	CheckedAt time.Time `json:"checked_at"`

	ReportVersion uint32 `json:"report_version"`
	Measurement   string `json:"measurement"`
	HostData      string `json:"host_data"`
	ReportData    string `json:"report_data"`
	Nonce         string `json:"nonce"`
	GuestKey      string `json:"guest_key"`
	Policy        uint64 `json:"policy"`
	PolicyABI     string `json:"policy_abi"` // major.minor
	PolicyDebug   bool   `json:"policy_debug"`
	PolicySMT     bool   `json:"policy_smt"`
	PolicyMigrate bool   `json:"policy_migrate_ma"`
	FamilyID      string `json:"family_id"`
	ImageID       string `json:"image_id"`
	GuestSVN      uint32 `json:"guest_svn"`
	VMPL          uint32 `json:"vmpl"`
	SignatureAlgo uint32 `json:"signature_algo"` // 1 = ECDSA P-384 with SHA-384
	SigningKey    string `json:"signing_key"`    // VCEK, VLEK
	ChipID        string `json:"chip_id"`
	ProductLine   string `json:"product_line,omitempty"`
	PlatformInfo  uint64 `json:"platform_info"`
	Firmware      string `json:"firmware"` // current major.minor.build
	CurrentTCB    TCB    `json:"current_tcb"`
	ReportedTCB   TCB    `json:"reported_tcb"`
	CommittedTCB  TCB    `json:"committed_tcb"`
	LaunchTCB     TCB    `json:"launch_tcb"`
	// VCEKSource is where the endorsement key certificate came from:
	// "cert_table" or "cache".
	VCEKSource string `json:"vcek_source,omitempty"`
}

// ErrRejected is wrapped by Verify's error when the evidence fails a check.
var ErrRejected = errors.New("attestation rejected")

// RejectedError lists why evidence was rejected.
type RejectedError struct{ Reasons []string }

func (e *RejectedError) Error() string {
	return "attest: " + ErrRejected.Error() + ": " + strings.Join(e.Reasons, "; ")
}

func (e *RejectedError) Unwrap() error { return ErrRejected }

// Verify checks evidence against p at time now (zero: time.Now()).
//
// It returns an error without a Verdict when p itself is unusable. When
// the evidence fails a check it returns the Verdict (Verified false, with
// Reasons) and a *RejectedError; when it passes, the Verdict (Verified
// true) and nil. Verification never contacts the network.
func Verify(ev *Evidence, p Policy, now time.Time) (*Verdict, error) {
	if ev == nil {
		return nil, errNoEvidence
	}
	if now.IsZero() {
		now = time.Now()
	}
	if p.AnyMeasurement {
		if p.ExpectedMeasurement != nil {
			return nil, errors.New("attest: policy: AnyMeasurement and ExpectedMeasurement are both set")
		}
	} else if len(p.ExpectedMeasurement) != abi.MeasurementSize {
		return nil, fmt.Errorf("attest: policy: ExpectedMeasurement is %d bytes, want %d", len(p.ExpectedMeasurement), abi.MeasurementSize)
	}
	if p.HostData != nil && len(p.HostData) != abi.HostDataSize {
		return nil, fmt.Errorf("attest: policy: HostData is %d bytes, want %d", len(p.HostData), abi.HostDataSize)
	}
	if p.ReportData != nil {
		if len(p.ReportData) != abi.ReportDataSize {
			return nil, fmt.Errorf("attest: policy: ReportData is %d bytes, want %d", len(p.ReportData), abi.ReportDataSize)
		}
		if p.Nonce != nil || p.GuestKey != nil {
			return nil, errors.New("attest: policy: ReportData is set together with Nonce or GuestKey (give one binding)")
		}
	} else if err := checkNonce(p.Nonce); err != nil {
		return nil, fmt.Errorf("attest: policy: %w", err)
	}
	gp := p.GuestPolicy
	if gp == 0 {
		gp = DefaultGuestPolicy
	}
	guestPolicy, err := abi.ParseSnpPolicy(gp)
	if err != nil {
		return nil, fmt.Errorf("attest: policy: GuestPolicy %#x: %w", gp, err)
	}
	vmpl := 0
	if p.VMPL != nil {
		vmpl = *p.VMPL
	}
	if vmpl < 0 || vmpl > 3 {
		return nil, fmt.Errorf("attest: policy: VMPL %d, want 0 to 3", vmpl)
	}
	rootsSimulated, err := rootsAreSimulated(p.TrustedRoots)
	if err != nil {
		return nil, err
	}
	if rootsSimulated && !p.Simulated {
		return nil, errors.New("attest: policy: TrustedRoots are not AMD's roots (a fake chain such as go-sev-guest's): set Simulated to accept simulated evidence")
	}

	v := &Verdict{Simulated: p.Simulated || rootsSimulated, Mode: ModeSNP, CheckedAt: now.UTC()}
	if v.Simulated {
		v.Mode = ModeSimulated
	}
	reject := func(check, format string, args ...any) {
		v.Reasons = append(v.Reasons, check+": "+fmt.Sprintf(format, args...))
	}
	has := func(check string) bool {
		for _, r := range v.Reasons {
			if strings.HasPrefix(r, check+":") {
				return true
			}
		}
		return false
	}
	done := func() (*Verdict, error) {
		v.Verified = len(v.Reasons) == 0
		if !v.Verified {
			return v, &RejectedError{Reasons: append([]string(nil), v.Reasons...)}
		}
		return v, nil
	}

	if ev.Simulated && !p.Simulated {
		reject("simulated", "the evidence says it comes from a simulated SNP device, and the policy requires real SEV-SNP")
	}

	// Format.
	if len(ev.Report) != abi.ReportSize {
		reject("format", "report is %d bytes, want %d", len(ev.Report), abi.ReportSize)
		return done()
	}
	report, err := abi.ReportToProto(ev.Report)
	if err != nil {
		reject("format", "%v", err)
		return done()
	}
	fillVerdict(v, report)

	// Freshness and key binding.
	var wantRD [64]byte
	if p.ReportData != nil {
		copy(wantRD[:], p.ReportData)
		if !bytes.Equal(report.GetReportData(), wantRD[:]) {
			reject("report_data", "REPORT_DATA %x, expected %x: the report was made for another nonce or key (stale or replayed)",
				report.GetReportData(), wantRD)
		}
	} else {
		v.Nonce = hex.EncodeToString(p.Nonce)
		if !bytes.Equal(ev.Nonce, p.Nonce) {
			reject("nonce", "the evidence answers nonce %x, this verifier sent %x (stale or replayed evidence)", ev.Nonce, p.Nonce)
		}
		key := p.GuestKey
		if key == nil {
			key = ev.GuestKey
		} else if ev.GuestKey != nil && !bytes.Equal(ev.GuestKey, p.GuestKey) {
			reject("guest_key", "the evidence names guest key %x, the policy expects %x", ev.GuestKey, p.GuestKey)
		}
		v.GuestKey = hex.EncodeToString(key)
		wantRD = ReportData(p.Nonce, key)
		if !bytes.Equal(report.GetReportData(), wantRD[:]) {
			reject("report_data", "REPORT_DATA %x is not SHA-512(nonce ‖ guest key) %x: the report was made for another nonce or guest key (stale or replayed)",
				report.GetReportData(), wantRD)
		}
	}

	// Launch identity.
	if !p.AnyMeasurement && !bytes.Equal(report.GetMeasurement(), p.ExpectedMeasurement) {
		reject("measurement", "MEASUREMENT %x, expected %x", report.GetMeasurement(), p.ExpectedMeasurement)
	}
	if p.HostData != nil && !bytes.Equal(report.GetHostData(), p.HostData) {
		reject("host_data", "HOST_DATA %x, expected %x", report.GetHostData(), p.HostData)
	}

	// Certificates: the report's table, then the VCEK cache.
	chain := &spb.CertificateChain{Extras: map[string][]byte{}}
	var table *abi.CertTable
	if len(ev.CertTable) > 0 {
		table, err = unmarshalCertTable(ev.CertTable)
		if err != nil {
			reject("format", "certificate table: %v", err)
			table = nil
		} else {
			chain = table.Proto()
		}
	}
	signer, err := abi.ParseSignerInfo(report.GetSignerInfo())
	if err != nil {
		reject("format", "SIGNER_INFO: %v", err)
		return done()
	}
	v.SigningKey = signer.SigningKey.String()
	switch signer.SigningKey {
	case abi.VcekReportSigner:
		if len(chain.GetVcekCert()) > 0 {
			v.VCEKSource = "cert_table"
		} else if p.VCEKCacheDir != "" {
			der, err := readCachedVCEK(p.VCEKCacheDir, report.GetChipId(), report.GetReportedTcb())
			if err != nil {
				reject("vcek", "no VCEK in the certificate table, and none cached: %v", err)
			} else {
				chain.VcekCert, v.VCEKSource = der, "cache"
			}
		} else {
			reject("vcek", "no VCEK in the certificate table and no VCEK cache configured (certificates are never fetched from AMD's KDS)")
		}
	case abi.VlekReportSigner:
		if len(chain.GetVlekCert()) > 0 {
			v.VCEKSource = "cert_table"
		} else {
			reject("vcek", "the report is VLEK-signed and the certificate table has no VLEK")
		}
	default:
		reject("signature", "the report's SIGNING_KEY is %v: it is not signed by a VCEK or VLEK", signer.SigningKey)
	}
	att := &spb.Attestation{Report: report, CertificateChain: chain}

	roots := p.TrustedRoots
	if len(roots) == 0 && p.Simulated {
		roots, err = simulatedRootsFromTable(table)
		if err != nil {
			reject("certificate_chain", "simulated mode: %v", err)
		}
	}

	if v.VCEKSource != "" && !has("certificate_chain") {
		// Signature and chain, offline: the ARK/ASK in the table are never
		// trusted (go-sev-guest v0.15 uses TrustedRoots or its embedded
		// AMD roots); nothing is fetched.
		vopts := &verify.Options{
			DisableCertFetching: true,
			Getter:              refuseGetter{},
			Now:                 now,
			TrustedRoots:        roots,
			Product:             p.Product,
		}
		if err := verify.SnpAttestation(att, vopts); err != nil {
			msg := err.Error()
			switch {
			case strings.Contains(msg, "report signature") || strings.Contains(msg, "SignatureAlgo") || strings.Contains(msg, "report format"):
				reject("signature", "%s", msg)
			default:
				reject("certificate_chain", "%s", msg)
			}
		}
		if ek := endorsementCert(chain, signer.SigningKey); ek != nil {
			if exts, err := kds.CertificateExtensions(ek, signer.SigningKey); err == nil && report.GetCpuid1EaxFms() == 0 {
				if prod, err := kds.ParseProductName(exts.ProductName, signer.SigningKey); err == nil {
					v.ProductLine = kds.ProductLine(prod)
				}
			}
		}

		// Report fields, with go-sev-guest's validate (again the three
		// checked above, so a gap in either is covered by the other).
		min := kds.DecomposeTCBVersion(kds.TCBVersion(p.MinimumTCB))
		minLaunch := kds.DecomposeTCBVersion(kds.TCBVersion(p.MinimumLaunchTCB))
		vo := &validate.Options{
			GuestPolicy:               guestPolicy,
			MinimumGuestSvn:           p.MinimumGuestSVN,
			ReportData:                wantRD[:],
			HostData:                  p.HostData,
			Measurement:               p.ExpectedMeasurement,
			MinimumTCB:                min,
			MinimumLaunchTCB:          minLaunch,
			PermitProvisionalFirmware: p.PermitProvisionalFirmware,
			VMPL:                      &vmpl,
		}
		if err := validate.SnpAttestation(att, vo); err != nil {
			for _, e := range splitErrors(err) {
				check := classify(e.Error())
				if !has(check) {
					reject(check, "%s", e.Error())
				}
			}
		}
	}
	return done()
}

// unmarshalCertTable is abi.CertTable.Unmarshal for a table the guest
// sends: go-sev-guest v0.15 checks an entry's offset+length in uint32, so
// an entry whose sum wraps passes its check and then panics (slice out of
// range) or allocates up to 4 GiB. Every entry's range is checked here,
// without overflow, first. (Found by FuzzVerifyEvidence; the input is in
// testdata/fuzz/FuzzVerifyEvidence.)
func unmarshalCertTable(b []byte) (*abi.CertTable, error) {
	entries, err := abi.ParseSnpCertTableHeader(b)
	if err != nil {
		return nil, err
	}
	for i, e := range entries {
		if uint64(e.Offset)+uint64(e.Length) > uint64(len(b)) {
			return nil, fmt.Errorf("cert table entry %d specifies a byte range outside the certificate data block (size %d): offset=%d, length=%d",
				i, len(b), e.Offset, e.Length)
		}
	}
	t := new(abi.CertTable)
	if err := t.Unmarshal(b); err != nil {
		return nil, err
	}
	return t, nil
}

func fillVerdict(v *Verdict, r *spb.Report) {
	v.ReportVersion = r.GetVersion()
	v.Measurement = hex.EncodeToString(r.GetMeasurement())
	v.HostData = hex.EncodeToString(r.GetHostData())
	v.ReportData = hex.EncodeToString(r.GetReportData())
	v.Policy = r.GetPolicy()
	if pol, err := abi.ParseSnpPolicy(r.GetPolicy()); err == nil {
		v.PolicyABI = fmt.Sprintf("%d.%d", pol.ABIMajor, pol.ABIMinor)
		v.PolicyDebug, v.PolicySMT, v.PolicyMigrate = pol.Debug, pol.SMT, pol.MigrateMA
	}
	v.FamilyID = hex.EncodeToString(r.GetFamilyId())
	v.ImageID = hex.EncodeToString(r.GetImageId())
	v.GuestSVN = r.GetGuestSvn()
	v.VMPL = r.GetVmpl()
	v.SignatureAlgo = r.GetSignatureAlgo()
	v.ChipID = hex.EncodeToString(r.GetChipId())
	v.PlatformInfo = r.GetPlatformInfo()
	v.Firmware = fmt.Sprintf("%d.%d.%d", r.GetCurrentMajor(), r.GetCurrentMinor(), r.GetCurrentBuild())
	v.CurrentTCB = tcbOf(r.GetCurrentTcb())
	v.ReportedTCB = tcbOf(r.GetReportedTcb())
	v.CommittedTCB = tcbOf(r.GetCommittedTcb())
	v.LaunchTCB = tcbOf(r.GetLaunchTcb())
	if fms := r.GetCpuid1EaxFms(); fms != 0 {
		v.ProductLine = kds.ProductLineFromFms(fms)
	}
}

func endorsementCert(chain *spb.CertificateChain, key abi.ReportSigner) *x509.Certificate {
	der := chain.GetVcekCert()
	if key == abi.VlekReportSigner {
		der = chain.GetVlekCert()
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil
	}
	return c
}

// splitErrors undoes multierr.Combine (which validate uses).
func splitErrors(err error) []error {
	if m, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range m.Unwrap() {
			out = append(out, splitErrors(e)...)
		}
		return out
	}
	return []error{err}
}

// classify names the check a go-sev-guest validate error is about.
func classify(msg string) string {
	switch {
	case strings.Contains(msg, "REPORT_DATA"):
		return "report_data"
	case strings.Contains(msg, "MEASUREMENT"):
		return "measurement"
	case strings.Contains(msg, "HOST_DATA"):
		return "host_data"
	case strings.Contains(msg, "CHIP_ID"):
		return "chip_id"
	case strings.Contains(msg, "VMPL"):
		return "vmpl"
	case strings.Contains(msg, "GUEST_SVN"):
		return "guest_svn"
	case strings.Contains(msg, "TCB") || strings.Contains(msg, "tcb"):
		return "tcb"
	case strings.Contains(msg, "policy") || strings.Contains(msg, "capability") ||
		strings.Contains(msg, "single socket") || strings.Contains(msg, "memory encryption") ||
		strings.Contains(msg, "hiding") || strings.Contains(msg, "page swap"):
		return "policy"
	case strings.Contains(msg, "build") || strings.Contains(msg, "API version"):
		return "firmware"
	case strings.Contains(msg, "certificate"):
		return "vcek"
	}
	return "validate"
}

// refuseGetter stands in for go-sev-guest's HTTPS getter: verification is
// offline, and any attempt to reach AMD's KDS is an error.
type refuseGetter struct{}

func (refuseGetter) Get(url string) ([]byte, error) {
	return nil, fmt.Errorf("attest: refusing to fetch %s: verification is offline (put the VCEK in the evidence or the VCEK cache)", url)
}
