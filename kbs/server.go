// Package kbs is flare-kbs, a key broker that speaks Trustee's KBS
// protocol v0.4.0 (RCAR) for AMD SEV-SNP guests: POST /kbs/v0/auth,
// POST /kbs/v0/attest, GET /kbs/v0/resource/<repo>/<type>/<tag>. It
// verifies the guest's SNP evidence with internal/attest and releases a
// resource, encrypted to the guest's ephemeral key, only when the guest's
// launch measurement is listed in that exact resource's Policy. Secrets
// and policies come from a Store (Vault/OpenBao KV v1 at Trustee's layout,
// or a directory).
package kbs

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/flarekit/terraform-provider-flare/internal/attest"
	"github.com/flarekit/terraform-provider-flare/kbs/rcar"
)

//go:embed openapi.yaml
var openAPI []byte

// OpenAPI is the broker's OpenAPI document (served at /openapi.yaml).
func OpenAPI() []byte { return append([]byte(nil), openAPI...) }

// Defaults.
const (
	DefaultSessionTTL  = 5 * time.Minute
	DefaultTokenTTL    = 5 * time.Minute
	DefaultMaxSessions = 4096
	maxAuthBody        = 64 << 10
	maxAttestBody      = 1 << 20
)

// Options configure a Server.
type Options struct {
	// Store holds the secrets and policy records. Required.
	Store Store
	// Simulated accepts evidence signed by go-sev-guest's fake AMD chain
	// (no SEV-SNP hardware). Every attestation and release is then
	// labelled "simulated" in logs, tokens and metrics. Never in production.
	Simulated bool
	// SessionTTL bounds a session from /auth to its last resource request.
	SessionTTL time.Duration
	// TokenTTL is the lifetime of attestation tokens (Bearer access).
	TokenTTL time.Duration
	// TokenKey signs attestation tokens; nil: a fresh key (tokens then do
	// not survive a restart).
	TokenKey ed25519.PrivateKey
	// VCEKCacheDir holds VCEKs for reports without a certificate table
	// (attest.VCEKCachePath); nothing is fetched from AMD's KDS.
	VCEKCacheDir string
	// MinimumTCB is a REPORTED_TCB every guest must reach (0: none);
	// policy records may ask for more per resource.
	MinimumTCB uint64
	// TrustedRoots overrides AMD's roots (tests); roots that are not AMD's
	// need Simulated.
	TrustedRoots map[string][]*trust.AMDRootCerts
	// MaxSessions bounds open sessions (0: DefaultMaxSessions).
	MaxSessions int
	// Logger gets structured logs (nil: slog.Default()). Secrets, tokens
	// and session ids are never logged (a session is named by a hash).
	Logger *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Server is the broker. Use Handler to serve it.
type Server struct {
	o       Options
	key     ed25519.PrivateKey
	log     *slog.Logger
	metrics *metrics

	mu       sync.Mutex
	sessions map[string]*session
}

type session struct {
	nonce     string
	tee       string
	expires   time.Time
	attempted bool    // /attest was called: single use
	claims    *Claims // set by a successful /attest
}

// New makes a Server.
func New(o Options) (*Server, error) {
	if o.Store == nil {
		return nil, errors.New("kbs: no store")
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = DefaultTokenTTL
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{o: o, key: o.TokenKey, log: o.Logger, metrics: newMetrics(), sessions: map[string]*session{}}
	if s.key == nil {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		s.key = k
	}
	if o.Simulated {
		s.log.Warn("SIMULATED mode: evidence from go-sev-guest's fake AMD chain is accepted; anyone can forge it; every release is labelled simulated")
	}
	return s, nil
}

// TokenPublicKey verifies the broker's attestation tokens.
func (s *Server) TokenPublicKey() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Releases is the number of resources released in mode ("sev-snp" or
// "simulated").
func (s *Server) Releases(mode string) uint64 {
	return s.metrics.get("flare_kbs_releases_total", "mode", mode)
}

// kbsError is a protocol error: Trustee's error type name, the status,
// and the detail shown to the client.
type kbsError struct {
	status int
	typ    string
	detail string
}

func (e *kbsError) Error() string { return e.typ + ": " + e.detail }

func deny(typ, format string, args ...any) *kbsError {
	return &kbsError{status: http.StatusUnauthorized, typ: typ, detail: fmt.Sprintf(format, args...)}
}

func notFound(typ, format string, args ...any) *kbsError {
	return &kbsError{status: http.StatusNotFound, typ: typ, detail: fmt.Sprintf(format, args...)}
}

func writeError(w http.ResponseWriter, e *kbsError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(rcar.ErrorInformation{Type: rcar.ErrorTypePrefix + e.typ, Detail: e.detail})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Handler serves the protocol, /metrics, /healthz and /openapi.yaml.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w := &statusWriter{ResponseWriter: rw}
		endpoint := "other"
		defer func() {
			if v := recover(); v != nil {
				s.log.Error("internal error", "endpoint", endpoint, "panic", fmt.Sprint(v))
				if w.status == 0 {
					writeError(w, deny("PluginInternalError", "internal error"))
				}
			}
			s.metrics.inc("flare_kbs_requests_total", "endpoint", endpoint, "code", fmt.Sprint(w.status))
		}()
		path := r.URL.EscapedPath()
		var err *kbsError
		switch {
		case path == "/kbs/v0/auth" && r.Method == http.MethodPost:
			endpoint = "auth"
			err = s.auth(w, r)
		case path == "/kbs/v0/attest" && r.Method == http.MethodPost:
			endpoint = "attest"
			err = s.attest(w, r)
		case strings.HasPrefix(path, "/kbs/v0/resource/") && r.Method == http.MethodGet:
			endpoint = "resource"
			err = s.resource(w, r, strings.TrimPrefix(path, "/kbs/v0/resource/"))
		case strings.HasPrefix(path, "/kbs/v0/resource/") || path == "/kbs/v0/resource-policy" || path == "/kbs/v0/attestation-policy":
			endpoint = "admin"
			err = deny("AdminAuthAccess", "flare-kbs has no admin endpoints: resources and policies are written through its store (Terraform, or the store's own tools)")
		case path == "/metrics" && r.Method == http.MethodGet:
			endpoint = "metrics"
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			s.metrics.write(w, s.sessionCount())
		case path == "/healthz" && r.Method == http.MethodGet:
			endpoint = "healthz"
			writeJSON(w, map[string]any{"status": "ok", "simulated": s.o.Simulated, "protocol": rcar.ProtocolVersion})
		case path == "/openapi.yaml" && r.Method == http.MethodGet:
			endpoint = "openapi"
			w.Header().Set("Content-Type", "application/yaml")
			_, _ = w.Write(openAPI)
		case strings.HasPrefix(path, "/kbs/v0/"):
			err = notFound("PluginNotFound", "no endpoint %s %s (flare-kbs serves POST /kbs/v0/auth, POST /kbs/v0/attest, GET /kbs/v0/resource/<repository>/<type>/<tag>)", r.Method, path)
		default:
			err = notFound("InvalidRequestPath", "no endpoint %s %s", r.Method, path)
		}
		if err != nil {
			writeError(w, err)
		}
	})
}

func sessionName(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:6])
}

