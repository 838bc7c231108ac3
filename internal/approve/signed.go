package approve

import (
	"archive/zip"
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/atomicfile"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/project"
)

// DefaultValidDays is approve's default certificate lifetime (3 years).
const DefaultValidDays = 1095

// DefaultProvisionVersion is the ca_info.provision_version approve records
// for a CA made without --deploy-version; `nvflare package` writes the kit
// to <workspace>/<project>/prod_<version>/<name>/.
const DefaultProvisionVersion = "00"

// SignedZipMode is the signed zip's file mode: it holds certificates and
// metadata only, no private key.
const SignedZipMode = 0o644

var provisionVersionRule = regexp.MustCompile(`^[0-9]{2}$`)

// Endpoint is the server a packaged kit connects to. NVFlare 2.9 takes it
// from the approver's project profile and records it in signed.json.
type Endpoint struct {
	Scheme             string // grpc, tcp or http
	ConnectionSecurity string // clear, tls or mtls
	Host               string
	FedLearnPort       int
	AdminPort          int
}

// Validate applies the rules `nvflare package` checks.
func (e Endpoint) Validate() error {
	switch e.Scheme {
	case "grpc", "tcp", "http":
	default:
		return fmt.Errorf("scheme %q is not one of grpc, tcp, http", e.Scheme)
	}
	switch e.ConnectionSecurity {
	case "clear", "tls", "mtls":
	default:
		return fmt.Errorf("connection_security %q is not one of clear, tls, mtls", e.ConnectionSecurity)
	}
	if err := project.ValidateHostName(e.Host); err != nil {
		return fmt.Errorf("server host: %w", err)
	}
	if err := project.ValidatePort("fed_learn_port", e.FedLearnPort); err != nil {
		return err
	}
	return project.ValidatePort("admin_port", e.AdminPort)
}

// Options are the approver's side of an approval.
type Options struct {
	CA     pki.CA
	Server Endpoint
	// ValidDays defaults to DefaultValidDays; the certificate never
	// outlives the root.
	ValidDays int
	// ServerHosts are extra subjectAltNames of a server certificate.
	ServerHosts []string
	// ProvisionVersion defaults to DefaultProvisionVersion.
	ProvisionVersion string
	Now              time.Time
}

// Approval is an issued certificate and its signed zip.
type Approval struct {
	Cert       *x509.Certificate
	CertPEM    []byte
	RootPEM    []byte
	SignedJSON []byte
	Zip        []byte
	// RootFingerprint is what `nvflare package --fingerprint` compares:
	// SHA256:AA:BB:… of the root certificate's DER.
	RootFingerprint string
}

// Approve issues req's certificate with the 2.9 approve profile and builds
// the signed zip. It never sees a private key but the CA's, through its
// signer.
func Approve(req *Request, opt Options) (*Approval, error) {
	if err := opt.check(req); err != nil {
		return nil, err
	}
	var hosts []string
	if req.CertType == pki.CertTypeServer {
		hosts = append([]string{opt.Server.Host}, opt.ServerHosts...)
	}
	days := opt.ValidDays
	if days == 0 {
		days = DefaultValidDays
	}
	cert, err := opt.CA.IssueFromCSR(pki.CSRRequest{CSR: req.CSR, CertType: req.CertType, Hosts: hosts, Days: days, Now: opt.Now})
	if err != nil {
		return nil, err
	}
	return Package(req, cert, opt)
}

