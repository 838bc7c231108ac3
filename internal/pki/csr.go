package pki

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"time"
)

// Certificate types of NVFlare 2.9's distributed provisioning
// (`nvflare cert request/approve`): the value approve writes into the
// certificate's unstructuredName and `nvflare package` reads back.
const (
	CertTypeClient   = "client"
	CertTypeServer   = "server"
	CertTypeOrgAdmin = "org_admin"
	CertTypeLead     = "lead"
	CertTypeMember   = "member"
)

// IsAdminCertType reports whether t is one of the admin certificate types.
func IsAdminCertType(t string) bool {
	return t == CertTypeOrgAdmin || t == CertTypeLead || t == CertTypeMember
}

// MinCSRKeyBits is the smallest RSA key IssueFromCSR signs. NVFlare makes
// 2048-bit keys; its cell cipher encrypts to them with RSA-OAEP, so a
// participant key must be RSA.
const MinCSRKeyBits = 2048

// ParseCSRPEM decodes exactly one PEM CERTIFICATE REQUEST and checks its
// self-signature, so a tampered request fails here.
func ParseCSRPEM(data []byte) (*x509.CertificateRequest, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found: expected -----BEGIN CERTIFICATE REQUEST-----")
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("PEM block is %q, expected CERTIFICATE REQUEST", block.Type)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, errors.New("more than one PEM block: give exactly one CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CSR does not parse (truncated or corrupted?): %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature does not verify (the request was altered after it was signed): %w", err)
	}
	return csr, nil
}

// CSRRequest is a certificate to issue from a CSR with the profile of
// NVFlare 2.9's `nvflare cert approve`.
type CSRRequest struct {
	CSR *x509.CertificateRequest
	// CertType is the approver's decision (client, server, org_admin, lead,
	// member); it goes into unstructuredName whatever the CSR proposed.
	CertType string
	// Hosts are a server certificate's subjectAltNames, default host first.
	// Other types get DNS:<common name>, as approve does.
	Hosts []string
	// Days of validity from now, clamped to the root's NotAfter.
	Days int
	Now  time.Time
}

// IssueFromCSR signs a leaf from a CSR. Only the CSR's common name,
// organization and public key are used; every extension is the approver's:
//
//   - subject CN and O from the CSR, unstructuredName = CertType;
//   - BasicConstraints CA:FALSE (critical);
//   - KeyUsage (critical): admins digitalSignature+contentCommitment,
//     clients and servers digitalSignature+keyEncipherment;
//   - ExtKeyUsage: admins clientAuth, clients and servers clientAuth+serverAuth;
//   - subjectAltName: DNS:<CN>, or for servers the hosts (IP literals as IP);
//   - SKI of the subject key, AKI of the root; SHA256WithRSA.
func (ca CA) IssueFromCSR(req CSRRequest) (*x509.Certificate, error) {
	if ca.Cert == nil || ca.Signer == nil {
		return nil, errors.New("issue from CSR: no CA")
	}
	csr := req.CSR
	if csr == nil {
		return nil, errors.New("issue from CSR: no CSR")
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature does not verify: %w", err)
	}
	pub, ok := csr.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("CSR key is %T; NVFlare participants need an RSA key of at least %d bits", csr.PublicKey, MinCSRKeyBits)
	}
	if pub.N.BitLen() < MinCSRKeyBits {
		return nil, fmt.Errorf("CSR key is RSA-%d; NVFlare participants need at least RSA-%d", pub.N.BitLen(), MinCSRKeyBits)
	}
	cn := csr.Subject.CommonName
	if cn == "" {
		return nil, errors.New("CSR has no common name")
	}
	if len(csr.Subject.Organization) > 1 {
		return nil, errors.New("CSR has more than one organization")
	}
	org := ""
	if len(csr.Subject.Organization) == 1 {
		org = csr.Subject.Organization[0]
	}
	var ku x509.KeyUsage
	var eku []x509.ExtKeyUsage
	switch {
	case IsAdminCertType(req.CertType):
		ku = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case req.CertType == CertTypeClient || req.CertType == CertTypeServer:
		ku = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
	default:
		return nil, fmt.Errorf("certificate type %q is not one of client, server, org_admin, lead, member", req.CertType)
	}
	if req.Days < 1 {
		return nil, fmt.Errorf("validity of %d days: use 1 or more", req.Days)
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	now = now.UTC().Truncate(time.Second)
	if now.Before(ca.Cert.NotBefore) {
		return nil, fmt.Errorf("root CA is not valid until %s", ca.Cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if !now.Before(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("root CA expired at %s: renew the project's root before approving requests", ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	notAfter := now.AddDate(0, 0, req.Days)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	notBefore := now.Add(-Backdate)
	if notBefore.Before(ca.Cert.NotBefore) {
		notBefore = ca.Cert.NotBefore
	}

	var dns []string
	var ips []net.IP
	if req.CertType == CertTypeServer && len(req.Hosts) > 0 {
		seen := map[string]bool{}
		for _, h := range req.Hosts {
			if h == "" || seen[h] {
				continue
			}
			seen[h] = true
			if ip := net.ParseIP(h); ip != nil {
				ips = append(ips, ip)
			} else {
				dns = append(dns, h)
			}
		}
	} else {
		dns = []string{cn}
	}

	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	ski, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               Subject{CommonName: cn, Organization: org, Role: req.CertType}.name(),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true, // CA:FALSE; Go marks it critical
		IsCA:                  false,
		KeyUsage:              ku, // Go marks KeyUsage critical
		ExtKeyUsage:           eku,
		DNSNames:              dns,
		IPAddresses:           ips,
		SubjectKeyId:          ski,
		AuthorityKeyId:        ca.Cert.SubjectKeyId,
		SignatureAlgorithm:    x509.SHA256WithRSA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Signer)
	if err != nil {
		return nil, fmt.Errorf("signing certificate for %q: %w", cn, err)
	}
	return x509.ParseCertificate(der)
}

// RoleOfName returns the unstructuredName NVFlare reads as the role or
// certificate type (from a CSR's or a certificate's subject), or "".
func RoleOfName(n pkix.Name) string {
	for _, atv := range n.Names {
		if atv.Type.Equal(oidUnstructuredName) {
			if s, ok := atv.Value.(string); ok {
				return s
			}
		}
	}
	return ""
}