func randomString(n int, enc func([]byte) string) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return enc(b), nil
}

func (s *Server) sessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) *kbsError {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return deny("SerdeError", "request body: %v (limit %d bytes)", err, limit)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return deny("SerdeError", "request body is not the expected JSON: %v", err)
	}
	return nil
}

func (s *Server) auth(w http.ResponseWriter, r *http.Request) *kbsError {
	var req rcar.Request
	if e := decodeBody(w, r, maxAuthBody, &req); e != nil {
		return e
	}
	if req.Version != rcar.ProtocolVersion {
		return deny("AttestationError", "KBS Client Protocol Version Mismatch: expect %s while the request is %q", rcar.ProtocolVersion, req.Version)
	}
	if req.Tee != rcar.TeeSNP {
		return deny("AttestationError", "tee %q is not accepted: flare-kbs verifies AMD SEV-SNP evidence (tee \"snp\") only", req.Tee)
	}
	id, err := randomString(16, hex.EncodeToString)
	if err != nil {
		return deny("PluginInternalError", "randomness: %v", err)
	}
	nonce, err := randomString(32, base64.StdEncoding.EncodeToString)
	if err != nil {
		return deny("PluginInternalError", "randomness: %v", err)
	}
	now := s.o.Now()
	s.mu.Lock()
	if len(s.sessions) >= s.o.MaxSessions {
		for k, v := range s.sessions {
			if now.After(v.expires) {
				delete(s.sessions, k)
			}
		}
	}
	full := len(s.sessions) >= s.o.MaxSessions
	if !full {
		s.sessions[id] = &session{nonce: nonce, tee: req.Tee, expires: now.Add(s.o.SessionTTL)}
	}
	s.mu.Unlock()
	if full {
		s.log.Warn("session table full", "max_sessions", s.o.MaxSessions)
		return deny("AttestationError", "too many open sessions; try again later")
	}
	http.SetCookie(w, &http.Cookie{
		Name: rcar.SessionCookie, Value: id, Path: "/kbs/v0", HttpOnly: true, Secure: r.TLS != nil,
		Expires: now.Add(s.o.SessionTTL), SameSite: http.SameSiteStrictMode,
	})
	s.log.Info("auth", "session", sessionName(id), "tee", req.Tee, "remote", r.RemoteAddr)
	writeJSON(w, rcar.Challenge{Nonce: nonce, ExtraParams: json.RawMessage(`""`)})
	return nil
}

