// Package simulated is a SIMULATED SEV-SNP guest device for machines
// without SEV-SNP: go-sev-guest's test device and its fake AMD certificate
// chain (ARK → ASK → VCEK made from private keys published in the
// go-sev-guest repository) sign reports whose fields come from Options.
//
// Anyone can produce such reports: they prove nothing about the guest.
// They exist so that the whole attestation path (guest responder, evidence,
// the agent's verifier, Terraform) can run and be tested on ordinary
// machines. attest.Verify accepts them only with Policy.Simulated and marks
// the Verdict "simulated".
//
// Importing this package links go-sev-guest/testing, which registers the
// std flag names product, product_name, test_use_kds and test_kds on
// flag.CommandLine; binaries importing it must not define those.
package simulated

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"
	labi "github.com/google/go-sev-guest/client/linuxabi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sgtest "github.com/google/go-sev-guest/testing"
	"github.com/google/go-sev-guest/verify/trust"
)

// Name is how this mode is named everywhere (evidence source, verdict mode).
const Name = "simulated"

// DefaultChipID is the CHIP_ID of simulated reports unless Options.ChipID
// says otherwise: "SIMULATED-SEV-SNP-CHIP" then zeros, so it cannot be
// mistaken for a real chip.
var DefaultChipID = func() []byte {
	id := make([]byte, abi.ChipIDSize)
	copy(id, "SIMULATED-SEV-SNP-CHIP")
	return id
}()

// Options are the report fields the simulated firmware reports.
type Options struct {
	Measurement []byte // 48 bytes; zeros if nil
	HostData    []byte // 32 bytes; zeros if nil
	FamilyID    []byte // 16 bytes
	ImageID     []byte // 16 bytes
	// Policy is the guest policy; 0 means 0x30000 (QEMU's default).
	Policy   uint64
	GuestSVN uint32
	// TCB is CURRENT, REPORTED, COMMITTED and LAUNCH TCB and the fake
	// VCEK's TCB.
	TCB uint64
	// ChipID is the 64-byte CHIP_ID and the fake VCEK's HWID; nil means
	// DefaultChipID.
	ChipID []byte
	// ProductName is the fake VCEK's product, e.g. "Milan-B1" (default),
	// "Genoa-B1".
	ProductName string
	// Firmware version (current = committed); zeros mean 1.55 build 0.
	FirmwareMajor, FirmwareMinor, FirmwareBuild uint8
	// NotBefore is when the fake certificates become valid; zero means an
	// hour ago. The VCEK is valid for 7 years from it.
	NotBefore time.Time
	// OmitCerts leaves the certificate table out of extended reports (as
	// upstream host kernels do), so a verifier needs its VCEK cache.
	OmitCerts bool
}

// Device is a client.Device (and, through QuoteProvider, a
// client.QuoteProvider) that signs a report for any REPORT_DATA.
type Device struct {
	opts    Options
	product *spb.SevProduct
	fms     [3]byte
	signer  *sgtest.AmdSigner
	inner   *sgtest.Device
}

// go-sev-guest's fake signer uses a shared math/rand source: serialise.
var mu sync.Mutex

