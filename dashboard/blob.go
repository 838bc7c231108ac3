package dashboard

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/kit"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/project"
)

// Blob downloads: a participant's startup kit, built by internal/kit (the
// provider's builder) for the project's NVFlare line, zipped under the
// caller's PIN by Info-ZIP's `zip -P`, as NVFlare's Dashboard does.

// certDays is the validity of the root and of each leaf, NVFlare's default.
const certDays = 360

// Ports of the server in Dashboard kits: NVFlare's Dashboard uses 8002 for
// both unless the project's server_props set them.
const dashboardPort = 8002

var pinPattern = regexp.MustCompile(`^[A-Za-z0-9]+$`)

// projectLine is the NVFlare release line of the project's kits:
// project_props.nvflare_version ("2.7", "2.8", "2.9"), else the newest.
func projectLine(p *Project) (*kit.Line, error) {
	var props struct {
		Version string `json:"nvflare_version"`
	}
	if p.ProjectProps != "" {
		_ = json.Unmarshal([]byte(p.ProjectProps), &props)
	}
	return kit.LookupLine(props.Version)
}

// makeRoot creates the project's root CA at freeze, as NVFlare does. The key
// is kept in the database (0600), sealed when a passphrase is set.
func makeRoot(p *Project, at time.Time, passphrase string) error {
	line, err := projectLine(p)
	if err != nil {
		return err
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return err
	}
	cert, err := pki.NewRootCA(key, p.ShortName, pki.ValidityFor(at, certDays), line.Certs)
	if err != nil {
		return err
	}
	sealed, err := sealRootKey(pki.KeyPEM(key), passphrase)
	if err != nil {
		return err
	}
	p.RootCert, p.RootKey = string(pki.CertPEM(cert)), sealed
	return nil
}

// projectCA is the frozen project's root: its certificate and a signer for
// its key (kept in the database, sealed under the passphrase when one is
// set). A sealed key without the right passphrase is a 503 *blobError.
func (s *Server) projectCA(proj *Project) (pki.CA, error) {
	rootCert, err := pki.ParseCertPEM([]byte(proj.RootCert))
	if err != nil {
		return pki.CA{}, err
	}
	if strings.HasPrefix(proj.RootKey, vaultRootPrefix) {
		return s.vaultProjectCA(rootCert, proj.RootKey)
	}
	keyPEM, err := openRootKey(proj.RootKey, s.Passphrase)
	if errors.Is(err, ErrRootKeyLocked) {
		return pki.CA{}, &blobError{503, obj{"status": err.Error()}}
	}
	if err != nil {
		return pki.CA{}, err
	}
	rootKey, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return pki.CA{}, err
	}
	return pki.CA{Cert: rootCert, Signer: rootKey}, nil
}

// blobError is a refused download: status and body.
type blobError struct {
	status int
	body   obj
}

func (e *blobError) Error() string { return fmt.Sprint(e.body["status"]) }

// buildKit issues a fresh key and certificate for p (as NVFlare does on
// every download; the key from the pool of pre-generated keys when one is
// ready, used for this kit only) and returns the kit's encrypted zip.
func (s *Server) buildKit(p project.Participant, proj *Project, server project.Participant, pin string) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, &blobError{422, obj{"status": "invalid participant: " + err.Error()}}
	}
	line, err := projectLine(proj)
	if err != nil {
		return nil, &blobError{422, obj{"status": err.Error()}}
	}
	ca, err := s.projectCA(proj)
	if err != nil {
		return nil, err
	}
	key, err := s.participantKey()
	if err != nil {
		return nil, err
	}
	names := []string{p.Name}
	if p.Type == project.TypeServer && p.DefaultHost != "" && p.DefaultHost != p.Name {
		names = append(names, p.DefaultHost)
	}
	cert, err := ca.Issue(pki.LeafRequest{
		Subject:   pki.Subject{CommonName: p.Name, Organization: p.Org, Role: p.CertRole()},
		PublicKey: &key.PublicKey, DNSNames: names,
		Validity: pki.ValidityFor(s.now(), certDays), Profile: line.Certs,
	})
	if err != nil {
		return nil, err
	}
	k, err := kit.Build(kit.Input{Project: proj.ShortName, Participant: p, Server: server, Line: line,
		RootCAPEM: []byte(proj.RootCert), CertPEM: pki.CertPEM(cert), KeyPEM: pki.KeyPEM(key), Signer: ca.Signer})
	if err != nil {
		return nil, &blobError{422, obj{"status": "cannot build the kit: " + err.Error()}}
	}
	entries := make([]zipEntry, 0, len(k.Dirs)+len(k.Files))
	for _, d := range k.Dirs {
		entries = append(entries, zipEntry{Name: d + "/"})
	}
	for _, f := range k.Files {
		entries = append(entries, zipEntry{Name: f.Path, Mode: f.Mode, Data: f.Data})
	}
	return writePINZip(entries, pin)
}

