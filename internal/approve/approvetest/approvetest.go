// Package approvetest makes request zips the way NVFlare 2.9's
// `nvflare cert request` does, in Go, so approval tests run without Python.
package approvetest

import (
	"archive/zip"
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"

	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

var oidUnstructuredName = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 2}

// Request is the three members of a request zip, editable before Zip.
type Request struct {
	Name     string
	Meta     map[string]any // request.json
	SiteYAML []byte
	CSRPEM   []byte
	Key      *rsa.PrivateKey // stays with the "site"; never put into the zip
	// Extra members to add (tamper tests).
	Extra map[string][]byte
	// CSRMember overrides the CSR's member name (default <name>.csr).
	CSRMember string
}

// New makes a request for a participant of type client, server or admin
// (role org_admin, lead or member for admins).
func New(project, name, org, typ, role string) (*Request, error) {
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	certType, kind := typ, "site"
	switch typ {
	case "server":
		kind = "server"
	case "admin":
		certType, kind = role, "user"
	}
	csrPEM, err := CSR(key, name, org, certType)
	if err != nil {
		return nil, err
	}
	site := fmt.Sprintf("name: %s\nparticipants:\n- name: %s\n  org: %s\n  type: %s\n", project, name, org, typ)
	if typ == "admin" {
		site += "  role: " + role + "\n"
	}
	var certRole any
	if typ == "admin" {
		certRole = role
	}
	r := &Request{
		Name: name, SiteYAML: []byte(site), CSRPEM: csrPEM, Key: key,
		Meta: map[string]any{
			"artifact_type": "nvflare.cert.request", "schema_version": "1",
			"request_id": randomHex(16), "created_at": "2026-01-01T00:00:00Z",
			"project": project, "name": name, "org": org, "kind": kind, "cert_type": certType, "cert_role": certRole,
		},
	}
	return r, r.Rehash()
}

// Rehash records the current members' hashes in request.json, as a
// consistent (if perhaps wrong) request would.
func (r *Request) Rehash() error {
	r.Meta["csr_sha256"] = sum(r.CSRPEM)
	r.Meta["site_yaml_sha256"] = sum(r.SiteYAML)
	block, _ := pem.Decode(r.CSRPEM)
	if block == nil {
		return nil
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil
	}
	fp, err := pki.KeyFingerprint(csr.PublicKey)
	if err != nil {
		return err
	}
	r.Meta["public_key_sha256"] = fp
	return nil
}

// Zip writes the request zip: request.json, site.yaml, <name>.csr.
func (r *Request) Zip() ([]byte, error) {
	reqJSON, err := json.MarshalIndent(r.Meta, "", "  ")
	if err != nil {
		return nil, err
	}
	csrMember := r.CSRMember
	if csrMember == "" {
		csrMember = r.Name + ".csr"
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name string, data []byte) error {
		h := &zip.FileHeader{Name: name, Method: zip.Deflate}
		h.SetMode(0o600)
		w, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	for _, m := range []struct {
		n string
		d []byte
	}{{"request.json", reqJSON}, {"site.yaml", r.SiteYAML}, {csrMember, r.CSRPEM}} {
		if err := add(m.n, m.d); err != nil {
			return nil, err
		}
	}
	for n, d := range r.Extra {
		if err := add(n, d); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// CSR makes a PEM CSR as NVFlare does: CN, O and the proposed type in
// unstructuredName, signed SHA256WithRSA.
func CSR(key *rsa.PrivateKey, name, org, certType string) ([]byte, error) {
	subj := pkix.Name{CommonName: name}
	if org != "" {
		subj.Organization = []string{org}
	}
	if certType != "" {
		subj.ExtraNames = []pkix.AttributeTypeAndValue{{Type: oidUnstructuredName, Value: certType}}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subj, SignatureAlgorithm: x509.SHA256WithRSA}, key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