// New makes a simulated device with its own fake AMD chain.
func New(o Options) (*Device, error) {
	if err := size("Measurement", o.Measurement, abi.MeasurementSize); err != nil {
		return nil, err
	}
	if err := size("HostData", o.HostData, abi.HostDataSize); err != nil {
		return nil, err
	}
	if err := size("FamilyID", o.FamilyID, abi.FamilyIDSize); err != nil {
		return nil, err
	}
	if err := size("ImageID", o.ImageID, abi.ImageIDSize); err != nil {
		return nil, err
	}
	if err := size("ChipID", o.ChipID, abi.ChipIDSize); err != nil {
		return nil, err
	}
	if o.ChipID == nil {
		o.ChipID = DefaultChipID
	}
	if o.Policy == 0 {
		o.Policy = 0x30000
	}
	if _, err := abi.ParseSnpPolicy(o.Policy); err != nil {
		return nil, fmt.Errorf("simulated: policy %#x: %w", o.Policy, err)
	}
	if o.FirmwareMajor == 0 && o.FirmwareMinor == 0 {
		o.FirmwareMajor, o.FirmwareMinor = 1, 55
	}
	if o.ProductName == "" {
		o.ProductName = kds.ProductName(abi.DefaultSevProduct())
	}
	product, err := kds.ParseProductName(o.ProductName, abi.VcekReportSigner)
	if err != nil {
		return nil, fmt.Errorf("simulated: product %q: %w", o.ProductName, err)
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	tcb := kds.DecomposeTCBVersion(kds.TCBVersion(o.TCB))
	if _, err := kds.ComposeTCBParts(tcb); err != nil {
		return nil, fmt.Errorf("simulated: TCB %#x: %w", o.TCB, err)
	}

	mu.Lock()
	defer mu.Unlock()
	b := &sgtest.AmdSignerBuilder{
		Keys:             sgtest.DefaultAmdKeys(),
		ProductName:      o.ProductName,
		CSPID:            "flare-simulated",
		ArkCreationTime:  o.NotBefore,
		AskCreationTime:  o.NotBefore,
		AsvkCreationTime: o.NotBefore,
		VcekCreationTime: o.NotBefore,
		VlekCreationTime: o.NotBefore,
		TCB:              kds.TCBVersion(o.TCB),
		// The builder ignores HWID and TCB for the VCEK's extensions
		// (v0.15): set them through the override.
		VcekCustom: sgtest.CertOverride{Extensions: sgtest.CustomExtensions(tcb, o.ChipID, "", o.ProductName)},
	}
	copy(b.HWID[:], o.ChipID)
	signer, err := b.TestOnlyCertChain()
	if err != nil {
		return nil, fmt.Errorf("simulated: fake AMD chain: %w", err)
	}
	// With OmitCerts the table is just its all-zero terminator entry: the
	// test device needs a non-empty buffer to answer the length query.
	certs := make([]byte, abi.CertTableEntrySize)
	if !o.OmitCerts {
		if certs, err = signer.CertTableBytes(); err != nil {
			return nil, fmt.Errorf("simulated: certificate table: %w", err)
		}
	}
	d := &Device{opts: o, product: product, signer: signer}
	d.fms[0], d.fms[1], d.fms[2] = abi.FmsFromCpuid1Eax(abi.MaskedCpuid1EaxFromSevProduct(product))
	d.inner = &sgtest.Device{ReportDataRsp: map[string]any{}, Certs: certs, Signer: signer, SevProduct: product}
	return d, nil
}

func size(name string, b []byte, n int) error {
	if b != nil && len(b) != n {
		return fmt.Errorf("simulated: %s is %d bytes, want %d", name, len(b), n)
	}
	return nil
}

// Simulated marks the device as simulated: attest.GetEvidence then labels
// the evidence Source "simulated".
func (d *Device) Simulated() bool { return true }

// Open is a no-op (the device is always open).
func (d *Device) Open(string) error { return nil }

// Close is a no-op.
func (d *Device) Close() error { return nil }

// Product is the simulated CPU.
func (d *Device) Product() *spb.SevProduct { return d.product }

// Ioctl answers SNP_GET_REPORT and SNP_GET_EXT_REPORT like the kernel
// driver, with a report made from Options for the request's REPORT_DATA
// and VMPL, signed by the fake VCEK.
func (d *Device) Ioctl(command uintptr, arg any) (uintptr, error) {
	req, ok := arg.(*labi.SnpUserGuestRequest)
	if !ok {
		return 0, fmt.Errorf("simulated: unexpected request %T", arg)
	}
	mu.Lock()
	defer mu.Unlock()
	switch r := req.ReqData.(type) {
	case *labi.SnpReportReqABI:
		d.program(r.ReportData, r.Vmpl)
	case *labi.SnpExtendedReportReq:
		d.program(r.Data.ReportData, r.Data.Vmpl)
	}
	return d.inner.Ioctl(command, arg)
}

func (d *Device) program(rd [64]byte, vmpl uint32) {
	raw := d.RawReport(rd, vmpl)
	d.inner.ReportDataRsp = map[string]any{
		fmt.Sprintf("%x", rd[:]): &sgtest.GetReportResponse{Resp: labi.SnpReportRespABI{Data: raw}},
	}
}

// RawReport is the unsigned report the simulated firmware makes for
// reportData at vmpl (signature zero).
func (d *Device) RawReport(reportData [64]byte, vmpl uint32) [labi.SnpReportRespReportSize]byte {
	o := d.opts
	var r [labi.SnpReportRespReportSize]byte
	le := binary.LittleEndian
	le.PutUint32(r[0x00:], abi.ReportVersion3)
	le.PutUint32(r[0x04:], o.GuestSVN)
	le.PutUint64(r[0x08:], o.Policy)
	copy(r[0x10:0x20], o.FamilyID)
	copy(r[0x20:0x30], o.ImageID)
	le.PutUint32(r[0x30:], vmpl)
	le.PutUint32(r[0x34:], abi.SignEcdsaP384Sha384)
	le.PutUint64(r[0x38:], o.TCB)
	le.PutUint32(r[0x48:], abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.VcekReportSigner}))
	copy(r[0x50:0x90], reportData[:])
	copy(r[0x90:0xC0], o.Measurement)
	copy(r[0xC0:0xE0], o.HostData)
	le.PutUint64(r[0x180:], o.TCB)
	r[0x188], r[0x189], r[0x18A] = d.fms[0], d.fms[1], d.fms[2]
	copy(r[0x1A0:0x1E0], o.ChipID)
	le.PutUint64(r[0x1E0:], o.TCB)
	r[0x1E8], r[0x1E9], r[0x1EA] = o.FirmwareBuild, o.FirmwareMinor, o.FirmwareMajor
	r[0x1EC], r[0x1ED], r[0x1EE] = o.FirmwareBuild, o.FirmwareMinor, o.FirmwareMajor
	le.PutUint64(r[0x1F0:], o.TCB)
	return r
}

