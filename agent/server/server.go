// Package server is flare-agent's HTTPS API: mutual TLS with the project's
// root CA, authorization by the client certificate's NVFlare role and org,
// JSON endpoints, the OpenAPI document, Prometheus metrics and a small HTML
// status page.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/config"
	"github.com/flarekit/terraform-provider-flare/agent/launch"
	"github.com/flarekit/terraform-provider-flare/agent/manager"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// Version is reported by /healthz; the build may set it with -ldflags.
var Version = "dev"

// Roles that may launch and stop CVMs.
const (
	RoleProjectAdmin = "project_admin"
	RoleOrgAdmin     = "org_admin"
)

// Identity is the agent's TLS identity from the site's startup kit.
type Identity struct {
	Cert tls.Certificate
	Leaf *x509.Certificate
	Root *x509.Certificate
	Pool *x509.CertPool
	// Site is the leaf's CN, Org its O.
	Site, Org string
}

// LoadIdentity reads startup/server.crt|key (or client.crt|key) and
// startup/rootCA.pem from the site's startup kit.
func LoadIdentity(kitDir string) (*Identity, error) {
	startup := filepath.Join(kitDir, "startup")
	rootPEM, err := os.ReadFile(filepath.Join(startup, "rootCA.pem"))
	if err != nil {
		return nil, fmt.Errorf("site startup kit %s: %w", kitDir, err)
	}
	root, err := pki.ParseCertPEM(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("site startup kit: rootCA.pem: %w", err)
	}
	var cert tls.Certificate
	var errs []error
	for _, base := range []string{"server", "client"} {
		cert, err = tls.LoadX509KeyPair(filepath.Join(startup, base+".crt"), filepath.Join(startup, base+".key"))
		if err == nil {
			break
		}
		errs = append(errs, err)
	}
	if err != nil {
		return nil, fmt.Errorf("site startup kit %s: no server.crt/server.key or client.crt/client.key: %w", kitDir, errors.Join(errs...))
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("site startup kit: %s is not signed by its rootCA.pem: %w", leaf.Subject.CommonName, err)
	}
	id := &Identity{Cert: cert, Leaf: leaf, Root: root, Pool: pool, Site: leaf.Subject.CommonName}
	if len(leaf.Subject.Organization) > 0 {
		id.Org = leaf.Subject.Organization[0]
	}
	return id, nil
}

// TLSConfig requires a client certificate that chains to the project root.
func (id *Identity) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{id.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    id.Pool,
	}
}

// Server serves the API.
type Server struct {
	cfg      *config.Config
	id       *Identity
	org      string
	mgr      *manager.Manager
	log      *slog.Logger
	gatherer prometheus.Gatherer
	openapi  []byte
	started  time.Time
	// httpReqs counts requests by route and code.
	httpReqs *prometheus.CounterVec
}

// New builds the server. reg must be the registry the manager's metrics
// are on; openapi is the OpenAPI document to serve.
func New(cfg *config.Config, id *Identity, mgr *manager.Manager, log *slog.Logger, reg *prometheus.Registry, openapi []byte) *Server {
	s := &Server{cfg: cfg, id: id, mgr: mgr, log: log, gatherer: reg, openapi: openapi, started: time.Now()}
	s.org = cfg.Org
	if s.org == "" {
		s.org = id.Org
	}
	s.httpReqs = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "flare_agent", Name: "http_requests_total",
		Help: "API requests by route and status code."}, []string{"route", "code"})
	reg.MustRegister(s.httpReqs)
	return s
}

// Principal is the caller as its certificate says.
type Principal struct {
	CN, Org, Role string
}

// CanManage: project_admin, or org_admin of the site's org.
func (s *Server) CanManage(p Principal) bool {
	return p.Role == RoleProjectAdmin || (p.Role == RoleOrgAdmin && s.org != "" && p.Org == s.org)
}

