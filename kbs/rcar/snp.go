package rcar

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// SNP report layout (AMD SEV-SNP ABI, ATTESTATION_REPORT).
const (
	ReportSize        = 0x4A0
	reportSignedBytes = 0x2A0
	certEntrySize     = 24
	// MaxCertTable bounds a certificate table read from a quote.
	MaxCertTable = 64 << 10
)

// SNPEvidence is the primary_evidence of tee "snp" as guest-components'
// attester sends it and Trustee's SNP verifier reads it:
// {"attestation_report": <virtee/sev AttestationReport serde>,
// "cert_chain": null | [{"cert_type": "VCEK", "data": [bytes]}]}.
type SNPEvidence struct {
	AttestationReport SNPReport        `json:"attestation_report"`
	CertChain         []CertTableEntry `json:"cert_chain"`
}

// SNPReport is virtee/sev's AttestationReport as serde writes it (the
// revision Trustee pins, d487809): byte arrays as arrays of numbers,
// policy/plat_info/key_info as numbers, TCBs as objects, fields in order.
type SNPReport struct {
	Version          uint32     `json:"version"`
	GuestSVN         uint32     `json:"guest_svn"`
	Policy           uint64     `json:"policy"`
	FamilyID         [16]byte   `json:"family_id"`
	ImageID          [16]byte   `json:"image_id"`
	VMPL             uint32     `json:"vmpl"`
	SigAlgo          uint32     `json:"sig_algo"`
	CurrentTCB       TCBVersion `json:"current_tcb"`
	PlatInfo         uint64     `json:"plat_info"`
	KeyInfo          uint32     `json:"key_info"`
	ReportData       [64]byte   `json:"report_data"`
	Measurement      [48]byte   `json:"measurement"`
	HostData         [32]byte   `json:"host_data"`
	IDKeyDigest      [48]byte   `json:"id_key_digest"`
	AuthorKeyDigest  [48]byte   `json:"author_key_digest"`
	ReportID         [32]byte   `json:"report_id"`
	ReportIDMA       [32]byte   `json:"report_id_ma"`
	ReportedTCB      TCBVersion `json:"reported_tcb"`
	CPUIDFamID       *uint8     `json:"cpuid_fam_id"`
	CPUIDModID       *uint8     `json:"cpuid_mod_id"`
	CPUIDStep        *uint8     `json:"cpuid_step"`
	ChipID           [64]byte   `json:"chip_id"`
	CommittedTCB     TCBVersion `json:"committed_tcb"`
	Current          FWVersion  `json:"current"`
	Committed        FWVersion  `json:"committed"`
	LaunchTCB        TCBVersion `json:"launch_tcb"`
	LaunchMitVector  *uint64    `json:"launch_mit_vector"`
	CurrentMitVector *uint64    `json:"current_mit_vector"`
	Signature        Signature  `json:"signature"`
}

// TCBVersion is virtee/sev's TcbVersion (fmc only on Turin).
type TCBVersion struct {
	FMC        *uint8 `json:"fmc"`
	Bootloader uint8  `json:"bootloader"`
	TEE        uint8  `json:"tee"`
	SNP        uint8  `json:"snp"`
	Microcode  uint8  `json:"microcode"`
}

// FWVersion is a firmware major.minor.build.
type FWVersion struct {
	Major uint8 `json:"major"`
	Minor uint8 `json:"minor"`
	Build uint8 `json:"build"`
}

// Signature is the report's ECDSA P-384 signature (little-endian R and S,
// 72 bytes each).
type Signature struct {
	R [72]byte `json:"r"`
	S [72]byte `json:"s"`
}

// CertTableEntry is one certificate of the extended report.
type CertTableEntry struct {
	CertType CertType  `json:"cert_type"`
	Data     ByteArray `json:"data"`
}

// ByteArray is []byte written as a JSON array of numbers (serde's Vec<u8>).
type ByteArray []byte