func (opt *Options) check(req *Request) error {
	if req == nil || req.CSR == nil {
		return errors.New("approve: no request")
	}
	if opt.CA.Cert == nil || opt.CA.Signer == nil {
		return errors.New("approve: no CA")
	}
	if opt.CA.Cert.Subject.CommonName != req.Project {
		return &Error{
			Problem: fmt.Sprintf("the request is for project %q, but this CA's root is project %q", req.Project, opt.CA.Cert.Subject.CommonName),
			Fix:     "Approve it with the flare_project of that name, or ask the site to request for this project",
		}
	}
	if err := opt.Server.Validate(); err != nil {
		return err
	}
	if req.CertType == pki.CertTypeServer && req.Name != opt.Server.Host {
		return &Error{Problem: fmt.Sprintf("server request %q does not match the server host %q", req.Name, opt.Server.Host)}
	}
	if req.CertType != pki.CertTypeServer && req.Name == opt.Server.Host {
		return &Error{Problem: fmt.Sprintf("participant name %q is the server's host name", req.Name), Fix: "`nvflare package` refuses it; the site must request another name"}
	}
	if opt.ProvisionVersion == "" {
		opt.ProvisionVersion = DefaultProvisionVersion
	}
	if !provisionVersionRule.MatchString(opt.ProvisionVersion) {
		return fmt.Errorf("provision version %q must be two digits, like 00", opt.ProvisionVersion)
	}
	if opt.Now.IsZero() {
		opt.Now = time.Now()
	}
	return nil
}

// Package builds the signed zip for a certificate already issued for req
// (a rewrite after the zip was deleted or edited keeps the certificate).
func Package(req *Request, cert *x509.Certificate, opt Options) (*Approval, error) {
	if err := opt.check(req); err != nil {
		return nil, err
	}
	if err := cert.CheckSignatureFrom(opt.CA.Cert); err != nil {
		return nil, fmt.Errorf("certificate of %q is not signed by the project root: %w", req.Name, err)
	}
	certKey, err := pki.KeyFingerprint(cert.PublicKey)
	if err != nil {
		return nil, err
	}
	if certKey != req.PublicKeySHA256 {
		return nil, fmt.Errorf("certificate of %q is for another key than the request's", req.Name)
	}
	a := &Approval{Cert: cert, CertPEM: pki.CertPEM(cert), RootPEM: pki.CertPEM(opt.CA.Cert), RootFingerprint: Fingerprint(opt.CA.Cert)}
	meta := signedJSON{
		ArtifactType: SignedArtifactType, SchemaVersion: ArtifactVersion,
		RequestID: req.RequestID, ApprovedAt: opt.Now.UTC().Format("2006-01-02T15:04:05Z"),
		Project: req.Project, Name: req.Name, Org: req.Org, Kind: req.Kind, CertType: req.CertType,
		Certificate: certInfo{Serial: "0x" + cert.SerialNumber.Text(16), ValidUntil: cert.NotAfter.UTC().Format("2006-01-02T15:04:05Z")},
		CertFile:    req.Name + ".crt", RootCAFile: "rootCA.pem",
		CAInfo: caInfo{ProvisionVersion: opt.ProvisionVersion, RootCAFingerprint: a.RootFingerprint},
		Hashes: hashes{
			CSR: req.CSRSHA256, SiteYAML: sha256Hex(req.SiteYAML), Certificate: sha256Hex(a.CertPEM),
			RootCA: sha256Hex(a.RootPEM), PublicKey: req.PublicKeySHA256,
		},
		Scheme: opt.Server.Scheme, DefaultConnectionSecurity: opt.Server.ConnectionSecurity,
		Server:   serverInfo{Host: opt.Server.Host, FedLearnPort: opt.Server.FedLearnPort, AdminPort: opt.Server.AdminPort},
		CertRole: req.CertRole,
	}
	if a.SignedJSON, err = json.MarshalIndent(meta, "", "  "); err != nil {
		return nil, err
	}
	sig, err := signContent(opt.CA.Signer, a.SignedJSON)
	if err != nil {
		return nil, err
	}
	a.Zip, err = writeZip(opt.Now, []member{
		{"signed.json", a.SignedJSON},
		{"signed.json.sig", sig},
		{"site.yaml", req.SiteYAML},
		{meta.CertFile, a.CertPEM},
		{"rootCA.pem", a.RootPEM},
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

type signedJSON struct {
	ArtifactType              string     `json:"artifact_type"`
	SchemaVersion             string     `json:"schema_version"`
	RequestID                 string     `json:"request_id"`
	ApprovedAt                string     `json:"approved_at"`
	Project                   string     `json:"project"`
	Name                      string     `json:"name"`
	Org                       string     `json:"org"`
	Kind                      string     `json:"kind"`
	CertType                  string     `json:"cert_type"`
	Certificate               certInfo   `json:"certificate"`
	CertFile                  string     `json:"cert_file"`
	RootCAFile                string     `json:"rootca_file"`
	CAInfo                    caInfo     `json:"ca_info"`
	Hashes                    hashes     `json:"hashes"`
	Scheme                    string     `json:"scheme"`
	DefaultConnectionSecurity string     `json:"default_connection_security"`
	Server                    serverInfo `json:"server"`
	CertRole                  string     `json:"cert_role,omitempty"`
}

type certInfo struct {
	Serial     string `json:"serial"`
	ValidUntil string `json:"valid_until"`
}

type caInfo struct {
	ProvisionVersion  string `json:"provision_version"`
	RootCAFingerprint string `json:"rootCA_fingerprint"`
}

type hashes struct {
	CSR         string `json:"csr_sha256"`
	SiteYAML    string `json:"site_yaml_sha256"`
	Certificate string `json:"certificate_sha256"`
	RootCA      string `json:"rootca_sha256"`
	PublicKey   string `json:"public_key_sha256"`
}

type serverInfo struct {
	Host         string `json:"host"`
	FedLearnPort int    `json:"fed_learn_port"`
	AdminPort    int    `json:"admin_port"`
}

// signContent is NVFlare's sign_content: RSA-PSS, SHA-256, MGF1-SHA-256,
// maximum salt length, base64.
func signContent(signer crypto.Signer, content []byte) ([]byte, error) {
	if _, ok := signer.Public().(*rsa.PublicKey); !ok {
		return nil, fmt.Errorf("root CA key is %T; signed.json.sig needs RSA", signer.Public())
	}
	sum := sha256.Sum256(content)
	sig, err := signer.Sign(rand.Reader, sum[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256})
	if err != nil {
		return nil, fmt.Errorf("signing signed.json: %w", err)
	}
	return []byte(base64.StdEncoding.EncodeToString(sig)), nil
}

// verifyContent checks a signContent signature, salt length as NVFlare
// verifies it (the maximum).
func verifyContent(root *x509.Certificate, content, sigB64 []byte) error {
	pub, ok := root.PublicKey.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("root key is %T, want RSA", root.PublicKey)
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sigB64)))
	if err != nil {
		return fmt.Errorf("signed.json.sig is not base64: %w", err)
	}
	sum := sha256.Sum256(content)
	salt := (pub.N.BitLen()+7)/8 - sha256.Size - 2
	return rsa.VerifyPSS(pub, crypto.SHA256, sum[:], sig, &rsa.PSSOptions{SaltLength: salt, Hash: crypto.SHA256})
}