// serverParticipant is the project's server as NVFlare's Dashboard
// provisions it: named project.server1, of the project admin's org.
func (s *Server) serverParticipant(proj *Project) (project.Participant, error) {
	admin, err := s.Store.User(1)
	if err != nil {
		return project.Participant{}, err
	}
	srv := project.Participant{Type: project.TypeServer, Name: proj.Server1, Org: admin.Organization,
		FedLearnPort: dashboardPort, AdminPort: dashboardPort, DefaultHost: proj.Server1}
	if proj.ServerProps != "" {
		var props struct {
			FedLearnPort int      `json:"fed_learn_port"`
			AdminPort    int      `json:"admin_port"`
			HostNames    []string `json:"host_names"`
			DefaultHost  string   `json:"default_host"`
		}
		if json.Unmarshal([]byte(proj.ServerProps), &props) == nil {
			if props.FedLearnPort != 0 {
				srv.FedLearnPort, srv.AdminPort = props.FedLearnPort, props.FedLearnPort
			}
			if props.AdminPort != 0 {
				srv.AdminPort = props.AdminPort
			}
			if props.DefaultHost != "" {
				srv.DefaultHost = props.DefaultHost
			}
			srv.HostNames = props.HostNames
		}
	}
	return srv, nil
}

// pinReader yields the download PIN, or a *blobError (bad body or PIN).
type pinReader func() (string, error)

// apiPIN reads {"pin"} from a JSON body. NVFlare answers a bad PIN with
// HTTP 500, ours with 422.
func apiPIN(r *http.Request) pinReader {
	return func() (string, error) {
		b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		var m obj
		if err == nil {
			err = json.Unmarshal(b, &m)
		}
		if err != nil || m == nil {
			return "", &blobError{400, obj{"status": "bad request"}}
		}
		pin, _ := m["pin"].(string)
		return checkPIN(pin)
	}
}

func checkPIN(pin string) (string, error) {
	if !pinPattern.MatchString(pin) {
		return "", &blobError{422, obj{"status": "invalid pin: letters and digits only"}}
	}
	return pin, nil
}

// frozenProject reads the frozen project and its server; NVFlare answers an
// unfrozen project with HTTP 500, ours with 409.
func (s *Server) frozenProject() (*Project, project.Participant, error) {
	proj, err := s.Store.Project()
	if err != nil {
		return nil, project.Participant{}, err
	}
	if !proj.Frozen || proj.RootCert == "" {
		return nil, project.Participant{}, &blobError{409, obj{"status": "project is not frozen"}}
	}
	srv, err := s.serverParticipant(proj)
	return proj, srv, err
}

// Kit kinds of downloads.
const (
	kitServer = "server"
	kitClient = "client"
	kitAdmin  = "admin"
)

