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
	"mime"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/config"
	"github.com/flarekit/terraform-provider-flare/agent/launch"
	"github.com/flarekit/terraform-provider-flare/agent/manager"
	"github.com/flarekit/terraform-provider-flare/internal/agentid"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// Version is reported by /healthz; the build may set it with -ldflags.
var Version = "dev"

// Roles that may launch and stop CVMs (project_admin, org_admin of the
// site's org) or read the site's CVMs, console logs and metrics (those,
// and lead of the site's org).
const (
	RoleProjectAdmin = "project_admin"
	RoleOrgAdmin     = "org_admin"
	RoleLead         = "lead"
)

// Identity is the agent's own TLS identity, from its agent kit
// (flare_agent_identity): never a participant's certificate and key.
type Identity struct {
	Cert tls.Certificate
	Leaf *x509.Certificate
	Root *x509.Certificate
	Pool *x509.CertPool
	// Site is the site the agent certificate serves (its CN without
	// ":flare-agent"), Org its O.
	Site, Org string
}

// LoadIdentity reads agent.crt, agent.key and rootCA.pem from the agent
// kit at dir. A participant's startup kit is refused: the site host must
// not hold the participant's private key.
func LoadIdentity(dir string) (*Identity, error) {
	if agentid.LooksLikeStartupKit(dir) {
		return nil, fmt.Errorf("agent_kit_dir %s is a participant's startup kit: %s", dir, agentid.ParticipantKitHint)
	}
	rootPEM, err := os.ReadFile(filepath.Join(dir, agentid.RootFile))
	if err != nil {
		return nil, fmt.Errorf("agent kit %s: %w (make an agent kit with the Terraform resource flare_agent_identity)", dir, err)
	}
	root, err := pki.ParseCertPEM(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("agent kit: %s: %w", agentid.RootFile, err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, agentid.CertFile), filepath.Join(dir, agentid.KeyFile))
	if err != nil {
		return nil, fmt.Errorf("agent kit %s: %s/%s: %w (make an agent kit with the Terraform resource flare_agent_identity)", dir, agentid.CertFile, agentid.KeyFile, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, err
	}
	site, ok := agentid.SiteOf(leaf)
	if !ok {
		return nil, fmt.Errorf("agent kit %s: %s is %q (role %q), not an agent certificate: %s", dir, agentid.CertFile,
			leaf.Subject.CommonName, pki.RoleOf(leaf), agentid.ParticipantKitHint)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return nil, fmt.Errorf("agent kit: %s is not signed by its rootCA.pem: %w", leaf.Subject.CommonName, err)
	}
	id := &Identity{Cert: cert, Leaf: leaf, Root: root, Pool: pool, Site: site}
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
	// statusHosts are the host names the status page answers to.
	statusHosts map[string]bool
	// Uploads in progress: their number and the bytes reserved for them.
	upMu       sync.Mutex
	upCount    int
	upReserved int64
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
	s.statusHosts = statusHosts(cfg, id)
	return s
}

// statusHosts: localhost forms, the configured listen hosts, and the
// names and addresses of the agent's certificate. A browser that reached
// the page through any other name (DNS rebinding) is refused.
func statusHosts(cfg *config.Config, id *Identity) map[string]bool {
	h := map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true}
	add := func(n string) {
		n = strings.ToLower(strings.TrimSuffix(strings.Trim(n, "[]"), "."))
		if ip := net.ParseIP(n); ip != nil {
			if ip.IsUnspecified() {
				return
			}
			n = ip.String()
		}
		if n != "" {
			h[n] = true
		}
	}
	for _, l := range []string{cfg.Listen, cfg.StatusListen} {
		if host, _, err := net.SplitHostPort(l); err == nil {
			add(host)
		}
	}
	if id != nil && id.Leaf != nil {
		add(id.Site) // the site name, as a participant certificate's CN was
		for _, n := range id.Leaf.DNSNames {
			add(n)
		}
		for _, ip := range id.Leaf.IPAddresses {
			add(ip.String())
		}
	}
	return h
}