// QuoteProvider is the device as a client.QuoteProvider (configfs-tsm
// style: report then certificate table, with go-sev-guest's extra
// platform-info entry).
func (d *Device) QuoteProvider() client.QuoteProvider { return quoteProvider{d} }

type quoteProvider struct{ d *Device }

func (q quoteProvider) Simulated() bool          { return true }
func (q quoteProvider) IsSupported() bool        { return true }
func (q quoteProvider) Product() *spb.SevProduct { return q.d.product }
func (q quoteProvider) GetRawQuote(rd [64]byte) ([]uint8, error) {
	mu.Lock()
	defer mu.Unlock()
	q.d.program(rd, 0)
	return (&sgtest.QuoteProvider{Device: q.d.inner}).GetRawQuote(rd)
}

// Roots are the TrustedRoots for this device's fake chain (the ARK, ASK and
// ASVK it signs with), for every product line. Use them with
// Policy.Simulated.
func (d *Device) Roots() map[string][]*trust.AMDRootCerts {
	roots := map[string][]*trust.AMDRootCerts{}
	for _, line := range []string{"Milan", "Genoa", "Turin"} {
		roots[line] = []*trust.AMDRootCerts{{
			Product:      line,
			ProductLine:  line,
			ProductCerts: &trust.ProductCerts{Ark: d.signer.Ark, Ask: d.signer.Ask, Asvk: d.signer.Asvk},
		}}
	}
	return roots
}

// VCEK is the fake VCEK certificate (DER), e.g. for a verifier's VCEK
// cache when OmitCerts is set.
func (d *Device) VCEK() []byte { return append([]byte(nil), d.signer.Vcek.Raw...) }