func principalOf(r *http.Request) (Principal, bool) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return Principal{}, false
	}
	c := r.TLS.VerifiedChains[0][0]
	p := Principal{CN: c.Subject.CommonName, Role: pki.RoleOf(c)}
	if len(c.Subject.Organization) > 0 {
		p.Org = c.Subject.Organization[0]
	}
	return p, true
}

type ctxKey struct{}

// Handler is the full mTLS API. Every route needs a verified client
// certificate; launch, upload and stop need a managing role.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	read := func(route string, h http.HandlerFunc) { mux.Handle(route, s.wrap(route, false, h)) }
	write := func(route string, h http.HandlerFunc) { mux.Handle(route, s.wrap(route, true, h)) }
	read("GET /healthz", s.health)
	read("GET /v1/cvms", s.list)
	read("GET /v1/cvms/{id}", s.get)
	write("POST /v1/cvms", s.launch)
	write("POST /v1/cvms/upload", s.upload)
	write("DELETE /v1/cvms/{id}", s.stop)
	read("POST /v1/cvms/{id}/attestation", s.attest)
	read("GET /v1/cvms/{id}/logs", s.logs)
	read("GET /openapi.yaml", s.openAPI)
	mux.Handle("GET /metrics", s.wrap("GET /metrics", false, promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}).ServeHTTP))
	read("GET /{$}", s.statusPage)
	mux.Handle("/", s.wrap("other", false, func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	}))
	return mux
}

// StatusHandler serves only the read-only HTML status page, without
// authentication: for a local plain-HTTP listener (status_listen) or tests.
func (s *Server) StatusHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.statusPage)
	return mux
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(c int) { r.code = c; r.ResponseWriter.WriteHeader(c) }

func (s *Server) wrap(route string, manage bool, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		t0 := time.Now()
		defer func() {
			s.httpReqs.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
			s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "code", rec.code, "ms", time.Since(t0).Milliseconds())
		}()
		p, ok := principalOf(r)
		if !ok {
			writeErr(rec, http.StatusUnauthorized, "a client certificate from the project's CA is required")
			return
		}
		if manage && !s.CanManage(p) {
			s.log.Warn("forbidden", "method", r.Method, "path", r.URL.Path, "cn", p.CN, "role", p.Role, "org", p.Org)
			writeErr(rec, http.StatusForbidden, fmt.Sprintf("%s (role %q, org %q) may not %s: launching and stopping CVMs needs role project_admin, or org_admin of org %q",
				p.CN, p.Role, p.Org, r.Method+" "+r.URL.Path, s.org))
			return
		}
		h(rec, r.WithContext(context.WithValue(r.Context(), ctxKey{}, p)))
	})
}

func caller(r *http.Request) Principal {
	p, _ := r.Context().Value(ctxKey{}).(Principal)
	return p
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Error: msg})
}

// writeMgrErr maps manager errors to status codes.
func writeMgrErr(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, manager.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, manager.ErrBadKit):
		code = http.StatusBadRequest
	case errors.Is(err, manager.ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, manager.ErrUnavailable):
		code = http.StatusServiceUnavailable
	}
	msg := err.Error()
	for _, e := range []error{manager.ErrNotFound, manager.ErrBadKit, manager.ErrConflict, manager.ErrUnavailable} {
		msg = strings.TrimPrefix(msg, e.Error()+": ")
	}
	writeErr(w, code, msg)
}

func (s *Server) Health() api.Health {
	mode, _ := s.mgr.Mode()
	h := s.mgr.Host()
	n := 0
	for _, c := range s.mgr.List() {
		if api.Active(c.State) {
			n++
		}
	}
	return api.Health{Status: "ok", Version: Version, Site: s.id.Site, Org: s.org, Mode: s.cfg.Mode, EffectiveMode: mode,
		SNP: h.SNP, QEMU: h.QEMU, QEMUVersion: h.QEMUVersionText, KVM: h.KVM, CVMs: n, Time: time.Now().UTC()}
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, s.Health()) }

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, api.CVMList{CVMs: s.mgr.List()})
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	v, err := s.mgr.Get(r.PathValue("id"))
	if err != nil {
		writeMgrErr(w, err)
		return
	}
	writeJSON(w, 200, v)
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeErr(w, http.StatusBadRequest, "request body: "+err.Error())
		return false
	}
	return true
}