// takeSession returns the cookie's session, marking it attempted.
func (s *Server) takeSession(r *http.Request) (string, *session, *kbsError) {
	c, err := r.Cookie(rcar.SessionCookie)
	if err != nil || c.Value == "" {
		return "", nil, deny("AttestationError", "cookie %s not found: start with POST /kbs/v0/auth", rcar.SessionCookie)
	}
	now := s.o.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[c.Value]
	switch {
	case !ok:
		return "", nil, deny("AttestationError", "session not found (unknown, expired or restarted broker): start again with POST /kbs/v0/auth")
	case now.After(sess.expires):
		delete(s.sessions, c.Value)
		return "", nil, deny("AttestationError", "session expired: start again with POST /kbs/v0/auth")
	case sess.attempted:
		return "", nil, deny("AttestationError", "this session was already used for an attestation (sessions are single use; a replayed attestation is refused): start again with POST /kbs/v0/auth")
	}
	sess.attempted = true
	return c.Value, sess, nil
}

func (s *Server) attest(w http.ResponseWriter, r *http.Request) *kbsError {
	id, sess, e := s.takeSession(r)
	if e != nil {
		return e
	}
	name := sessionName(id)
	mode := attest.ModeSNP
	if s.o.Simulated {
		mode = attest.ModeSimulated
	}
	refuse := func(e *kbsError) *kbsError {
		s.metrics.inc("flare_kbs_attestations_total", "result", "refused", "mode", mode)
		s.log.Warn("attestation refused", "session", name, "mode", mode, "reason", e.detail)
		return e
	}
	var att rcar.Attestation
	if e := decodeBody(w, r, maxAttestBody, &att); e != nil {
		return refuse(e)
	}
	if att.RuntimeData.Nonce != sess.nonce {
		return refuse(deny("AttestationError", "the nonce in the handshake session is different from the client side in KBS protocol's Attestation message (stale or replayed attestation)"))
	}
	if _, err := att.RuntimeData.TeePubKey.RSA(); err != nil {
		return refuse(deny("AttestationError", "%v", err))
	}
	var ev rcar.SNPEvidence
	if len(att.TeeEvidence.PrimaryEvidence) == 0 {
		return refuse(deny("AttestationError", "tee-evidence.primary_evidence is missing"))
	}
	if err := json.Unmarshal(att.TeeEvidence.PrimaryEvidence, &ev); err != nil {
		return refuse(deny("AttestationError", "primary_evidence is not SNP evidence ({\"attestation_report\":…,\"cert_chain\":…}): %v", err))
	}
	report, table, err := ev.Raw()
	if err != nil {
		return refuse(deny("AttestationError", "attestation_report: %v", err))
	}
	rd, err := rcar.ReportData(att.RuntimeData.Nonce, att.RuntimeData.TeePubKey, att.TeeEvidence.AdditionalEvidence)
	if err != nil {
		return refuse(deny("AttestationError", "runtime data: %v", err))
	}
	v, err := attest.Verify(&attest.Evidence{Report: report, CertTable: table}, attest.Policy{
		ReportData:     rd[:],
		AnyMeasurement: true,
		MinimumTCB:     s.o.MinimumTCB,
		VCEKCacheDir:   s.o.VCEKCacheDir,
		TrustedRoots:   s.o.TrustedRoots,
		Simulated:      s.o.Simulated,
	}, s.o.Now())
	if err != nil {
		reasons := err.Error()
		if v != nil && len(v.Reasons) > 0 {
			reasons = strings.Join(v.Reasons, "; ")
		}
		return refuse(deny("AttestationError", "SNP evidence rejected: %s", reasons))
	}
	if v.PolicyDebug {
		return refuse(deny("AttestationError", "the guest policy allows debugging: refused"))
	}
	if att.InitData != nil {
		sum := sha256.Sum256([]byte(att.InitData.Body))
		if hex.EncodeToString(sum[:]) != v.HostData {
			return refuse(deny("AttestationError", "init-data: SHA-256 of its body is %x, HOST_DATA is %s (Host Data Mismatch)", sum, v.HostData))
		}
	}
	mode = v.Mode
	now := s.o.Now()
	jti, _ := randomString(12, hex.EncodeToString)
	claims := &Claims{
		Issuer: tokenIssuer, IssuedAt: now.Unix(), Expires: now.Add(s.o.TokenTTL).Unix(), ID: jti,
		Tee: sess.tee, Mode: v.Mode, Measurement: v.Measurement, HostData: v.HostData,
		ReportedTCB: v.ReportedTCB.Raw, PolicyDebug: v.PolicyDebug, ChipID: v.ChipID,
		TeePubKey: att.RuntimeData.TeePubKey,
	}
	tok, err := signToken(s.key, claims)
	if err != nil {
		return refuse(deny("PluginInternalError", "token: %v", err))
	}
	s.mu.Lock()
	sess.claims = claims
	s.mu.Unlock()
	s.metrics.inc("flare_kbs_attestations_total", "result", "ok", "mode", v.Mode)
	msg := "attestation ok"
	if v.Simulated {
		msg = "attestation ok (SIMULATED SEV-SNP: go-sev-guest fake AMD chain, proves nothing)"
	}
	s.log.Info(msg, "session", name, "mode", v.Mode, "measurement", v.Measurement, "host_data", v.HostData,
		"reported_tcb", v.ReportedTCB.Raw, "chip_id", v.ChipID)
	writeJSON(w, rcar.AttestationToken{Token: tok})
	return nil
}