type member struct {
	name string
	data []byte
}

func writeZip(mtime time.Time, members []member) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, m := range members {
		h := &zip.FileHeader{Name: m.name, Method: zip.Deflate, Modified: mtime.UTC().Truncate(time.Second)}
		h.SetMode(0o644)
		w, err := zw.CreateHeader(h)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(m.data); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteZip stores a signed zip atomically (temp file, fsync, rename) with
// SignedZipMode, creating its directory.
func WriteZip(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(p), err)
	}
	return atomicfile.Write(p, data, SignedZipMode)
}

// SignedZipName is the file name approve gives a participant's signed zip.
func SignedZipName(participant string) string { return participant + ".signed.zip" }

// Fingerprint is OpenSSL's SHA-256 fingerprint of a certificate,
// "SHA256:AA:BB:…", the form `nvflare cert approve` prints and
// `nvflare package --fingerprint` takes.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	var b strings.Builder
	b.WriteString("SHA256:")
	for i, c := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", c)
	}
	return b.String()
}

// Signed is a signed zip read back.
type Signed struct {
	RequestID       string
	Project         string
	Name            string
	Org             string
	Kind            string
	CertType        string
	CertRole        string
	Server          Endpoint
	Cert            *x509.Certificate
	PublicKeySHA256 string
}