// hostAllowed reports whether the request's Host names this agent.
func (s *Server) hostAllowed(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if ip := net.ParseIP(host); ip != nil {
		return s.statusHosts[ip.String()] || ip.IsLoopback()
	}
	return s.statusHosts[host] || strings.HasSuffix(host, ".localhost")
}

// Principal is the caller as its certificate says.
type Principal struct {
	CN, Org, Role string
}

// CanManage: project_admin, or org_admin of the site's org.
func (s *Server) CanManage(p Principal) bool {
	return p.Role == RoleProjectAdmin || (p.Role == RoleOrgAdmin && s.org != "" && p.Org == s.org)
}

// CanRead: who may list CVMs, read their full status and console logs,
// and read /metrics: project_admin, or org_admin or lead of the site's
// org. Any other certificate of the project may only check health, fetch
// attestation reports and read a CVM's attestation-related status.
func (s *Server) CanRead(p Principal) bool {
	return p.Role == RoleProjectAdmin || ((p.Role == RoleOrgAdmin || p.Role == RoleLead) && s.org != "" && p.Org == s.org)
}

// Access levels of a route.
type access int

const (
	anyCert  access = iota // any certificate of the project
	readers                // CanRead
	managers               // CanManage
)

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
// certificate; lists, full status, console logs and metrics need a
// reading role (CanRead), launch, upload and stop a managing one
// (CanManage). Requests with a body must say what it is (Content-Type),
// and unsafe cross-origin requests from browsers are refused.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(a access, route string, h http.HandlerFunc) { mux.Handle(route, s.wrap(route, a, h)) }
	route(anyCert, "GET /healthz", s.health)
	route(readers, "GET /v1/cvms", s.list)
	route(anyCert, "GET /v1/cvms/{id}", s.get)
	route(managers, "POST /v1/cvms", s.launch)
	route(managers, "POST /v1/cvms/upload", s.upload)
	route(managers, "DELETE /v1/cvms/{id}", s.stop)
	route(anyCert, "POST /v1/cvms/{id}/attestation", s.attest)
	route(readers, "GET /v1/cvms/{id}/logs", s.logs)
	route(anyCert, "GET /openapi.yaml", s.openAPI)
	route(readers, "GET /metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}).ServeHTTP)
	route(anyCert, "GET /{$}", s.statusPage)
	mux.Handle("/", s.wrap("other", anyCert, func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	}))
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusForbidden, "cross-origin request refused: the agent's API is not for browsers of other sites")
	}))
	return cop.Handler(mux)
}

// StatusHandler serves only the read-only HTML status page, without
// authentication: for a local plain-HTTP listener (status_listen) or tests.
func (s *Server) StatusHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.statusPage)
	return mux
}

// HTTPServer is the API's http.Server with the configured timeouts: a
// connection that sends its headers, its body or nothing too slowly, or
// idles too long, is closed.
func (s *Server) HTTPServer(log *slog.Logger) *http.Server {
	hs := &http.Server{Handler: s.Handler(), TLSConfig: s.id.TLSConfig(),
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout.D(), ReadTimeout: s.cfg.ReadTimeout.D(),
		WriteTimeout: s.cfg.WriteTimeout.D(), IdleTimeout: s.cfg.IdleTimeout.D(), MaxHeaderBytes: 64 << 10}
	if log != nil {
		hs.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	}
	return hs
}

// StatusHTTPServer serves StatusHandler with the same timeouts.
func (s *Server) StatusHTTPServer() *http.Server {
	return &http.Server{Handler: s.StatusHandler(), ReadHeaderTimeout: s.cfg.ReadHeaderTimeout.D(), ReadTimeout: s.cfg.ReadTimeout.D(),
		WriteTimeout: s.cfg.WriteTimeout.D(), IdleTimeout: s.cfg.IdleTimeout.D(), MaxHeaderBytes: 64 << 10}
}