func (s *Server) claimsFor(r *http.Request) (*Claims, string, *kbsError) {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return nil, "", deny("TokenNotFound", "Authorization header is not \"Bearer <token>\"")
		}
		c, err := verifyToken(s.TokenPublicKey(), strings.TrimSpace(tok), s.o.Now())
		if err != nil {
			return nil, "", deny("TokenVerifierError", "%v", err)
		}
		return c, "token " + c.ID, nil
	}
	ck, err := r.Cookie(rcar.SessionCookie)
	if err != nil || ck.Value == "" {
		return nil, "", deny("TokenNotFound", "Attestation Token not found: attest first (cookie %s) or send Authorization: Bearer <token>", rcar.SessionCookie)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[ck.Value]
	if !ok || s.o.Now().After(sess.expires) {
		return nil, "", deny("TokenNotFound", "session not found or expired: start again with POST /kbs/v0/auth")
	}
	if sess.claims == nil {
		return nil, "", deny("TokenNotFound", "this session has not attested: POST /kbs/v0/attest first")
	}
	return sess.claims, "session " + sessionName(ck.Value), nil
}

func parseResourceURL(rest string) (ResourcePath, *kbsError) {
	segs := strings.Split(rest, "/")
	if len(segs) != 3 {
		return ResourcePath{}, notFound("InvalidRequestPath", "Request path %q is invalid: want /kbs/v0/resource/<repository>/<type>/<tag>", "/kbs/v0/resource/"+rest)
	}
	var parts [3]string
	for i, seg := range segs {
		p, err := url.PathUnescape(seg)
		if err != nil {
			return ResourcePath{}, notFound("InvalidRequestPath", "Request path is invalid: %v", err)
		}
		parts[i] = p
	}
	p := ResourcePath{parts[0], parts[1], parts[2]}
	if err := p.Validate(); err != nil {
		return ResourcePath{}, notFound("InvalidRequestPath", "Request path is invalid: %v", err)
	}
	return p, nil
}