// MarshalJSON writes [n,n,…].
func (b ByteArray) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(b)*4 + 2)
	buf.WriteByte('[')
	for i, c := range b {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, "%d", c)
	}
	buf.WriteByte(']')
	return buf.Bytes(), nil
}

// UnmarshalJSON reads [n,n,…] (each 0..255).
func (b *ByteArray) UnmarshalJSON(data []byte) error {
	// []uint16, not []uint8: encoding/json would take a base64 string
	// for a slice of uint8.
	var ns []uint16
	if err := json.Unmarshal(data, &ns); err != nil {
		return fmt.Errorf("want an array of byte values: %w", err)
	}
	out := make([]byte, len(ns))
	for i, n := range ns {
		if n > 255 {
			return fmt.Errorf("byte value %d at %d", n, i)
		}
		out[i] = byte(n)
	}
	*b = out
	return nil
}

// CertType is virtee/sev's CertType: "ARK", "ASK", "VCEK", "VLEK", "CRL",
// "Empty", or {"OTHER": "<uuid>"}.
type CertType struct{ GUID [16]byte }

// Known certificate GUIDs (GHCB certificate table).
var certNames = map[string]string{
	"00000000-0000-0000-0000-000000000000": "Empty",
	"c0b406a4-a803-4952-9743-3fb6014cd0ae": "ARK",
	"4ab7b379-bbac-4fe4-a02f-05aef327c782": "ASK",
	"63da758d-e664-4564-adc5-f4b93be8accd": "VCEK",
	"a8074bc2-a25a-483e-aae6-39c045a0b8a1": "VLEK",
	"92f81bc3-5811-4d3d-97ff-d19f88dc67ea": "CRL",
}