// extend gives this request's connection until d from now to read its
// body and write its answer, for handlers that need longer than
// read_timeout/write_timeout.
func extend(w http.ResponseWriter, read, write time.Duration) {
	rc := http.NewResponseController(w)
	now := time.Now()
	if read > 0 {
		_ = rc.SetReadDeadline(now.Add(read))
	}
	if write > 0 {
		_ = rc.SetWriteDeadline(now.Add(write))
	}
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(c int) { r.code = c; r.ResponseWriter.WriteHeader(c) }

// Unwrap lets http.ResponseController reach the connection.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) wrap(route string, a access, h http.HandlerFunc) http.Handler {
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
		if a == managers && !s.CanManage(p) {
			s.log.Warn("forbidden", "method", r.Method, "path", r.URL.Path, "cn", p.CN, "role", p.Role, "org", p.Org)
			writeErr(rec, http.StatusForbidden, fmt.Sprintf("%s (role %q, org %q) may not %s: launching and stopping CVMs needs role project_admin, or org_admin of org %q",
				p.CN, p.Role, p.Org, r.Method+" "+r.URL.Path, s.org))
			return
		}
		if a == readers && !s.CanRead(p) {
			s.log.Warn("forbidden", "method", r.Method, "path", r.URL.Path, "cn", p.CN, "role", p.Role, "org", p.Org)
			writeErr(rec, http.StatusForbidden, fmt.Sprintf("%s (role %q, org %q) may not %s: CVM lists, console logs and metrics need role project_admin, or org_admin or lead of org %q (any certificate of the project may fetch attestation reports)",
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
	case errors.Is(err, manager.ErrBusy):
		code = http.StatusTooManyRequests
		w.Header().Set("Retry-After", "5")
	}
	msg := err.Error()
	for _, e := range []error{manager.ErrNotFound, manager.ErrBadKit, manager.ErrConflict, manager.ErrUnavailable, manager.ErrBusy} {
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

// get answers a reading role with the CVM's full status, and any other
// certificate with what attesting it needs (Attested).
func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	v, err := s.mgr.Get(r.PathValue("id"))
	if err != nil {
		writeMgrErr(w, err)
		return
	}
	if !s.CanRead(caller(r)) {
		v = Attested(v)
	}
	writeJSON(w, 200, v)
}

// Attested is the part of a CVM's status any certificate of the project
// may read: which kit and participant it runs, its state, mode and the
// values its reports must carry; not where its kit lies, who launched it,
// its process, errors or timings.
func Attested(c api.CVM) api.CVM {
	return api.CVM{ID: c.ID, KitID: c.KitID, Participant: c.Participant, Role: c.Role, Mode: c.Mode, Accel: c.Accel,
		State: c.State, GuestReady: c.GuestReady, VCPUs: c.VCPUs, MemoryMiB: c.MemoryMiB, GuestPolicy: c.GuestPolicy,
		HostData: c.HostData, ExpectedMeasurement: c.ExpectedMeasurement, CreatedAt: c.CreatedAt, StartedAt: c.StartedAt,
		StoppedAt: c.StoppedAt}
}

// maxJSONBody bounds a JSON request body.
const maxJSONBody = 1 << 20

// decodeJSON reads exactly one JSON value of a body whose Content-Type is
// application/json (415 otherwise: an HTML form cannot send that type
// across origins) and nothing after it but white space (400).
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		if ct == "" {
			ct = "none"
		}
		writeErr(w, http.StatusUnsupportedMediaType, fmt.Sprintf("request body must be JSON with Content-Type: application/json (got %s)", ct))
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		code := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			code = http.StatusRequestEntityTooLarge
		}
		writeErr(w, code, "request body: "+err.Error())
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeErr(w, http.StatusBadRequest, "request body: data after the JSON value: send exactly one JSON object")
		return false
	}
	return true
}

