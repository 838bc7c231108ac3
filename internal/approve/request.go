// Package approve is NVFlare 2.9's `nvflare cert approve` in Go: it reads
// the request zip a site makes with `nvflare cert request` (or a bare CSR),
// checks it, issues the certificate through a crypto.Signer-backed CA and
// writes the signed zip `nvflare package` turns into a startup kit. No
// private key is read or written here: the site keeps its key.
package approve

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"strings"

	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/project"
)

// Limits for what is read from a request. A real request zip is about
// 1.5 KB; these bound memory and decompression whatever the input claims.
const (
	MaxRequestZipBytes = 1 << 20  // the zip file itself
	MaxMemberBytes     = 64 << 10 // each member, decompressed
	MaxCSRPEMBytes     = 64 << 10
)

// Artifact identifiers of NVFlare 2.9's request and signed zips.
const (
	RequestArtifactType = "nvflare.cert.request"
	SignedArtifactType  = "nvflare.cert.signed"
	ArtifactVersion     = "1"
)

// Request kinds as request.json names them.
const (
	KindSite   = "site"
	KindServer = "server"
	KindUser   = "user"
)

var (
	requestIDRule   = regexp.MustCompile(`^(?:[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$`)
	safeCertName    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]*$`)
	safeProjectName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	privateKeyPEM   = [][]byte{
		[]byte("-----BEGIN PRIVATE KEY-----"),
		[]byte("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
		[]byte("-----BEGIN RSA PRIVATE KEY-----"),
		[]byte("-----BEGIN EC PRIVATE KEY-----"),
		[]byte("-----BEGIN DSA PRIVATE KEY-----"),
		[]byte("-----BEGIN OPENSSH PRIVATE KEY-----"),
	}
)

// Request is a checked certificate request: from a request zip every field
// is filled and consistent; from a bare CSR, Kind/CertType/Project come from
// the approver.
type Request struct {
	RequestID string
	Project   string
	Name      string
	Org       string
	Kind      string // site, server or user
	CertType  string // client, server, org_admin, lead or member
	CertRole  string // the admin role (= CertType) for users, else ""

	CSR    *x509.CertificateRequest
	CSRPEM []byte
	// SiteYAML is the participant definition that goes into the signed zip
	// (endpoint and builder fields removed, as approve does).
	SiteYAML []byte

	CSRSHA256       string // hex SHA-256 of the CSR file
	PublicKeySHA256 string // hex SHA-256 of the CSR key's SubjectPublicKeyInfo

	// FromZip is false for a bare CSR.
	FromZip bool
}

// ParticipantType is the project.yml type: client, server or admin.
func (r *Request) ParticipantType() project.Type {
	switch {
	case pki.IsAdminCertType(r.CertType):
		return project.TypeAdmin
	case r.CertType == pki.CertTypeServer:
		return project.TypeServer
	}
	return project.TypeClient
}

// Error is a request that cannot be approved. Problem says what is wrong,
// Fix what to do.
type Error struct {
	Problem string
	Fix     string
}

func (e *Error) Error() string {
	if e.Fix == "" {
		return e.Problem
	}
	return e.Problem + ". " + e.Fix
}

const fixResend = "Ask the site for a fresh request zip made with `nvflare cert request`"

func bad(format string, args ...any) *Error {
	return &Error{Problem: fmt.Sprintf(format, args...), Fix: fixResend}
}

// ReadFile reads at most limit bytes of a regular file; a symlink, a
// directory or a larger file is refused.
func ReadFile(p string, limit int64) ([]byte, error) {
	info, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &Error{Problem: fmt.Sprintf("%s does not exist", p), Fix: "Check the path"}
		}
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, &Error{Problem: fmt.Sprintf("%s is not a regular file (%s)", p, info.Mode().Type()), Fix: "Point at the file itself, not a link or directory"}
	}
	if info.Size() > limit {
		return nil, &Error{Problem: fmt.Sprintf("%s is %d bytes, more than the %d a request may have", p, info.Size(), limit), Fix: "Check that this is the request zip from `nvflare cert request`"}
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, &Error{Problem: fmt.Sprintf("%s grew past %d bytes while being read", p, limit)}
	}
	return data, nil
}

// ReadRequestZip reads and checks a request zip file.
func ReadRequestZip(p string) (*Request, error) {
	data, err := ReadFile(p, MaxRequestZipBytes)
	if err != nil {
		return nil, err
	}
	r, err := ParseRequestZip(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return r, nil
}

// ParseRequestZip checks a request zip the way approve does, and more
// strictly: the members are exactly request.json, site.yaml and
// <name>.csr at the archive root; request.json, site.yaml and the CSR agree;
// the recorded hashes match; the CSR's signature verifies; nothing holds a
// private key.
func ParseRequestZip(data []byte) (*Request, error) {
	if len(data) > MaxRequestZipBytes {
		return nil, bad("request zip is %d bytes, more than %d", len(data), MaxRequestZipBytes)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, bad("not a readable zip archive (truncated or corrupted?): %v", err)
	}
	if len(zr.File) > 8 {
		return nil, bad("request zip has %d members; a request has exactly request.json, site.yaml and <name>.csr", len(zr.File))
	}
	members := map[string][]byte{}
	for _, f := range zr.File {
		if err := checkMemberName(f, "request zip"); err != nil {
			return nil, err
		}
		if _, dup := members[f.Name]; dup {
			return nil, bad("request zip holds %q twice", f.Name)
		}
		b, err := readMember(f, "request zip")
		if err != nil {
			return nil, err
		}
		members[f.Name] = b
	}
	reqJSON, ok := members["request.json"]
	if !ok {
		return nil, bad("request zip has no request.json")
	}
	siteYAML, ok := members["site.yaml"]
	if !ok {
		return nil, bad("request zip has no site.yaml")
	}

	meta, err := parseRequestJSON(reqJSON)
	if err != nil {
		return nil, err
	}
	r := &Request{
		RequestID: meta.RequestID, Project: meta.Project, Name: meta.Name, Org: meta.Org,
		Kind: meta.Kind, CertType: meta.CertType, CertRole: meta.CertRole, FromZip: true,
	}
	if err := checkIdentity(r); err != nil {
		return nil, err
	}
	csrName := meta.Name + ".csr"
	csrPEM, ok := members[csrName]
	if !ok {
		return nil, bad("request zip has no %s (request.json names participant %q)", csrName, meta.Name)
	}
	if len(members) != 3 {
		var names []string
		for n := range members {
			names = append(names, n)
		}
		return nil, bad("request zip must hold only request.json, site.yaml and %s, has %s", csrName, strings.Join(names, ", "))
	}

	r.CSRPEM = csrPEM

	if got := sha256Hex(siteYAML); got != strings.ToLower(meta.SiteYAMLSHA256) {
		return nil, bad("site.yaml does not match the site_yaml_sha256 recorded in request.json (the request was altered)")
	}
	site, err := parseSiteYAML(siteYAML)
	if err != nil {
		return nil, err
	}
	if err := site.matches(r); err != nil {
		return nil, err
	}
	if r.SiteYAML, err = site.sanitized(siteYAML); err != nil {
		return nil, err
	}

	if got := sha256Hex(csrPEM); got != strings.ToLower(meta.CSRSHA256) {
		return nil, bad("%s does not match the csr_sha256 recorded in request.json (the request was altered)", csrName)
	}
	csr, err := pki.ParseCSRPEM(csrPEM)
	if err != nil {
		return nil, bad("%s: %v", csrName, err)
	}
	r.CSR = csr
	r.CSRSHA256 = sha256Hex(csrPEM)
	if r.PublicKeySHA256, err = pki.KeyFingerprint(csr.PublicKey); err != nil {
		return nil, bad("%s: public key: %v", csrName, err)
	}
	if r.PublicKeySHA256 != strings.ToLower(meta.PublicKeySHA256) {
		return nil, bad("the CSR's public key does not match the public_key_sha256 recorded in request.json")
	}
	if err := checkCSRSubject(r, csr); err != nil {
		return nil, err
	}
	return r, nil
}

// FromCSR checks a bare PEM CSR (what `nvflare cert request` puts in the
// zip as <name>.csr) and completes it with the approver's decisions: the
// project and the certificate type. The CSR names the participant (CN) and
// its organization (O); if it proposes a type (unstructuredName), that must
// be certType.
func FromCSR(csrPEM []byte, projectName, certType string) (*Request, error) {
	if len(csrPEM) > MaxCSRPEMBytes {
		return nil, &Error{Problem: fmt.Sprintf("csr_pem is %d bytes, more than %d", len(csrPEM), MaxCSRPEMBytes), Fix: "Give one PEM CERTIFICATE REQUEST"}
	}
	if containsPrivateKey(csrPEM) {
		return nil, &Error{Problem: "csr_pem holds a private key", Fix: "Give only the CSR; the private key must stay with the site"}
	}
	csr, err := pki.ParseCSRPEM(csrPEM)
	if err != nil {
		return nil, &Error{Problem: err.Error(), Fix: "Give the CSR exactly as the site made it"}
	}
	r := &Request{
		Project: projectName, Name: csr.Subject.CommonName, CertType: certType, CSR: csr, CSRPEM: csrPEM,
		CSRSHA256: sha256Hex(csrPEM),
	}
	if len(csr.Subject.Organization) == 1 {
		r.Org = csr.Subject.Organization[0]
	}
	switch {
	case certType == pki.CertTypeClient:
		r.Kind = KindSite
	case certType == pki.CertTypeServer:
		r.Kind = KindServer
	case pki.IsAdminCertType(certType):
		r.Kind, r.CertRole = KindUser, certType
	default:
		return nil, &Error{Problem: fmt.Sprintf("certificate type %q is not one of client, server, org_admin, lead, member", certType)}
	}
	if r.PublicKeySHA256, err = pki.KeyFingerprint(csr.PublicKey); err != nil {
		return nil, err
	}
	// A request id for the signed zip: stable for one CSR.
	r.RequestID = r.PublicKeySHA256[:32]
	const fixCSR = "Set participant_type/role to what the site asked for, or ask the site for a new CSR"
	if proposed := pki.RoleOfName(csr.Subject); proposed != "" && proposed != certType {
		return nil, &Error{Problem: fmt.Sprintf("the CSR proposes certificate type %q, but %q was configured", proposed, certType), Fix: fixCSR}
	}
	if err := checkIdentity(r); err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, &Error{Problem: e.Problem, Fix: fixCSR}
		}
		return nil, err
	}
	if err := checkCSRSubject(r, csr); err != nil {
		return nil, err
	}
	if r.SiteYAML, err = flatSiteYAML(r); err != nil {
		return nil, err
	}
	return r, nil
}

type requestJSON struct {
	ArtifactType    string  `json:"artifact_type"`
	SchemaVersion   string  `json:"schema_version"`
	RequestID       string  `json:"request_id"`
	CreatedAt       string  `json:"created_at"`
	Project         string  `json:"project"`
	Name            string  `json:"name"`
	Org             string  `json:"org"`
	Kind            string  `json:"kind"`
	CertType        string  `json:"cert_type"`
	CertRoleP       *string `json:"cert_role"`
	CertRole        string  `json:"-"`
	CSRSHA256       string  `json:"csr_sha256"`
	PublicKeySHA256 string  `json:"public_key_sha256"`
	SiteYAMLSHA256  string  `json:"site_yaml_sha256"`
}

func parseRequestJSON(b []byte) (*requestJSON, error) {
	var m requestJSON
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, bad("request.json is not valid request metadata: %v", err)
	}
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"artifact_type", m.ArtifactType}, {"schema_version", m.SchemaVersion}, {"request_id", m.RequestID},
		{"project", m.Project}, {"name", m.Name}, {"org", m.Org}, {"kind", m.Kind}, {"cert_type", m.CertType},
		{"csr_sha256", m.CSRSHA256}, {"public_key_sha256", m.PublicKeySHA256}, {"site_yaml_sha256", m.SiteYAMLSHA256},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, bad("request.json lacks %s", strings.Join(missing, ", "))
	}
	if m.ArtifactType != RequestArtifactType || m.SchemaVersion != ArtifactVersion {
		return nil, bad("request.json is %s version %s; this provider approves %s version %s (NVFlare 2.9)",
			m.ArtifactType, m.SchemaVersion, RequestArtifactType, ArtifactVersion)
	}
	if m.CertRoleP != nil {
		m.CertRole = *m.CertRoleP
	}
	return &m, nil
}

// checkIdentity applies approve's rules to the request's identity fields.
func checkIdentity(r *Request) error {
	if !requestIDRule.MatchString(r.RequestID) {
		return bad("request_id %q is not a UUID hex string", r.RequestID)
	}
	if len(r.Project) > 64 || !safeProjectName.MatchString(r.Project) {
		return bad("project %q is not a valid project name", r.Project)
	}
	if err := project.ValidateOrg(r.Org); err != nil {
		return bad("%v", err)
	}
	switch r.Kind {
	case KindSite:
		if r.CertType != pki.CertTypeClient {
			return bad("request kind %q needs cert_type client, has %q", r.Kind, r.CertType)
		}
	case KindServer:
		if r.CertType != pki.CertTypeServer {
			return bad("request kind %q needs cert_type server, has %q", r.Kind, r.CertType)
		}
	case KindUser:
		if !pki.IsAdminCertType(r.CertType) {
			return bad("request kind user needs cert_type org_admin, lead or member, has %q", r.CertType)
		}
	default:
		return bad("request kind %q is not one of site, server, user", r.Kind)
	}
	if r.Kind == KindUser {
		if r.CertRole != r.CertType && normalizeRole(r.CertRole) != r.CertType {
			return bad("cert_role %q does not match cert_type %q", r.CertRole, r.CertType)
		}
		r.CertRole = r.CertType
	} else if r.CertRole != "" {
		return bad("a %s request carries cert_role %q; only user requests have a role", r.Kind, r.CertRole)
	}
	max := 64
	if r.CertType == pki.CertTypeServer {
		max = 253
	}
	if len(r.Name) > max || !safeCertName.MatchString(r.Name) {
		return bad("participant name %q is not allowed (letters, digits, '.', '_', '@', '-'; at most %d characters)", r.Name, max)
	}
	if err := project.ValidateName(r.ParticipantType(), r.Name); err != nil {
		return bad("%v", err)
	}
	return nil
}

func normalizeRole(role string) string {
	if role == "org-admin" {
		return pki.CertTypeOrgAdmin
	}
	return role
}

// checkCSRSubject ties the CSR to the request: CN, O and proposed type.
func checkCSRSubject(r *Request, csr *x509.CertificateRequest) error {
	wantCN := r.Name
	if r.CertType == pki.CertTypeServer && len(wantCN) > 64 {
		wantCN = wantCN[:64]
	}
	if csr.Subject.CommonName != wantCN {
		return bad("the CSR is for %q, the request for %q", csr.Subject.CommonName, wantCN)
	}
	if len(csr.Subject.Organization) != 1 || csr.Subject.Organization[0] != r.Org {
		return bad("the CSR's organization %v does not match the request's org %q", csr.Subject.Organization, r.Org)
	}
	if r.FromZip {
		if role := pki.RoleOfName(csr.Subject); role != r.CertType {
			return bad("the CSR proposes type %q, the request %q", role, r.CertType)
		}
	}
	return nil
}

func checkMemberName(f *zip.File, what string) error {
	n := f.Name
	switch {
	case n == "" || n == "." || n == "..":
		return bad("%s has a member with an empty or dot name", what)
	case strings.ContainsAny(n, `/\`) || path.Clean(n) != n || strings.HasPrefix(n, "."):
		return bad(what+" member %q is not a plain file name at the archive root (path traversal?)", n)
	case strings.IndexFunc(n, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0:
		return bad(what+" member %q has control characters in its name", n)
	case f.Mode().IsDir() || f.Mode()&fs.ModeSymlink != 0 || !f.Mode().IsRegular():
		return bad(what+" member %q is not a regular file (%s)", n, f.Mode().Type())
	case strings.HasSuffix(strings.ToLower(n), ".key"):
		return &Error{Problem: fmt.Sprintf(what+" holds %q, a private key", n), Fix: "The site must keep its key: send only the zip `nvflare cert request` made"}
	case f.UncompressedSize64 > MaxMemberBytes:
		return bad(what+" member %q is %d bytes, more than %d", n, f.UncompressedSize64, MaxMemberBytes)
	}
	return nil
}

func readMember(f *zip.File, what string) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, bad("cannot open %q in the "+what+": %v", f.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, MaxMemberBytes+1))
	if err != nil {
		// archive/zip reports a CRC mismatch or a short member here.
		return nil, bad("cannot read %q in the "+what+" (truncated or corrupted?): %v", f.Name, err)
	}
	if len(b) > MaxMemberBytes {
		return nil, bad(what+" member %q decompresses past %d bytes", f.Name, MaxMemberBytes)
	}
	if containsPrivateKey(b) {
		return nil, &Error{Problem: fmt.Sprintf(what+" member %q holds a private key", f.Name), Fix: "The site must keep its key: send only the zip `nvflare cert request` made"}
	}
	return b, nil
}

func containsPrivateKey(b []byte) bool {
	for _, m := range privateKeyPEM {
		if bytes.Contains(b, m) {
			return true
		}
	}
	return false
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
