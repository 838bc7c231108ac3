// Package pki makes the keys and certificates of an NVFlare federation.
//
// Every signature goes through a crypto.Signer so the root CA key can live in
// a local file or stay inside Vault Transit. NVFlare verifies certificates
// with PKCS#1 v1.5 over SHA-256, so certificates are always signed that way.
package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // key identifier only
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// ParticipantKeyBits is the RSA size NVFlare's provisioner uses for every key.
const ParticipantKeyBits = 2048

// oidUnstructuredName is PKCS#9 unstructuredName: NVFlare stores the
// participant's role there and reads it back at runtime for authorization.
var oidUnstructuredName = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 2}

// Subject is the identity NVFlare reads from a certificate.
type Subject struct {
	CommonName   string // participant name (an email for admins)
	Organization string // org, used by org-scoped authorization rules
	Role         string // project_admin, org_admin, lead, member, or empty
}

var (
	oidCommonName   = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidOrganization = asn1.ObjectIdentifier{2, 5, 4, 10}
)

// name lists the attributes in NVFlare's order, CN, O, role: pkix.Name's
// own fields would marshal O before CN, and ExtraNames keep their order.
func (s Subject) name() pkix.Name {
	n := pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidCommonName, Value: s.CommonName}}}
	if s.Organization != "" {
		n.ExtraNames = append(n.ExtraNames, pkix.AttributeTypeAndValue{Type: oidOrganization, Value: s.Organization})
	}
	if s.Role != "" {
		n.ExtraNames = append(n.ExtraNames, pkix.AttributeTypeAndValue{Type: oidUnstructuredName, Value: s.Role})
	}
	return n
}

// RoleOf returns the role NVFlare would read from cert, or "".
func RoleOf(cert *x509.Certificate) string {
	for _, atv := range cert.Subject.Names {
		if atv.Type.Equal(oidUnstructuredName) {
			if s, ok := atv.Value.(string); ok {
				return s
			}
		}
	}
	return ""
}

// CA is a root certificate plus the signer that holds its private key.
type CA struct {
	Cert   *x509.Certificate
	Signer crypto.Signer
}

// GenerateKey makes an RSA key of the size NVFlare uses (e = 65537) with
// crypto/rsa (FIPS 140-3 mode applies with GODEBUG=fips140=on) and checks
// it with a pairwise sign/verify before anyone relies on it.
func GenerateKey() (*rsa.PrivateKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, ParticipantKeyBits)
	if err != nil {
		return nil, fmt.Errorf("generating an RSA-%d key: %w", ParticipantKeyBits, err)
	}
	if err := PairwiseCheck(key); err != nil {
		return nil, err
	}
	return key, nil
}

// PairwiseCheck signs a fixed digest with key and verifies it with the
// public half: a key damaged in memory or on disk fails here, not in a
// site's TLS handshake.
func PairwiseCheck(key *rsa.PrivateKey) error {
	digest := sha256.Sum256([]byte("terraform-provider-flare pairwise check"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err == nil {
		err = rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, digest[:], sig)
	}
	if err != nil {
		return fmt.Errorf("RSA key fails its pairwise sign/verify check: %w", err)
	}
	return nil
}

// Validity is a certificate's lifetime window.
type Validity struct {
	NotBefore time.Time
	NotAfter  time.Time
}

// Backdate is how far before "now" a certificate becomes valid, so hosts with
// slightly skewed clocks accept a fresh certificate.
const Backdate = 5 * time.Minute

// ValidityFor returns a window of days starting now.
func ValidityFor(now time.Time, days int) Validity {
	start := now.UTC().Add(-Backdate).Truncate(time.Second)
	return Validity{NotBefore: start, NotAfter: now.UTC().Truncate(time.Second).AddDate(0, 0, days)}
}

// Profile is what differs between NVFlare release lines in the
// certificates their provisioners make. The values per line are data
// (internal/kit/lines/<line>/line.json), not code.
type Profile struct {
	// RootKeyUsage lists the root's key usages by their RFC 5280 names.
	// Empty means digitalSignature, keyCertSign and cRLSign (NVFlare 2.8+).
	RootKeyUsage []string `json:"root_key_usage"`
	// IPSANs puts a host that is an IP literal into an iPAddress SAN
	// instead of a dNSName (2.8+).
	IPSANs bool `json:"ip_sans"`
	// ClampToRoot ends a leaf no later than its root and refuses to issue
	// once the root has expired (2.8+).
	ClampToRoot bool `json:"clamp_to_root"`
}

var keyUsageNames = map[string]x509.KeyUsage{
	"digitalSignature": x509.KeyUsageDigitalSignature, "contentCommitment": x509.KeyUsageContentCommitment,
	"keyEncipherment": x509.KeyUsageKeyEncipherment, "dataEncipherment": x509.KeyUsageDataEncipherment,
	"keyAgreement": x509.KeyUsageKeyAgreement, "keyCertSign": x509.KeyUsageCertSign, "cRLSign": x509.KeyUsageCRLSign,
}

// Validate reports a profile that names an unknown key usage or leaves the
// root unable to sign certificates.
func (p Profile) Validate() error {
	_, err := p.rootKeyUsage()
	return err
}

func (p Profile) rootKeyUsage() (x509.KeyUsage, error) {
	if len(p.RootKeyUsage) == 0 {
		return x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign | x509.KeyUsageCRLSign, nil
	}
	var ku x509.KeyUsage
	for _, name := range p.RootKeyUsage {
		bit, ok := keyUsageNames[name]
		if !ok {
			return 0, fmt.Errorf("root_key_usage: unknown key usage %q", name)
		}
		ku |= bit
	}
	if ku&x509.KeyUsageCertSign == 0 {
		return 0, errors.New("root_key_usage: a root CA needs keyCertSign")
	}
	return ku, nil
}

// NewRootCA self-signs a root certificate for project with signer's key,
// with the key usages of profile.
func NewRootCA(signer crypto.Signer, project string, v Validity, profile Profile) (*x509.Certificate, error) {
	keyUsage, err := profile.rootKeyUsage()
	if err != nil {
		return nil, err
	}
	rsaPub, ok := signer.Public().(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("root CA key must be RSA (NVFlare verifies RSA signatures), got %T", signer.Public())
	}
	ski, err := subjectKeyID(rsaPub)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               Subject{CommonName: project}.name(),
		NotBefore:             v.NotBefore,
		NotAfter:              v.NotAfter,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        false,
		MaxPathLen:            -1,
		// Go marks KeyUsage critical, as NVFlare 2.8+ does; NVFlare's root
		// also carries its own name as a SAN.
		KeyUsage:           keyUsage,
		DNSNames:           []string{project},
		SubjectKeyId:       ski,
		AuthorityKeyId:     ski,
		SignatureAlgorithm: x509.SHA256WithRSA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, rsaPub, signer)
	if err != nil {
		return nil, fmt.Errorf("self-signing root CA for project %q: %w", project, err)
	}
	return x509.ParseCertificate(der)
}

