package dashboard

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/flarekit/terraform-provider-flare/internal/approve"
	"github.com/flarekit/terraform-provider-flare/internal/kit"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// Sites that register with a certificate request (issue 13 item 6; not in
// NVFlare's Dashboard): the site runs `nvflare cert request`, keeps its
// private key, and uploads the request zip; the project admin approves the
// site as any other; the site downloads the signed zip (certificate, root
// CA, signed.json signed by the root) and runs `nvflare package`. The
// Dashboard never holds that site's private key, and a PIN kit download
// (which would make one) is refused for it.

// maxRequestZip bounds an uploaded request zip (a CSR and a site.yaml).
const maxRequestZip = 1 << 20

// ClientRequest is a site's certificate request.
type ClientRequest struct {
	ClientID        int64
	RequestZip      []byte
	RequestID       string
	PublicKeySHA256 string
	CertPEM         string // "" until the first signed download issues it
	CreatedAt       string
}

// CreateClientWithRequest inserts the site and its request in one
// transaction; ErrConflict for a taken name.
func (s *Store) CreateClientWithRequest(c *Client, req *ClientRequest) (*Client, error) {
	ctx := context.Background()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	if _, err := tx.Exec(s.db.rebind(`INSERT INTO organization(name) VALUES (?) ON CONFLICT DO NOTHING`), c.Organization); err != nil {
		return nil, err
	}
	t := now()
	var id int64
	err = tx.QueryRow(s.db.rebind(`INSERT INTO client(name, description, organization, creator_id, capacity, props, created_at, updated_at)
		VALUES (?,?,?,?,?,?,?,?) RETURNING id`), c.Name, c.Description, c.Organization, c.CreatorID, c.Capacity, c.Props, t, t).Scan(&id)
	if isUnique(err) {
		return nil, ErrConflict
	}
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(s.db.rebind(`INSERT INTO client_request(client_id, request_zip, request_id, public_key_sha256, created_at) VALUES (?,?,?,?,?)`),
		id, base64.StdEncoding.EncodeToString(req.RequestZip), req.RequestID, req.PublicKeySHA256, t); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return s.Client(id)
}

