package attest

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/testing/data"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/google/uuid"
)

// productLines are the lines go-sev-guest knows (the keys of TrustedRoots).
var productLines = []string{"Milan", "Genoa", "Turin"}

var (
	amdArksOnce sync.Once
	amdArks     [][]byte // SubjectPublicKeyInfo of AMD's genuine ARKs
)

// amdArkKeys are the public keys of AMD's ARKs, from the VCEK and VLEK
// chains embedded in go-sev-guest.
func amdArkKeys() [][]byte {
	amdArksOnce.Do(func() {
		add := func(c *x509.Certificate) {
			if c == nil {
				return
			}
			for _, k := range amdArks {
				if bytes.Equal(k, c.RawSubjectPublicKeyInfo) {
					return
				}
			}
			amdArks = append(amdArks, c.RawSubjectPublicKeyInfo)
		}
		for _, r := range trust.DefaultRootCerts {
			if r != nil && r.ProductCerts != nil {
				add(r.ProductCerts.Ark)
			}
		}
		for _, bundle := range [][]byte{trust.AskArkMilanVlekBytes, trust.AskArkGenoaVlekBytes, trust.AskArkTurinVlekBytes} {
			if _, ark, err := kds.ParseProductCertChain(bundle); err == nil {
				if c, err := x509.ParseCertificate(ark); err == nil {
					add(c)
				}
			}
		}
	})
	return amdArks
}

// IsAMDRoot says whether ark is one of AMD's genuine ARK certificates
// (same public key as a root embedded in go-sev-guest).
func IsAMDRoot(ark *x509.Certificate) bool {
	if ark == nil {
		return false
	}
	for _, k := range amdArkKeys() {
		if bytes.Equal(k, ark.RawSubjectPublicKeyInfo) {
			return true
		}
	}
	return false
}

// IsSimulatedTestRoot says whether ark carries go-sev-guest's published
// test ARK key, i.e. belongs to its fake AMD chain.
func IsSimulatedTestRoot(ark *x509.Certificate) bool {
	if ark == nil {
		return false
	}
	pub, ok := ark.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(data.ARKPrivateKey.Public())
}

// rootsAreSimulated: any root set whose ARK is not AMD's makes the
// verification simulated.
func rootsAreSimulated(roots map[string][]*trust.AMDRootCerts) (bool, error) {
	simulated := false
	for line, rs := range roots {
		for _, r := range rs {
			if r == nil || r.ProductCerts == nil || r.ProductCerts.Ark == nil {
				return false, fmt.Errorf("attest: policy: TrustedRoots[%q] has a root set without an ARK", line)
			}
			if !IsAMDRoot(r.ProductCerts.Ark) {
				simulated = true
			}
		}
	}
	return simulated, nil
}

// SimulatedRoots are TrustedRoots for go-sev-guest's fake chain: ask and
// ark (and asvk, may be nil) for every product line. The Policy using them
// must set Simulated.
func SimulatedRoots(ark, ask, asvk *x509.Certificate) map[string][]*trust.AMDRootCerts {
	roots := map[string][]*trust.AMDRootCerts{}
	for _, line := range productLines {
		roots[line] = []*trust.AMDRootCerts{{
			Product:      line, // deprecated twin of ProductLine, still read by some paths
			ProductLine:  line,
			ProductCerts: &trust.ProductCerts{Ark: ark, Ask: ask, Asvk: asvk},
		}}
	}
	return roots
}

// simulatedRootsFromTable takes the fake chain's ARK and ASK/ASVK from the
// evidence's certificate table, accepting them only when the ARK carries
// go-sev-guest's published test key: simulated mode without configured
// roots still cannot be pointed at an arbitrary chain.
func simulatedRootsFromTable(t *abi.CertTable) (map[string][]*trust.AMDRootCerts, error) {
	if t == nil {
		return nil, errors.New("no TrustedRoots configured and the evidence has no certificate table to take the fake ARK/ASK from")
	}
	arkGUID, askGUID := uuid.MustParse(abi.ArkGUID), uuid.MustParse(abi.AskGUID)
	var ark, ask, asvk *x509.Certificate
	for _, e := range t.Entries {
		switch e.GUID {
		case arkGUID:
			c, err := x509.ParseCertificate(e.RawCert)
			if err != nil {
				return nil, fmt.Errorf("ARK in the certificate table: %v", err)
			}
			ark = c
		case askGUID: // ASK and ASVK share the GUID
			c, err := x509.ParseCertificate(e.RawCert)
			if err != nil {
				return nil, fmt.Errorf("ASK in the certificate table: %v", err)
			}
			if strings.HasPrefix(c.Subject.CommonName, "SEV-VLEK") {
				asvk = c
			} else {
				ask = c
			}
		}
	}
	if ark == nil || (ask == nil && asvk == nil) {
		return nil, errors.New("no TrustedRoots configured and the certificate table has no ARK and ASK")
	}
	if !IsSimulatedTestRoot(ark) {
		return nil, errors.New("the certificate table's ARK is not go-sev-guest's test ARK; configure TrustedRoots explicitly")
	}
	return SimulatedRoots(ark, ask, asvk), nil
}

// VCEKCachePath is where a VCEK for chipID at reportedTCB lives in a cache
// directory: <dir>/vcek-<chip id hex>-<reported TCB as 16 hex digits>.der
// (DER, or PEM in the same file name).
func VCEKCachePath(dir string, chipID []byte, reportedTCB uint64) string {
	return filepath.Join(dir, fmt.Sprintf("vcek-%s-%016x.der", hex.EncodeToString(chipID), reportedTCB))
}

func readCachedVCEK(dir string, chipID []byte, tcb uint64) ([]byte, error) {
	path := VCEKCachePath(dir, chipID, tcb)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if blk, _ := pem.Decode(b); blk != nil && blk.Type == "CERTIFICATE" {
		b = blk.Bytes
	}
	if _, err := x509.ParseCertificate(b); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return b, nil
}

// CacheVCEK stores a VCEK certificate (DER or PEM) in dir under the name
// VCEKCachePath gives for the chip id and TCB in its extensions, and
// returns that path. The certificate is checked when a report is verified
// with it, not here.
func CacheVCEK(dir string, cert []byte) (string, error) {
	if blk, _ := pem.Decode(cert); blk != nil && blk.Type == "CERTIFICATE" {
		cert = blk.Bytes
	}
	c, err := x509.ParseCertificate(cert)
	if err != nil {
		return "", fmt.Errorf("attest: VCEK: %w", err)
	}
	exts, err := kds.VcekCertificateExtensions(c)
	if err != nil {
		return "", fmt.Errorf("attest: VCEK extensions: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := VCEKCachePath(dir, exts.HWID[:], uint64(exts.TCBVersion))
	tmp, err := os.CreateTemp(dir, ".vcek-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(cert); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", err
	}
	return path, os.Rename(tmp.Name(), path)
}