func (c CertType) uuid() string {
	h := hex.EncodeToString(c.GUID[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func parseUUID(s string) ([16]byte, error) {
	var g [16]byte
	h := strings.ReplaceAll(strings.ToLower(s), "-", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 16 || len(s) != 36 {
		return g, fmt.Errorf("%q is not a UUID", s)
	}
	copy(g[:], b)
	return g, nil
}

// Name is the serde name ("VCEK", …) or "" for OTHER.
func (c CertType) Name() string { return certNames[c.uuid()] }

// MarshalJSON writes the serde form.
func (c CertType) MarshalJSON() ([]byte, error) {
	if n := c.Name(); n != "" {
		return json.Marshal(n)
	}
	return json.Marshal(map[string]string{"OTHER": c.uuid()})
}

// UnmarshalJSON reads the serde form.
func (c *CertType) UnmarshalJSON(data []byte) error {
	var name string
	if err := json.Unmarshal(data, &name); err == nil {
		for u, n := range certNames {
			if n == name {
				g, _ := parseUUID(u)
				c.GUID = g
				return nil
			}
		}
		return fmt.Errorf("cert_type %q is not one of ARK, ASK, VCEK, VLEK, CRL, Empty", name)
	}
	var other struct {
		OTHER string `json:"OTHER"`
	}
	if err := json.Unmarshal(data, &other); err != nil || other.OTHER == "" {
		return fmt.Errorf("cert_type: want a name or {\"OTHER\":\"<uuid>\"}")
	}
	g, err := parseUUID(other.OTHER)
	if err != nil {
		return fmt.Errorf("cert_type: %w", err)
	}
	c.GUID = g
	return nil
}

// Processor generations, as virtee/sev identifies them.
type generation int

const (
	genUnknown generation = iota
	genMilan
	genGenoa
	genTurin
)

func identifyCPU(family, model uint8) generation {
	switch family {
	case 0x19:
		switch {
		case model <= 0x0F:
			return genMilan
		case model >= 0x10 && model <= 0x1F, model >= 0xA0 && model <= 0xAF:
			return genGenoa
		}
	case 0x1A:
		if model <= 0x11 {
			return genTurin
		}
	}
	return genUnknown
}

func reportGeneration(version uint32, fam, mod uint8, chipID []byte) (generation, error) {
	if version < 2 {
		return genUnknown, fmt.Errorf("report version %d: want 2 or later", version)
	}
	if version == 2 {
		if allZero(chipID) {
			return genUnknown, errors.New("version 2 report with a masked CHIP_ID: its processor generation cannot be told")
		}
		if allZero(chipID[8:]) {
			return genTurin, nil
		}
		return genGenoa, nil
	}
	g := identifyCPU(fam, mod)
	if g == genUnknown {
		return g, fmt.Errorf("CPUID family %#x model %#x is not a known SEV-SNP processor (Milan, Genoa, Turin)", fam, mod)
	}
	return g, nil
}

func tcbFrom(b []byte, g generation) (TCBVersion, bool) {
	if g == genTurin {
		f := b[0]
		return TCBVersion{FMC: &f, Bootloader: b[1], TEE: b[2], SNP: b[3], Microcode: b[7]}, allZero(b[4:7])
	}
	return TCBVersion{Bootloader: b[0], TEE: b[1], SNP: b[6], Microcode: b[7]}, allZero(b[2:6])
}

func tcbTo(t TCBVersion, g generation, b []byte) {
	if g == genTurin {
		if t.FMC != nil {
			b[0] = *t.FMC
		}
		b[1], b[2], b[3], b[7] = t.Bootloader, t.TEE, t.SNP, t.Microcode
		return
	}
	b[0], b[1], b[6], b[7] = t.Bootloader, t.TEE, t.SNP, t.Microcode
}

// ParseSNPReport converts a raw 1184-byte report into the serde shape. The
// shape has no room for reserved bytes, so a report with a non-zero
// reserved byte (which no firmware writes) is refused: it could not be
// rebuilt, and its signature would then fail at the verifier.
func ParseSNPReport(raw []byte) (*SNPReport, error) {
	if len(raw) != ReportSize {
		return nil, fmt.Errorf("snp report is %d bytes, want %d", len(raw), ReportSize)
	}
	le := binary.LittleEndian
	r := &SNPReport{Version: le.Uint32(raw[0x00:])}
	g, err := reportGeneration(r.Version, raw[0x188], raw[0x189], raw[0x1A0:0x1E0])
	if err != nil {
		return nil, err
	}
	type res struct{ from, to int }
	reserved := []res{{0x4C, 0x50}, {0x1EB, 0x1EC}, {0x1EF, 0x1F0}, {0x2A0 + 144, ReportSize}}
	r.GuestSVN = le.Uint32(raw[0x04:])
	r.Policy = le.Uint64(raw[0x08:])
	copy(r.FamilyID[:], raw[0x10:])
	copy(r.ImageID[:], raw[0x20:])
	r.VMPL = le.Uint32(raw[0x30:])
	r.SigAlgo = le.Uint32(raw[0x34:])
	tcbOK := true
	var ok bool
	r.CurrentTCB, ok = tcbFrom(raw[0x38:0x40], g)
	tcbOK = tcbOK && ok
	r.PlatInfo = le.Uint64(raw[0x40:])
	r.KeyInfo = le.Uint32(raw[0x48:])
	copy(r.ReportData[:], raw[0x50:])
	copy(r.Measurement[:], raw[0x90:])
	copy(r.HostData[:], raw[0xC0:])
	copy(r.IDKeyDigest[:], raw[0xE0:])
	copy(r.AuthorKeyDigest[:], raw[0x110:])
	copy(r.ReportID[:], raw[0x140:])
	copy(r.ReportIDMA[:], raw[0x160:])
	r.ReportedTCB, ok = tcbFrom(raw[0x180:0x188], g)
	tcbOK = tcbOK && ok
	if r.Version == 2 {
		reserved = append(reserved, res{0x188, 0x1A0})
	} else {
		f, m, s := raw[0x188], raw[0x189], raw[0x18A]
		r.CPUIDFamID, r.CPUIDModID, r.CPUIDStep = &f, &m, &s
		reserved = append(reserved, res{0x18B, 0x1A0})
	}
	copy(r.ChipID[:], raw[0x1A0:])
	r.CommittedTCB, ok = tcbFrom(raw[0x1E0:0x1E8], g)
	tcbOK = tcbOK && ok
	r.Current = FWVersion{Build: raw[0x1E8], Minor: raw[0x1E9], Major: raw[0x1EA]}
	r.Committed = FWVersion{Build: raw[0x1EC], Minor: raw[0x1ED], Major: raw[0x1EE]}
	r.LaunchTCB, ok = tcbFrom(raw[0x1F0:0x1F8], g)
	tcbOK = tcbOK && ok
	if r.Version >= 5 {
		l, c := le.Uint64(raw[0x1F8:]), le.Uint64(raw[0x200:])
		r.LaunchMitVector, r.CurrentMitVector = &l, &c
		reserved = append(reserved, res{0x208, 0x2A0})
	} else {
		reserved = append(reserved, res{0x1F8, 0x2A0})
	}
	copy(r.Signature.R[:], raw[0x2A0:])
	copy(r.Signature.S[:], raw[0x2A0+72:])
	if !tcbOK {
		return nil, errors.New("snp report: a TCB_VERSION has non-zero reserved bytes")
	}
	for _, x := range reserved {
		if !allZero(raw[x.from:x.to]) {
			return nil, fmt.Errorf("snp report: reserved bytes %#x..%#x are not zero (the serde form cannot carry them)", x.from, x.to)
		}
	}
	return r, nil
}

// Raw rebuilds the 1184-byte report.
func (r *SNPReport) Raw() ([]byte, error) {
	var fam, mod uint8
	if r.CPUIDFamID != nil {
		fam = *r.CPUIDFamID
	}
	if r.CPUIDModID != nil {
		mod = *r.CPUIDModID
	}
	g, err := reportGeneration(r.Version, fam, mod, r.ChipID[:])
	if err != nil {
		return nil, err
	}
	raw := make([]byte, ReportSize)
	le := binary.LittleEndian
	le.PutUint32(raw[0x00:], r.Version)
	le.PutUint32(raw[0x04:], r.GuestSVN)
	le.PutUint64(raw[0x08:], r.Policy)
	copy(raw[0x10:], r.FamilyID[:])
	copy(raw[0x20:], r.ImageID[:])
	le.PutUint32(raw[0x30:], r.VMPL)
	le.PutUint32(raw[0x34:], r.SigAlgo)
	tcbTo(r.CurrentTCB, g, raw[0x38:0x40])
	le.PutUint64(raw[0x40:], r.PlatInfo)
	le.PutUint32(raw[0x48:], r.KeyInfo)
	copy(raw[0x50:], r.ReportData[:])
	copy(raw[0x90:], r.Measurement[:])
	copy(raw[0xC0:], r.HostData[:])
	copy(raw[0xE0:], r.IDKeyDigest[:])
	copy(raw[0x110:], r.AuthorKeyDigest[:])
	copy(raw[0x140:], r.ReportID[:])
	copy(raw[0x160:], r.ReportIDMA[:])
	tcbTo(r.ReportedTCB, g, raw[0x180:0x188])
	if r.Version > 2 {
		raw[0x188], raw[0x189] = fam, mod
		if r.CPUIDStep != nil {
			raw[0x18A] = *r.CPUIDStep
		}
	}
	copy(raw[0x1A0:], r.ChipID[:])
	tcbTo(r.CommittedTCB, g, raw[0x1E0:0x1E8])
	raw[0x1E8], raw[0x1E9], raw[0x1EA] = r.Current.Build, r.Current.Minor, r.Current.Major
	raw[0x1EC], raw[0x1ED], raw[0x1EE] = r.Committed.Build, r.Committed.Minor, r.Committed.Major
	tcbTo(r.LaunchTCB, g, raw[0x1F0:0x1F8])
	if r.Version >= 5 {
		if r.LaunchMitVector != nil {
			le.PutUint64(raw[0x1F8:], *r.LaunchMitVector)
		}
		if r.CurrentMitVector != nil {
			le.PutUint64(raw[0x200:], *r.CurrentMitVector)
		}
	}
	copy(raw[0x2A0:], r.Signature.R[:])
	copy(raw[0x2A0+72:], r.Signature.S[:])
	return raw, nil
}

// ParseCertTable reads a GHCB certificate table (the extended report's
// auxiliary blob): 24-byte entries (GUID, offset, length) up to an
// all-zero entry, offsets from the table's start. An empty or all-zero
// table gives no entries.
func ParseCertTable(b []byte) ([]CertTableEntry, error) {
	if len(b) > MaxCertTable {
		return nil, fmt.Errorf("certificate table is %d bytes, more than %d", len(b), MaxCertTable)
	}
	var out []CertTableEntry
	for i := 0; ; i++ {
		off := i * certEntrySize
		if off+certEntrySize > len(b) {
			if len(b) == 0 || allZero(b) {
				return nil, nil
			}
			return nil, errors.New("certificate table has no terminating entry")
		}
		e := b[off : off+certEntrySize]
		if allZero(e) {
			return out, nil
		}
		var c CertTableEntry
		copy(c.CertType.GUID[:], e[:16])
		o, n := uint64(binary.LittleEndian.Uint32(e[16:])), uint64(binary.LittleEndian.Uint32(e[20:]))
		if o+n > uint64(len(b)) {
			return nil, fmt.Errorf("certificate table entry %d: bytes %d..%d outside the %d-byte table", i, o, o+n, len(b))
		}
		c.Data = append(ByteArray(nil), b[o:o+n]...)
		out = append(out, c)
	}
}

// MarshalCertTable writes entries as a GHCB certificate table.
func MarshalCertTable(entries []CertTableEntry) []byte {
	if len(entries) == 0 {
		return nil
	}
	hdr := (len(entries) + 1) * certEntrySize
	size := hdr
	for _, e := range entries {
		size += len(e.Data)
	}
	b := make([]byte, size)
	off := hdr
	for i, e := range entries {
		p := b[i*certEntrySize:]
		copy(p[:16], e.CertType.GUID[:])
		binary.LittleEndian.PutUint32(p[16:], uint32(off))
		binary.LittleEndian.PutUint32(p[20:], uint32(len(e.Data)))
		copy(b[off:], e.Data)
		off += len(e.Data)
	}
	return b
}

// SNPEvidenceFromQuote makes the evidence from what a go-sev-guest
// QuoteProvider returns: the raw report, then the certificate table, if
// any. Only ARK, ASK, VCEK, VLEK and CRL entries are kept (a verifier reads
// nothing else; go-sev-guest adds platform data entries of its own).
func SNPEvidenceFromQuote(quote []byte) (*SNPEvidence, error) {
	if len(quote) < ReportSize {
		return nil, fmt.Errorf("quote is %d bytes, shorter than an SNP report (%d)", len(quote), ReportSize)
	}
	r, err := ParseSNPReport(quote[:ReportSize])
	if err != nil {
		return nil, err
	}
	ev := &SNPEvidence{AttestationReport: *r}
	entries, err := ParseCertTable(quote[ReportSize:])
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if n := e.CertType.Name(); n != "" && n != "Empty" {
			ev.CertChain = append(ev.CertChain, e)
		}
	}
	return ev, nil
}

// Raw returns the raw report and the certificate table (nil without
// certificates) of the evidence.
func (e *SNPEvidence) Raw() (report, certTable []byte, err error) {
	report, err = e.AttestationReport.Raw()
	if err != nil {
		return nil, nil, err
	}
	return report, MarshalCertTable(e.CertChain), nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