// kitDownload is the one path of every kit download (API and web UI):
// it checks who may download what, in NVFlare's order (the row, its
// approval, the caller, then the PIN and the project), builds the kit,
// counts the download and writes the audit record. It returns the file
// name (without .zip) and the encrypted zip, or a *blobError.
func (s *Server) kitDownload(kind string, id int64, c *Claims, readPIN pinReader) (string, []byte, error) {
	var (
		p    project.Participant
		save func() error
	)
	switch kind {
	case kitServer:
		if c.Role != "project_admin" {
			return "", nil, &blobError{403, obj{"status": "unauthorized"}}
		}
	case kitClient:
		cl, err := s.Store.Client(id)
		if errors.Is(err, ErrNotFound) {
			return "", nil, &blobError{404, obj{"status": "error"}} // NVFlare: 500
		}
		if err != nil {
			return "", nil, err
		}
		if cl.ApprovalState < 100 {
			return "", nil, &blobError{200, obj{"status": "not approved yet"}}
		}
		cr, admin, err := s.checkRole(cl.CreatorID, c)
		if err != nil {
			return "", nil, err
		}
		if !cr && !admin {
			return "", nil, &blobError{403, obj{"status": "unauthorized"}}
		}
		if _, err := s.Store.ClientRequest(cl.ID); err == nil {
			// Its key is the site's; a kit would be a new key the
			// Dashboard made.
			return "", nil, &blobError{409, obj{"status": "this site registered with a certificate request: download its signed zip (GET .../clients/<id>/signed) and run nvflare package"}}
		} else if !errors.Is(err, ErrNotFound) {
			return "", nil, err
		}
		p = project.Participant{Type: project.TypeClient, Name: cl.Name, Org: cl.Organization}
		if cl.Capacity != "" {
			var capacity struct {
				GPUs float64 `json:"num_of_gpus"`
				Mem  float64 `json:"mem_per_gpu_in_GiB"`
			}
			_ = json.Unmarshal([]byte(cl.Capacity), &capacity)
			p.NumGPUs, p.MemPerGPUInGiB = int(capacity.GPUs), capacity.Mem
		}
		save = func() error { return s.Store.CountClientDownload(cl.ID) }
	case kitAdmin:
		u, err := s.Store.User(id)
		if errors.Is(err, ErrNotFound) {
			return "", nil, &blobError{404, obj{"status": "error"}} // NVFlare: 500
		}
		if err != nil {
			return "", nil, err
		}
		if u.ApprovalState < 100 {
			return "", nil, &blobError{200, obj{"status": "not approved yet"}}
		}
		if u.Email != c.Sub && c.Role != "project_admin" {
			return "", nil, &blobError{403, obj{"status": "unauthorized"}}
		}
		p = project.Participant{Type: project.TypeAdmin, Name: u.Email, Org: u.Organization, Role: u.Role}
		save = func() error { return s.Store.CountUserDownload(u.ID) }
	default:
		return "", nil, fmt.Errorf("unknown kit kind %q", kind)
	}
	pin, err := readPIN()
	if err != nil {
		return "", nil, err
	}
	proj, srv, err := s.frozenProject()
	if err != nil {
		return "", nil, err
	}
	if kind == kitServer {
		p = srv
	}
	data, err := s.buildKit(p, proj, srv, pin)
	if err != nil {
		return "", nil, err
	}
	if save != nil {
		if err := save(); err != nil {
			return "", nil, err
		}
	}
	s.audit(c.Sub, "download_"+kind+"_kit", p.Name, "")
	return p.Name, data, nil
}

func (s *Server) sendKit(w http.ResponseWriter, name string, data []byte, err error) {
	var be *blobError
	if errors.As(err, &be) {
		writeJSON(w, be.status, be.body)
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "zip")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s.zip"`, name))
	w.WriteHeader(200)
	_, _ = w.Write(data)
}

func (s *Server) blobHandler(kind string) authedHandler {
	return func(w http.ResponseWriter, r *http.Request, c *Claims) {
		name, data, err := s.kitDownload(kind, pathID(r), c, apiPIN(r))
		s.sendKit(w, name, data, err)
	}
}