func (s *Server) launch(w http.ResponseWriter, r *http.Request) {
	extend(w, 0, s.cfg.LaunchTimeout.D()) // copying and hashing drives
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

// Upload content types: an archive, never what an HTML form can send.
var uploadTypes = map[string]bool{"application/gzip": true, "application/x-gzip": true, "application/octet-stream": true}

// admitUpload reserves an upload slot and the bytes the upload may unpack
// to: at most max_upload_bytes, and no more than is left of
// max_uploads_total_bytes. release gives both back.
func (s *Server) admitUpload() (budget int64, release func(), msg string) {
	s.upMu.Lock()
	defer s.upMu.Unlock()
	if max := s.cfg.MaxConcurrentUploads; max > 0 && s.upCount >= max {
		return 0, nil, fmt.Sprintf("%d uploads are in progress, the most max_concurrent_uploads allows; retry when one has finished", s.upCount)
	}
	budget = s.cfg.MaxUploadBytes
	if total := s.cfg.MaxUploadsTotalBytes; total > 0 {
		free := total - s.upReserved
		if free <= 0 {
			return 0, nil, fmt.Sprintf("the %d uploads in progress may unpack to %d bytes, all max_uploads_total_bytes (%d) allows; retry when one has finished",
				s.upCount, s.upReserved, total)
		}
		budget = min(budget, free)
	}
	s.upCount++
	s.upReserved += budget
	var once sync.Once
	return budget, func() {
		once.Do(func() {
			s.upMu.Lock()
			s.upCount--
			s.upReserved -= budget
			s.upMu.Unlock()
		})
	}, ""
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || !uploadTypes[mt] {
		if ct == "" {
			ct = "none"
		}
		writeErr(w, http.StatusUnsupportedMediaType, fmt.Sprintf("an upload is a kit archive with Content-Type: application/gzip (got %s)", ct))
		return
	}
	if r.ContentLength > s.cfg.MaxUploadBytes {
		writeErr(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("kit archive of %d bytes is larger than max_upload_bytes (%d)", r.ContentLength, s.cfg.MaxUploadBytes))
		return
	}
	budget, release, msg := s.admitUpload()
	if release == nil {
		w.Header().Set("Retry-After", "10")
		writeErr(w, http.StatusTooManyRequests, msg)
		return
	}
	defer release()
	// The body may take upload_timeout; the launch after it launch_timeout.
	extend(w, s.cfg.UploadTimeout.D(), s.cfg.UploadTimeout.D()+s.cfg.LaunchTimeout.D())
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
	kitDir, _, err := launch.Unpack(body, dest, budget)
	if err != nil {
		// Whatever arrived is deleted: a stalled, cut or refused upload
		// leaves nothing behind.
		os.RemoveAll(dest)
		code, text := http.StatusBadRequest, "uploaded kit rejected: "+err.Error()
		switch {
		case errors.As(err, new(*http.MaxBytesError)):
			code, text = http.StatusRequestEntityTooLarge, fmt.Sprintf("kit archive is larger than max_upload_bytes (%d)", s.cfg.MaxUploadBytes)
		case strings.Contains(err.Error(), "unpacks to more than") && budget < s.cfg.MaxUploadBytes:
			w.Header().Set("Retry-After", "10")
			code, text = http.StatusTooManyRequests, fmt.Sprintf("kit archive unpacks to more than the %d bytes left of max_uploads_total_bytes (%d) beside the other uploads in progress; retry when they have finished",
				budget, s.cfg.MaxUploadsTotalBytes)
		case strings.Contains(err.Error(), "unpacks to more than"):
			code = http.StatusRequestEntityTooLarge
		case errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err):
			code, text = http.StatusRequestTimeout, fmt.Sprintf("kit archive not received within upload_timeout (%s); the partial upload was deleted", s.cfg.UploadTimeout.D())
		}
		s.log.Warn("upload refused", "by", caller(r).CN, "code", code, "err", err)
		writeErr(w, code, text)
		return
	}
	release()                                                              // unpacked and checked: the files move into the CVM's folder now
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

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *Server) stop(w http.ResponseWriter, r *http.Request) {
	extend(w, 0, s.cfg.StopTimeout.D()+60*time.Second)
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
	// Waiting behind earlier requests and the guest's round trip.
	budget := 2*s.cfg.AttestTimeout.D() + 10*time.Second
	extend(w, 0, budget+5*time.Second)
	ctx, cancel := context.WithTimeout(r.Context(), budget)
	defer cancel()
	v, err := s.mgr.Attest(ctx, r.PathValue("id"), req.Nonce)
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