// LeafRequest describes a participant certificate.
type LeafRequest struct {
	Subject   Subject
	PublicKey *rsa.PublicKey
	// DNSNames go into subjectAltName; NVFlare puts the participant name
	// there, and for servers its host names too. With Profile.IPSANs an IP
	// literal among them becomes an iPAddress entry.
	DNSNames []string
	Validity Validity
	Profile  Profile
	// ExtKeyUsage, when set, restricts the certificate to these purposes
	// (participants have none, as NVFlare's; an agent's is serverAuth
	// only, so NVFlare refuses it as a client or admin).
	ExtKeyUsage []x509.ExtKeyUsage
	// KeyUsage, when set, is written (critical) as the key usage.
	KeyUsage x509.KeyUsage
}

// Issue signs a participant certificate with the CA.
func (ca CA) Issue(req LeafRequest) (*x509.Certificate, error) {
	if req.PublicKey == nil {
		return nil, errors.New("issue certificate: no public key")
	}
	if req.Subject.CommonName == "" {
		return nil, errors.New("issue certificate: empty common name")
	}
	validity := req.Validity
	if req.Profile.ClampToRoot {
		if !ca.Cert.NotAfter.After(validity.NotBefore.Add(Backdate)) {
			return nil, fmt.Errorf("cannot issue a certificate for %q: the root CA expired at %s; make a new project CA",
				req.Subject.CommonName, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
		}
		if validity.NotAfter.After(ca.Cert.NotAfter) {
			validity.NotAfter = ca.Cert.NotAfter
		}
	}
	var dnsNames []string
	var ips []net.IP
	for _, name := range req.DNSNames {
		if ip := net.ParseIP(name); ip != nil && req.Profile.IPSANs {
			ips = append(ips, ip)
		} else {
			dnsNames = append(dnsNames, name)
		}
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	ski, err := subjectKeyID(req.PublicKey)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:       serial,
		Subject:            req.Subject.name(),
		NotBefore:          validity.NotBefore,
		NotAfter:           validity.NotAfter,
		DNSNames:           dnsNames,
		IPAddresses:        ips,
		SubjectKeyId:       ski,
		AuthorityKeyId:     ca.Cert.SubjectKeyId,
		SignatureAlgorithm: x509.SHA256WithRSA,
		// No key usage extensions for participants, as NVFlare: a
		// participant is TLS server and client in its mTLS links.
		ExtKeyUsage: req.ExtKeyUsage,
		KeyUsage:    req.KeyUsage,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, req.PublicKey, ca.Signer)
	if err != nil {
		return nil, fmt.Errorf("signing certificate for %q: %w", req.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

func randomSerial() (*big.Int, error) {
	// 159 bits like cryptography's random_serial_number: positive, < 2^159.
	limit := new(big.Int).Lsh(big.NewInt(1), 159)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("random serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func subjectKeyID(pub *rsa.PublicKey) ([]byte, error) {
	// RFC 5280 §4.2.1.2 method 1; SHA-1 here is an identifier, not a security use.
	sum := sha1.Sum(x509.MarshalPKCS1PublicKey(pub))
	return sum[:], nil
}

// CertPEM encodes a certificate.
func CertPEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// KeyPEM encodes an RSA private key as PKCS#1 ("RSA PRIVATE KEY"), the
// form NVFlare writes.
func KeyPEM(key *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
}

// ParseCertPEM decodes one PEM certificate.
func ParseCertPEM(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return x509.ParseCertificate(block.Bytes)
}

// ParseKeyPEM decodes an RSA private key in PKCS#8 or PKCS#1 PEM.
func ParseKeyPEM(data []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("private key is %T, want RSA", k)
		}
		return rk, nil
	}
	return nil, fmt.Errorf("unexpected PEM block %q, want a private key", block.Type)
}

// CertFingerprint is the hex SHA-256 of the certificate's DER.
func CertFingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// KeyFingerprint is the hex SHA-256 of the public key's SubjectPublicKeyInfo,
// so a key can be identified in state without storing it.
func KeyFingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}