// Check says whether claims satisfy pol (nil) or why not.
func (pol Policy) Check(c *Claims) error {
	if !slices.Contains(pol.Measurements, strings.ToLower(c.Measurement)) {
		return fmt.Errorf("measurement %s is not allowed for this resource", c.Measurement)
	}
	if pol.HostData != "" && !strings.EqualFold(pol.HostData, c.HostData) {
		return fmt.Errorf("host_data %s, the policy wants %s", c.HostData, pol.HostData)
	}
	if pol.AllowDebug || c.PolicyDebug {
		return errors.New("debug guests are never served")
	}
	if pol.MinTCB != "" {
		want, err := attest.ParseTCBVersion(pol.MinTCB)
		if err != nil {
			return err
		}
		have, err := attest.ParseTCBVersion(c.ReportedTCB)
		if err != nil {
			return fmt.Errorf("reported TCB: %v", err)
		}
		w, h := kds.DecomposeTCBVersion(kds.TCBVersion(want)), kds.DecomposeTCBVersion(kds.TCBVersion(have))
		if h.BlSpl < w.BlSpl || h.TeeSpl < w.TeeSpl || h.SnpSpl < w.SnpSpl || h.UcodeSpl < w.UcodeSpl {
			return fmt.Errorf("reported TCB %016x is below the policy's min_tcb %016x", have, want)
		}
	}
	return nil
}

func (s *Server) resource(w http.ResponseWriter, r *http.Request, rest string) *kbsError {
	p, e := parseResourceURL(rest)
	if e != nil {
		return e
	}
	claims, who, e := s.claimsFor(r)
	if e != nil {
		return e
	}
	denyRes := func(reason string, e *kbsError) *kbsError {
		s.metrics.inc("flare_kbs_denials_total", "reason", reason)
		s.log.Warn("resource refused", "resource", p.String(), "by", who, "mode", claims.Mode, "measurement", claims.Measurement, "reason", e.detail)
		return e
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	pol, err := s.o.Store.GetPolicy(ctx, p)
	if errors.Is(err, ErrNotFound) {
		return denyRes("no_policy", deny("PolicyDeny", "Access denied by policy: no policy record for %s", p))
	}
	if err != nil {
		s.log.Error("store: reading policy", "resource", p.String(), "err", err.Error())
		return denyRes("store", deny("PluginInternalError", "Plugin internal error: the policy of %s could not be read", p))
	}
	if err := pol.Check(claims); err != nil {
		return denyRes("policy", deny("PolicyDeny", "Access denied by policy: %s: %v", p, err))
	}
	pub, err := claims.TeePubKey.RSA()
	if err != nil {
		return denyRes("tee_key", deny("JweError", "JWE failed: %v", err))
	}
	secret, err := s.o.Store.GetSecret(ctx, p)
	if errors.Is(err, ErrNotFound) {
		return denyRes("no_secret", deny("PluginInternalError", "Plugin internal error: resource %s not found", p))
	}
	if err != nil {
		s.log.Error("store: reading secret", "resource", p.String(), "err", err.Error())
		return denyRes("store", deny("PluginInternalError", "Plugin internal error: resource %s could not be read", p))
	}
	jwe, err := rcar.Seal(pub, secret)
	clear(secret)
	if err != nil {
		return denyRes("jwe", deny("JweError", "JWE failed: %v", err))
	}
	s.metrics.inc("flare_kbs_releases_total", "mode", claims.Mode)
	msg := "released"
	if claims.Mode == attest.ModeSimulated {
		msg = "released to a SIMULATED guest (go-sev-guest fake AMD chain, proves nothing)"
	}
	s.log.Info(msg, "resource", p.String(), "by", who, "mode", claims.Mode, "measurement", claims.Measurement)
	writeJSON(w, jwe)
	return nil
}