func (s *Server) launch(w http.ResponseWriter, r *http.Request) {
	var req api.LaunchRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	dir, err := s.mgr.CheckKitDir(req.KitDir)
	if err != nil {
		writeMgrErr(w, err)
		return
	}
	v, err := s.mgr.Launch(r.Context(), dir, caller(r).CN, false, false)
	if err != nil {
		writeMgrErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	if err := os.MkdirAll(s.mgr.KitsDir(), 0o700); err != nil {
		writeErr(w, 500, err.Error())
		return
	}
	dest, err := os.MkdirTemp(s.mgr.KitsDir(), "upload-")
	if err != nil {
		writeErr(w, 500, err.Error())
		return
	}
	os.Remove(dest) // Unpack creates it
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadBytes)
	kitDir, _, err := launch.Unpack(body, dest, s.cfg.MaxUploadBytes)
	if err != nil {
		os.RemoveAll(dest)
		writeErr(w, http.StatusBadRequest, "uploaded kit rejected: "+err.Error())
		return
	}
	v, err := s.mgr.Launch(r.Context(), kitDir, caller(r).CN, false, true) // files were just verified by Unpack
	if err != nil {
		if v.ID == "" {
			os.RemoveAll(dest)
		}
		writeMgrErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StopTimeout.D()+45*time.Second)
	defer cancel()
	v, err := s.mgr.Stop(ctx, r.PathValue("id"))
	if err != nil {
		writeMgrErr(w, err)
		return
	}
	s.log.Info("CVM stop requested", "cvm", v.ID, "by", caller(r).CN, "state", v.State)
	writeJSON(w, 200, v)
}

func (s *Server) attest(w http.ResponseWriter, r *http.Request) {
	var req api.AttestRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	v, err := s.mgr.Attest(r.Context(), r.PathValue("id"), req.Nonce)
	if err != nil {
		writeMgrErr(w, err)
		return
	}
	writeJSON(w, 200, v)
}

// Log tail bounds.
const (
	defaultTail = 100
	maxTail     = 10000
	maxLogRead  = 4 << 20
)

func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	tail := defaultTail
	if t := r.URL.Query().Get("tail"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 1 || n > maxTail {
			writeErr(w, http.StatusBadRequest, fmt.Sprintf("tail must be 1 to %d", maxTail))
			return
		}
		tail = n
	}
	p, err := s.mgr.ConsoleLog(id)
	if err != nil {
		writeMgrErr(w, err)
		return
	}
	lines, truncated, err := TailFile(p, tail, maxLogRead)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		writeErr(w, 500, err.Error())
		return
	}
	writeJSON(w, 200, api.Logs{ID: id, Lines: lines, Truncated: truncated})
}

// TailFile returns the last n lines of p, reading at most max bytes from
// its end; carriage returns and invalid UTF-8 are cleaned up.
func TailFile(p string, n int, max int64) ([]string, bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return []string{}, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	off := fi.Size() - max
	cut := off > 0
	if off < 0 {
		off = 0
	}
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, false, err
	}
	text := strings.ToValidUTF8(strings.ReplaceAll(string(b), "\r", ""), "?")
	text = strings.TrimSuffix(text, "\n")
	if text == "" {
		return []string{}, false, nil
	}
	lines := strings.Split(text, "\n")
	if cut && len(lines) > 0 {
		lines = lines[1:] // the first one is partial
	}
	if len(lines) > n {
		return lines[len(lines)-n:], true, nil
	}
	return lines, cut, nil
}

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(s.openapi)
}