// ReadSigned reads a signed zip and checks it as `nvflare package` does
// against the given root: members, signature over signed.json, hashes,
// certificate chain and identity.
func ReadSigned(data []byte, root *x509.Certificate) (*Signed, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("not a readable zip (truncated or corrupted?): %w", err)
	}
	if len(zr.File) != 5 {
		return nil, fmt.Errorf("signed zip has %d members, want 5", len(zr.File))
	}
	m := map[string][]byte{}
	certName := ""
	for _, f := range zr.File {
		if err := checkMemberName(f, "signed zip"); err != nil {
			return nil, err
		}
		b, err := readMember(f, "signed zip")
		if err != nil {
			return nil, err
		}
		if _, dup := m[f.Name]; dup {
			return nil, fmt.Errorf("signed zip holds %q twice", f.Name)
		}
		m[f.Name] = b
		if strings.HasSuffix(f.Name, ".crt") {
			certName = f.Name
		}
	}
	for _, n := range []string{"signed.json", "signed.json.sig", "site.yaml", "rootCA.pem", certName} {
		if _, ok := m[n]; !ok || n == "" {
			return nil, fmt.Errorf("signed zip lacks %q", n)
		}
	}
	zipRoot, err := pki.ParseCertPEM(m["rootCA.pem"])
	if err != nil {
		return nil, fmt.Errorf("rootCA.pem: %w", err)
	}
	if root != nil && !bytes.Equal(zipRoot.Raw, root.Raw) {
		return nil, errors.New("the signed zip's rootCA.pem is not the project's root")
	}
	if err := verifyContent(zipRoot, m["signed.json"], m["signed.json.sig"]); err != nil {
		return nil, fmt.Errorf("signed.json.sig does not verify: %w", err)
	}
	var meta signedJSON
	if err := json.Unmarshal(m["signed.json"], &meta); err != nil {
		return nil, fmt.Errorf("signed.json: %w", err)
	}
	if meta.ArtifactType != SignedArtifactType || meta.SchemaVersion != ArtifactVersion {
		return nil, fmt.Errorf("signed.json is %s version %s", meta.ArtifactType, meta.SchemaVersion)
	}
	if meta.CertFile != certName || meta.RootCAFile != "rootCA.pem" || certName != meta.Name+".crt" {
		return nil, errors.New("signed.json file names do not match the zip")
	}
	for _, h := range []struct{ name, want string }{
		{"site.yaml", meta.Hashes.SiteYAML}, {certName, meta.Hashes.Certificate}, {"rootCA.pem", meta.Hashes.RootCA},
	} {
		if sha256Hex(m[h.name]) != h.want {
			return nil, fmt.Errorf("%s does not match its hash in signed.json", h.name)
		}
	}
	if meta.CAInfo.RootCAFingerprint != Fingerprint(zipRoot) {
		return nil, errors.New("ca_info.rootCA_fingerprint is not the included root's")
	}
	cert, err := pki.ParseCertPEM(m[certName])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certName, err)
	}
	if err := cert.CheckSignatureFrom(zipRoot); err != nil {
		return nil, fmt.Errorf("%s is not signed by rootCA.pem: %w", certName, err)
	}
	keyFP, err := pki.KeyFingerprint(cert.PublicKey)
	if err != nil {
		return nil, err
	}
	if keyFP != meta.Hashes.PublicKey {
		return nil, errors.New("the certificate's key does not match public_key_sha256")
	}
	if cert.Subject.CommonName != meta.Name || pki.RoleOfName(cert.Subject) != meta.CertType {
		return nil, errors.New("the certificate's subject does not match signed.json")
	}
	if zipRoot.Subject.CommonName != meta.Project {
		return nil, errors.New("signed.json's project is not the root's")
	}
	return &Signed{
		RequestID: meta.RequestID, Project: meta.Project, Name: meta.Name, Org: meta.Org, Kind: meta.Kind,
		CertType: meta.CertType, CertRole: meta.CertRole, Cert: cert, PublicKeySHA256: keyFP,
		Server: Endpoint{Scheme: meta.Scheme, ConnectionSecurity: meta.DefaultConnectionSecurity,
			Host: meta.Server.Host, FedLearnPort: meta.Server.FedLearnPort, AdminPort: meta.Server.AdminPort},
	}, nil
}