// ClientRequest reads a site's request; ErrNotFound for a site that
// registered without one.
func (s *Store) ClientRequest(clientID int64) (*ClientRequest, error) {
	r := &ClientRequest{ClientID: clientID}
	var zip64 string
	err := s.db.QueryRow(`SELECT request_zip, request_id, public_key_sha256, cert, created_at FROM client_request WHERE client_id = ?`, clientID).
		Scan(&zip64, &r.RequestID, &r.PublicKeySHA256, &r.CertPEM, &r.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if r.RequestZip, err = base64.StdEncoding.DecodeString(zip64); err != nil {
		return nil, fmt.Errorf("stored request of client %d: %w", clientID, err)
	}
	return r, nil
}

// RequestClientIDs is the set of sites registered with a request.
func (s *Store) RequestClientIDs() (map[int64]bool, error) {
	rows, err := s.db.Query(`SELECT client_id FROM client_request`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, rows.Err()
}

// SetRequestCert records the certificate issued for a request, unless one
// was recorded first (two replicas, two downloads at once): it returns the
// certificate that is recorded.
func (s *Store) SetRequestCert(clientID int64, certPEM string) (string, error) {
	if _, err := s.db.Exec(`UPDATE client_request SET cert = ? WHERE client_id = ? AND cert = ''`, certPEM, clientID); err != nil {
		return "", err
	}
	var got string
	err := s.db.QueryRow(`SELECT cert FROM client_request WHERE client_id = ?`, clientID).Scan(&got)
	return got, err
}

// requestError is a refused upload: 422 with approve's problem and fix.
func requestError(err error) *blobError {
	return &blobError{422, obj{"status": "invalid request zip: " + err.Error()}}
}

// registerRequest checks an uploaded request zip and registers its site
// for the caller (any logged-in user, as POST /clients). The project must
// be frozen: the request names the project, and its name (short_name) is
// fixed only then. capacity and description are optional, as POST
// /clients takes them.
func (s *Server) registerRequest(c *Claims, data []byte, description, capacity string) (*Client, *approve.Request, error) {
	creator, err := s.Store.UserByEmail(c.Sub)
	if errors.Is(err, ErrNotFound) {
		return nil, nil, &blobError{401, obj{"status": "unauthenticated"}}
	}
	if err != nil {
		return nil, nil, err
	}
	req, err := approve.ParseRequestZip(data)
	if err != nil {
		return nil, nil, requestError(err)
	}
	if req.CertType != pki.CertTypeClient {
		return nil, nil, &blobError{422, obj{"status": fmt.Sprintf("invalid request zip: it requests a %s certificate; the Dashboard registers sites (type: client) by request", req.CertType)}}
	}
	proj, srv, err := s.frozenProject()
	if err != nil {
		return nil, nil, err
	}
	if req.Project != proj.ShortName {
		return nil, nil, &blobError{422, obj{"status": fmt.Sprintf("invalid request zip: it is for project %q, this Dashboard's project is %q (nvflare cert request --project %s)", req.Project, proj.ShortName, proj.ShortName)}}
	}
	if req.Name == srv.Name || req.Name == srv.DefaultHost {
		return nil, nil, &blobError{422, obj{"status": fmt.Sprintf("invalid request zip: %q is the server's name", req.Name)}}
	}
	cl, err := s.Store.CreateClientWithRequest(&Client{Name: req.Name, Organization: req.Org, CreatorID: creator.ID,
		Description: description, Capacity: capacity},
		&ClientRequest{RequestZip: data, RequestID: req.RequestID, PublicKeySHA256: req.PublicKeySHA256})
	if errors.Is(err, ErrConflict) {
		return nil, nil, &blobError{409, obj{"status": "conflicting"}}
	}
	if err != nil {
		return nil, nil, err
	}
	s.audit(c.Sub, "register_client_request", cl.Name, "request "+req.RequestID+", public key sha256 "+req.PublicKeySHA256)
	return cl, req, nil
}

// signedZip returns the signed zip of an approved site that registered
// with a request: the caller must be its creator or a project admin. The
// certificate is issued at the first download and kept, so every later
// download carries the same one. Fingerprint is the root's, for `nvflare
// package --fingerprint`.
func (s *Server) signedZip(id int64, c *Claims) (name string, zip []byte, fingerprint string, err error) {
	cl, err := s.Store.Client(id)
	if errors.Is(err, ErrNotFound) {
		return "", nil, "", &blobError{404, obj{"status": "not found"}}
	}
	if err != nil {
		return "", nil, "", err
	}
	cr, admin, err := s.checkRole(cl.CreatorID, c)
	if err != nil {
		return "", nil, "", err
	}
	if !cr && !admin {
		return "", nil, "", &blobError{403, obj{"status": "unauthorized"}}
	}
	stored, err := s.Store.ClientRequest(cl.ID)
	if errors.Is(err, ErrNotFound) {
		return "", nil, "", &blobError{409, obj{"status": "this site did not register with a certificate request: download its kit (POST .../clients/<id>/blob)"}}
	}
	if err != nil {
		return "", nil, "", err
	}
	if cl.ApprovalState < 100 {
		return "", nil, "", &blobError{409, obj{"status": "not approved yet"}}
	}
	req, err := approve.ParseRequestZip(stored.RequestZip)
	if err != nil {
		return "", nil, "", err
	}
	proj, srv, err := s.frozenProject()
	if err != nil {
		return "", nil, "", err
	}
	ca, err := s.projectCA(proj)
	if err != nil {
		return "", nil, "", err
	}
	opt := approve.Options{CA: ca, Now: s.now(), ValidDays: certDays,
		Server: approve.Endpoint{Scheme: kit.Scheme, ConnectionSecurity: kit.ConnectionSecurity,
			Host: srv.DefaultHost, FedLearnPort: srv.FedLearnPort, AdminPort: srv.AdminPort}}
	var a *approve.Approval
	if stored.CertPEM == "" {
		if a, err = approve.Approve(req, opt); err != nil {
			return "", nil, "", requestError(err)
		}
		recorded, err := s.Store.SetRequestCert(cl.ID, string(a.CertPEM))
		if err != nil {
			return "", nil, "", err
		}
		if recorded != string(a.CertPEM) {
			stored.CertPEM = recorded // another download issued it first
			a = nil
		} else {
			s.audit(c.Sub, "issue_client_certificate", cl.Name, "serial 0x"+a.Cert.SerialNumber.Text(16))
		}
	}
	if a == nil {
		cert, err := pki.ParseCertPEM([]byte(stored.CertPEM))
		if err != nil {
			return "", nil, "", err
		}
		if a, err = approve.Package(req, cert, opt); err != nil {
			return "", nil, "", err
		}
	}
	if err := s.Store.CountClientDownload(cl.ID); err != nil {
		return "", nil, "", err
	}
	s.audit(c.Sub, "download_signed_zip", cl.Name, "")
	return cl.Name, a.Zip, a.RootFingerprint, nil
}

// requestInfo is GET .../clients/{id}/request: what the Dashboard holds of
// a site's request (never a private key: it has none).
func (s *Server) requestInfo(id int64, c *Claims) (obj, error) {
	cl, err := s.Store.Client(id)
	if errors.Is(err, ErrNotFound) {
		return nil, &blobError{404, obj{"status": "not found"}}
	}
	if err != nil {
		return nil, err
	}
	cr, admin, err := s.checkRole(cl.CreatorID, c)
	if err != nil {
		return nil, err
	}
	if !cr && !admin {
		return nil, &blobError{403, obj{"status": "unauthorized"}}
	}
	stored, err := s.Store.ClientRequest(cl.ID)
	if errors.Is(err, ErrNotFound) {
		return nil, &blobError{404, obj{"status": "this site did not register with a certificate request"}}
	}
	if err != nil {
		return nil, err
	}
	info := obj{"request_id": stored.RequestID, "public_key_sha256": stored.PublicKeySHA256,
		"created_at": stored.CreatedAt, "certificate_issued": stored.CertPEM != ""}
	if stored.CertPEM != "" {
		if cert, err := pki.ParseCertPEM([]byte(stored.CertPEM)); err == nil {
			info["certificate_serial"] = "0x" + cert.SerialNumber.Text(16)
			info["certificate_not_after"] = cert.NotAfter.UTC().Format("2006-01-02T15:04:05Z")
		}
	}
	if proj, err := s.Store.Project(); err == nil && proj.RootCert != "" {
		if root, err := pki.ParseCertPEM([]byte(proj.RootCert)); err == nil {
			info["rootca_fingerprint_sha256"] = approve.Fingerprint(root)
		}
	}
	return ok(obj{"client": cl.JSON(), "request": info}), nil
}

func (s *Server) writeErr(w http.ResponseWriter, err error) {
	var be *blobError
	if errors.As(err, &be) {
		writeJSON(w, be.status, be.body)
		return
	}
	s.fail(w, err)
}

// postClientRequest is POST .../clients/request: the body is the request
// zip itself (any Content-Type but JSON), or multipart/form-data with the
// zip in the field "request_zip" (and optional "description").
func (s *Server) postClientRequest(w http.ResponseWriter, r *http.Request, c *Claims) {
	var data []byte
	var err error
	desc := ""
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		r.Body = http.MaxBytesReader(w, r.Body, maxRequestZip+64<<10)
		f, _, ferr := r.FormFile("request_zip")
		if ferr != nil {
			writeJSON(w, 400, obj{"status": "bad request: no request_zip file"})
			return
		}
		defer f.Close()
		data, err = io.ReadAll(io.LimitReader(f, maxRequestZip+1))
		desc = r.FormValue("description")
	} else {
		data, err = io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestZip+1))
	}
	if err != nil || len(data) == 0 || len(data) > maxRequestZip {
		writeJSON(w, 400, obj{"status": fmt.Sprintf("bad request: the body must be the request zip (at most %d bytes)", maxRequestZip)})
		return
	}
	cl, req, err := s.registerRequest(c, data, desc, "")
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, 201, ok(obj{"client": cl.JSON(), "request": obj{"request_id": req.RequestID, "public_key_sha256": req.PublicKeySHA256}}))
}

func (s *Server) getClientRequest(w http.ResponseWriter, r *http.Request, c *Claims) {
	info, err := s.requestInfo(pathID(r), c)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, 200, info)
}

func (s *Server) getSignedZip(w http.ResponseWriter, r *http.Request, c *Claims) {
	name, data, fp, err := s.signedZip(pathID(r), c)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, approve.SignedZipName(name)))
	w.Header().Set("X-Rootca-Fingerprint-Sha256", fp)
	w.WriteHeader(200)
	_, _ = w.Write(data)
}
