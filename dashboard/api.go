package dashboard

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Prefixes are the API bases served: the OpenAPI contract's and the one
// NVFlare 2.9's UI calls.
var Prefixes = []string{"/api/v1", "/nvflare-dashboard/api/v1"}

// Roles a user may have. NVFlare stores any string; we accept these (and ""
// at sign-up, which the user may fill in later, as NVFlare allows).
var validRoles = map[string]bool{"": true, "org_admin": true, "lead": true, "member": true, "project_admin": true}

// Server is the Dashboard HTTP API.
type Server struct {
	Store *Store
	Key   []byte
	Now   func() time.Time
	Log   *log.Logger
	// Passphrase, when set, seals the root CA key in the database.
	Passphrase string
	// Vault, when set, holds the root CA key in Vault Transit: a project
	// frozen then keeps only a reference to it.
	Vault *VaultCA
	// UIDir, when set, is NVFlare's static web UI folder to serve.
	UIDir string

	uiTemplates map[string]*template.Template

	limiter loginLimiter
	once    sync.Once
	metrics *metrics
	keys    atomic.Pointer[keyPool] // StartKeyPool; nil: every kit makes its key inline
}

// Handler routes the API under every prefix, plus /healthz and /metrics.
func (s *Server) Handler() http.Handler {
	s.once.Do(func() { s.metrics = newMetrics(s.keyPoolStats) })
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /metrics", s.metrics.handler())
	for _, p := range Prefixes {
		mux.HandleFunc("POST "+p+"/login", s.login)
		mux.HandleFunc("GET "+p+"/project", s.getProject)
		mux.HandleFunc("PATCH "+p+"/project", s.auth(s.patchProject))
		mux.HandleFunc("GET "+p+"/organizations", s.getOrgs)
		mux.HandleFunc("POST "+p+"/users", s.createUser)
		mux.HandleFunc("GET "+p+"/users", s.auth(s.listUsers))
		mux.HandleFunc("GET "+p+"/users/{id}", s.auth(s.getUser))
		mux.HandleFunc("PATCH "+p+"/users/{id}", s.auth(s.patchUser))
		mux.HandleFunc("DELETE "+p+"/users/{id}", s.auth(s.deleteUser))
		mux.HandleFunc("POST "+p+"/clients", s.auth(s.createClient))
		mux.HandleFunc("GET "+p+"/clients", s.auth(s.listClients))
		mux.HandleFunc("GET "+p+"/clients/{id}", s.auth(s.getClient))
		mux.HandleFunc("PATCH "+p+"/clients/{id}", s.auth(s.patchClient))
		mux.HandleFunc("DELETE "+p+"/clients/{id}", s.auth(s.deleteClient))
		mux.HandleFunc("POST "+p+"/servers/{id}/blob", intID(s.auth(s.blobHandler(kitServer))))
		mux.HandleFunc("POST "+p+"/clients/{id}/blob", intID(s.auth(s.blobHandler(kitClient))))
		mux.HandleFunc("POST "+p+"/users/{id}/blob", intID(s.auth(s.blobHandler(kitAdmin))))
		mux.HandleFunc("GET "+p+"/audit", s.auth(s.getAudit))
		// Not in NVFlare: sites that register with a certificate request.
		mux.HandleFunc("POST "+p+"/clients/request", s.auth(s.postClientRequest))
		mux.HandleFunc("GET "+p+"/clients/{id}/request", intID(s.auth(s.getClientRequest)))
		mux.HandleFunc("GET "+p+"/clients/{id}/signed", intID(s.auth(s.getSignedZip)))
	}
	s.uiRoutes(mux)
	if s.UIDir != "" {
		mux.Handle("GET /", uiHandler(s.UIDir))
	} else {
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, uiBase+"/", http.StatusFound)
		})
	}
	return s.metrics.instrument(mux)
}

// intID answers 404 for an {id} that is not a number, as Flask's <int:id>.
func intID(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, err := strconv.ParseUint(r.PathValue("id"), 10, 63); err != nil {
			writeJSON(w, 404, obj{"status": "not found"})
			return
		}
		h(w, r)
	}
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

type obj = map[string]any

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func ok(m obj) obj { m["status"] = "ok"; return m }

func (s *Server) fail(w http.ResponseWriter, err error) {
	if s.Log != nil {
		s.Log.Printf("error: %v", err)
	}
	writeJSON(w, 500, obj{"status": "error"})
}

// readBody decodes a JSON object body. NVFlare (Flask request.json) answers
// a missing or malformed body with an HTML 400/415; we answer 400 JSON.
func readBody(w http.ResponseWriter, r *http.Request) (obj, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	var m obj
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil || m == nil {
		writeJSON(w, 400, obj{"status": "bad request"})
		return nil, false
	}
	return m, true
}

// field helpers: ok=false means present with the wrong type (written as 422).
func str(w http.ResponseWriter, m obj, k string) (string, bool, bool) {
	v, present := m[k]
	if !present || v == nil {
		return "", false, true
	}
	sv, isStr := v.(string)
	if !isStr {
		writeJSON(w, 422, obj{"status": "invalid " + k})
		return "", true, false
	}
	return sv, true, true
}

func boolean(w http.ResponseWriter, m obj, k string) (bool, bool, bool) {
	v, present := m[k]
	if !present || v == nil {
		return false, false, true
	}
	bv, isBool := v.(bool)
	if !isBool {
		writeJSON(w, 422, obj{"status": "invalid " + k})
		return false, true, false
	}
	return bv, true, true
}

func integer(w http.ResponseWriter, m obj, k string) (int64, bool, bool) {
	v, present := m[k]
	if !present || v == nil {
		return 0, false, true
	}
	f, isNum := v.(float64)
	if !isNum || f != float64(int64(f)) {
		writeJSON(w, 422, obj{"status": "invalid " + k})
		return 0, true, false
	}
	return int64(f), true, true
}

// truthyJSON is NVFlare's `if value: column = json.dumps(value)`.
func truthyJSON(v any) (string, bool) {
	switch t := v.(type) {
	case nil:
		return "", false
	case bool:
		if !t {
			return "", false
		}
	case float64:
		if t == 0 {
			return "", false
		}
	case string:
		if t == "" {
			return "", false
		}
	case []any:
		if len(t) == 0 {
			return "", false
		}
	case obj:
		if len(t) == 0 {
			return "", false
		}
	}
	b, _ := json.Marshal(v)
	return string(b), true
}

type authedHandler func(w http.ResponseWriter, r *http.Request, c *Claims)

func (s *Server) auth(h authedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, aerr := VerifyToken(s.Key, r.Header.Get("Authorization"), s.now())
		if aerr != nil {
			writeJSON(w, aerr.status, aerr.body)
			return
		}
		h(w, r, c)
	}
}

// audit records an action; a failure to record is logged, not fatal to
// the request that already happened.
type auditEvent struct{ action, target, detail string }

func (s *Server) auditAll(actor string, events []auditEvent) {
	for _, e := range events {
		s.audit(actor, e.action, e.target, e.detail)
	}
}

func (s *Server) audit(actor, action, target, detail string) {
	if err := s.Store.Audit(actor, action, target, detail); err != nil && s.Log != nil {
		s.Log.Printf("audit %s %s %s: %v", actor, action, target, err)
	}
}

// getAudit is not in NVFlare: the audit log, for project admins.
func (s *Server) getAudit(w http.ResponseWriter, r *http.Request, c *Claims) {
	if c.Role != "project_admin" {
		writeJSON(w, 403, obj{"status": "unauthorized"})
		return
	}
	entries, err := s.Store.AuditLog()
	if err != nil {
		s.fail(w, err)
		return
	}
	list := []obj{}
	for _, e := range entries {
		list = append(list, obj{"at": e.At, "actor": e.Actor, "action": e.Action, "target": e.Target, "detail": e.Detail})
	}
	writeJSON(w, 200, ok(obj{"audit": list}))
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if _, err := s.Store.SchemaVersion(); err != nil {
		writeJSON(w, 503, obj{"status": "unavailable"})
		return
	}
	writeJSON(w, 200, obj{"status": "ok"})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	m, good := readBody(w, r)
	if !good {
		return
	}
	email, _ := m["email"].(string)
	pw, _ := m["password"].(string)
	if s.limiter.blocked(email, s.now()) {
		// Not in NVFlare: after 5 failed logins in 15 minutes an email is
		// refused until the oldest failure leaves the window.
		writeJSON(w, 429, obj{"status": "too many failed logins, try again later"})
		return
	}
	u, err := s.Store.UserByEmail(email)
	if err != nil && !errors.Is(err, ErrNotFound) {
		s.fail(w, err)
		return
	}
	if u == nil || !CheckPassword(u.PasswordHash, pw) || u.ApprovalState < 0 {
		s.limiter.fail(email, s.now())
		if s.Log != nil {
			s.Log.Printf("failed login for %q from %s", email, clientIP(r))
		}
		writeJSON(w, 401, obj{"status": "unauthenticated"})
		return
	}
	s.limiter.reset(email)
	tok, err := SignToken(s.Key, u, s.now())
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, ok(obj{"user": obj{"id": u.ID, "email": u.Email, "role": u.Role}, "access_token": tok}))
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request) {
	p, err := s.Store.Project()
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, ok(obj{"project": p.JSON()}))
}

func (s *Server) patchProject(w http.ResponseWriter, r *http.Request, c *Claims) {
	if c.Role != "project_admin" {
		writeJSON(w, 403, obj{"status": "unauthorized"})
		return
	}
	m, good := readBody(w, r)
	if !good {
		return
	}
	p, err := s.Store.Project()
	if err != nil {
		s.fail(w, err)
		return
	}
	if p.Frozen {
		writeJSON(w, 200, obj{"status": "Project is frozen"})
		return
	}
	strs := map[string]*string{"title": &p.Title, "description": &p.Description, "app_location": &p.AppLocation,
		"starting_date": &p.StartingDate, "end_date": &p.EndDate, "server1": &p.Server1}
	for k, dst := range strs {
		v, present, good := str(w, m, k)
		if !good {
			return
		}
		if present {
			*dst = v
		}
	}
	bools := map[string]*bool{"frozen": &p.Frozen, "public": &p.Public, "cc_mode": &p.CCMode}
	for k, dst := range bools {
		v, present, good := boolean(w, m, k)
		if !good {
			return
		}
		if present {
			*dst = v
		}
	}
	sn, _, good := str(w, m, "short_name")
	if !good {
		return
	}
	if sn != "" {
		if r := []rune(sn); len(r) > 16 { // Python's short_name[:16] counts characters
			sn = string(r[:16])
		}
		p.ShortName = sn
	}
	if v, set := truthyJSON(m["project_props"]); set {
		p.ProjectProps = v
	}
	if v, set := truthyJSON(m["server_props"]); set {
		p.ServerProps = v
	}
	if err := s.saveProject(p, c.Sub); err != nil {
		var be *blobError
		if errors.As(err, &be) {
			writeJSON(w, be.status, be.body)
			return
		}
		s.fail(w, err)
		return
	}
	s.getProject(w, r)
}

// saveProject writes p, patched from the stored unfrozen project. Freezing
// (p.Frozen) makes the root CA, as NVFlare does; it needs short_name and
// server1 (NVFlare freezes anything and fails at the first download, 500):
// a *blobError 422 otherwise.
func (s *Server) saveProject(p *Project, actor string) error {
	freezing := p.Frozen && p.RootCert == ""
	if freezing {
		if p.ShortName == "" || p.Server1 == "" {
			return &blobError{422, obj{"status": "short_name and server1 must be set to freeze the project"}}
		}
		if s.Vault != nil {
			if err := s.makeVaultRoot(p, s.now()); err != nil {
				return err
			}
		} else if err := makeRoot(p, s.now(), s.Passphrase); err != nil {
			return err
		}
	}
	if err := s.Store.UpdateProject(p); err != nil {
		return err
	}
	if freezing {
		s.audit(actor, "freeze_project", p.ShortName, "root CA created")
	}
	return nil
}

func (s *Server) getOrgs(w http.ResponseWriter, r *http.Request) {
	names, err := s.Store.Organizations()
	if err != nil {
		s.fail(w, err)
		return
	}
	list := []obj{}
	for _, n := range names {
		list = append(list, obj{"name": n})
	}
	writeJSON(w, 200, ok(obj{"client_list": list}))
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request) {
	m, good := readBody(w, r)
	if !good {
		return
	}
	u := &User{}
	for k, dst := range map[string]*string{"email": &u.Email, "name": &u.Name, "organization": &u.Organization,
		"role": &u.Role, "description": &u.Description} {
		v, _, good := str(w, m, k)
		if !good {
			return
		}
		*dst = v
	}
	pw, _, good := str(w, m, "password")
	if !good {
		return
	}
	// NVFlare: a project_admin sign-up is a 409 "conflicting".
	if u.Role == "project_admin" {
		writeJSON(w, 409, obj{"status": "conflicting"})
		return
	}
	if !validRoles[u.Role] {
		writeJSON(w, 422, obj{"status": "invalid role"})
		return
	}
	if u.Email == "" {
		writeJSON(w, 422, obj{"status": "invalid email"})
		return
	}
	hash, err := HashPassword(pw)
	if err != nil {
		s.fail(w, err)
		return
	}
	u.PasswordHash = hash
	nu, err := s.Store.CreateUser(u)
	if errors.Is(err, ErrConflict) {
		writeJSON(w, 409, obj{"status": "conflicting"})
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 201, ok(obj{"user": nu.JSON()}))
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, c *Claims) {
	if !c.Approved {
		writeJSON(w, 403, obj{"status": "not approved yet"})
		return
	}
	var org *string
	if c.Role != "project_admin" {
		org = &c.Organization
	}
	users, err := s.Store.Users(org)
	if err != nil {
		s.fail(w, err)
		return
	}
	list := []obj{}
	for _, u := range users {
		list = append(list, u.JSON())
	}
	writeJSON(w, 200, ok(obj{"user_list": list}))
}

// pathID parses {id}; a non-number is an id that matches nothing.
func pathID(r *http.Request) int64 {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		return -1
	}
	return id
}

// checkRole is NVFlare's check_role: is the caller the user with this id,
// and is the caller a project admin.
func (s *Server) checkRole(userID int64, c *Claims) (creator, admin bool, err error) {
	u, err := s.Store.User(userID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false, false, err
	}
	return u != nil && u.Email == c.Sub, c.Role == "project_admin", nil
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request, c *Claims) {
	id := pathID(r)
	cr, admin, err := s.checkRole(id, c)
	if err != nil {
		s.fail(w, err)
		return
	}
	if !cr && !admin {
		writeJSON(w, 403, obj{"status": "unauthorized"})
		return
	}
	u, err := s.Store.User(id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, ok(obj{"user": u.JSON()}))
}

func (s *Server) patchUser(w http.ResponseWriter, r *http.Request, c *Claims) {
	id := pathID(r)
	cr, admin, err := s.checkRole(id, c)
	if err != nil {
		s.fail(w, err)
		return
	}
	if !cr && !admin {
		writeJSON(w, 403, obj{"status": "unauthorized"})
		return
	}
	m, good := readBody(w, r)
	if !good {
		return
	}
	u, err := s.Store.User(id)
	if errors.Is(err, ErrNotFound) {
		// NVFlare: HTTP 500 (AttributeError on None).
		writeJSON(w, 404, obj{"status": "error"})
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	org, orgSet, good := str(w, m, "organization")
	if !good {
		return
	}
	role, roleSet, good := str(w, m, "role")
	if !good {
		return
	}
	if roleSet && !validRoles[role] {
		writeJSON(w, 422, obj{"status": "invalid role"})
		return
	}
	pw, pwSet, good := str(w, m, "password")
	if !good {
		return
	}
	name, nameSet, good := str(w, m, "name")
	if !good {
		return
	}
	desc, descSet, good := str(w, m, "description")
	if !good {
		return
	}
	state, stateSet, good := integer(w, m, "approval_state")
	if !good {
		return
	}
	var events []auditEvent
	if admin {
		if orgSet && org != u.Organization {
			events = append(events, auditEvent{"set_user_organization", u.Email, u.Organization + " -> " + org})
			u.Organization = org
		}
		if roleSet && role != u.Role {
			events = append(events, auditEvent{"set_user_role", u.Email, u.Role + " -> " + role})
			u.Role = role
		}
		if stateSet && state != u.ApprovalState {
			events = append(events, auditEvent{"set_user_approval", u.Email, fmt.Sprintf("%d -> %d", u.ApprovalState, state)})
			u.ApprovalState = state
		}
	} else {
		if role == "project_admin" {
			writeJSON(w, 200, obj{"status": "error"})
			return
		}
		// A user may fill in a role or organization left empty at sign-up.
		if roleSet && u.Role == "" {
			u.Role = role
		}
		if orgSet && u.Organization == "" {
			u.Organization = org
		}
	}
	if pwSet {
		if u.PasswordHash, err = HashPassword(pw); err != nil {
			s.fail(w, err)
			return
		}
	}
	if nameSet {
		u.Name = name
	}
	if descSet {
		u.Description = desc
	}
	if err := s.Store.UpdateUser(u); err != nil {
		s.fail(w, err)
		return
	}
	s.auditAll(c.Sub, events)
	u, err = s.Store.User(id)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, ok(obj{"user": u.JSON()}))
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request, c *Claims) {
	id := pathID(r)
	cr, admin, err := s.checkRole(id, c)
	if err != nil {
		s.fail(w, err)
		return
	}
	if !cr && !admin {
		writeJSON(w, 403, obj{"status": "unauthorized"})
		return
	}
	if _, err := s.Store.User(id); errors.Is(err, ErrNotFound) {
		writeJSON(w, 404, obj{"status": "error"}) // NVFlare: 500
		return
	}
	u, _ := s.Store.User(id)
	if err := s.Store.DeleteUser(id); err != nil {
		s.fail(w, err)
		return
	}
	s.audit(c.Sub, "delete_user", u.Email, "")
	writeJSON(w, 200, ok(obj{}))
}

func (s *Server) createClient(w http.ResponseWriter, r *http.Request, c *Claims) {
	m, good := readBody(w, r)
	if !good {
		return
	}
	creator, err := s.Store.UserByEmail(c.Sub)
	if errors.Is(err, ErrNotFound) {
		writeJSON(w, 401, obj{"status": "unauthenticated"}) // NVFlare: 500
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	cl := &Client{CreatorID: creator.ID}
	for k, dst := range map[string]*string{"name": &cl.Name, "organization": &cl.Organization, "description": &cl.Description} {
		v, _, good := str(w, m, k)
		if !good {
			return
		}
		*dst = v
	}
	if cl.Name == "" {
		writeJSON(w, 422, obj{"status": "invalid name"}) // NVFlare stores a client without a name
		return
	}
	if !capacityOK(w, m) {
		return
	}
	cl.Capacity, _ = truthyJSON(m["capacity"])
	cl.Props, _ = truthyJSON(m["props"])
	nc, err := s.Store.CreateClient(cl)
	if errors.Is(err, ErrConflict) {
		writeJSON(w, 409, obj{"status": "conflicting"})
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 201, ok(obj{"client": nc.JSON()}))
}

// capacityOK: capacity, when given, is an object (NVFlare stores anything).
func capacityOK(w http.ResponseWriter, m obj) bool {
	if v, present := m["capacity"]; present && v != nil {
		if _, isObj := v.(obj); !isObj {
			writeJSON(w, 422, obj{"status": "invalid capacity"})
			return false
		}
	}
	return true
}

func (s *Server) listClients(w http.ResponseWriter, r *http.Request, c *Claims) {
	if !c.Approved {
		writeJSON(w, 403, obj{"status": "not approved yet"})
		return
	}
	cls, err := s.Store.Clients()
	if err != nil {
		s.fail(w, err)
		return
	}
	list := []obj{}
	for _, cl := range cls {
		list = append(list, cl.JSON())
	}
	writeJSON(w, 200, ok(obj{"client_list": list}))
}

func (s *Server) getClient(w http.ResponseWriter, r *http.Request, c *Claims) {
	if !c.Approved {
		writeJSON(w, 403, obj{"status": "not approved yet"})
		return
	}
	cl, err := s.Store.Client(pathID(r))
	if err != nil && !errors.Is(err, ErrNotFound) {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, ok(obj{"client": cl.JSON()}))
}

// clientAccess loads client {id} and checks the caller is its creator or a
// project admin, writing NVFlare's answer when not.
func (s *Server) clientAccess(w http.ResponseWriter, r *http.Request, c *Claims) (*Client, bool, bool) {
	cl, err := s.Store.Client(pathID(r))
	if errors.Is(err, ErrNotFound) {
		writeJSON(w, 404, obj{"status": "error"})
		return nil, false, false
	}
	if err != nil {
		s.fail(w, err)
		return nil, false, false
	}
	cr, admin, err := s.checkRole(cl.CreatorID, c)
	if err != nil {
		s.fail(w, err)
		return nil, false, false
	}
	if !cr && !admin {
		writeJSON(w, 403, obj{"status": "unauthorized"})
		return nil, false, false
	}
	return cl, admin, true
}

func (s *Server) patchClient(w http.ResponseWriter, r *http.Request, c *Claims) {
	cl, admin, good := s.clientAccess(w, r, c)
	if !good {
		return
	}
	m, good := readBody(w, r)
	if !good {
		return
	}
	org, orgSet, good := str(w, m, "organization")
	if !good {
		return
	}
	name, nameSet, good := str(w, m, "name")
	if !good {
		return
	}
	desc, descSet, good := str(w, m, "description")
	if !good {
		return
	}
	state, stateSet, good := integer(w, m, "approval_state")
	if !good {
		return
	}
	if !capacityOK(w, m) {
		return
	}
	if (nameSet && name != cl.Name) || (admin && orgSet && org != cl.Organization) {
		// A site registered with a certificate request is named by it.
		if _, err := s.Store.ClientRequest(cl.ID); err == nil {
			writeJSON(w, 409, obj{"status": "this site registered with a certificate request: its name and organization are the request's"})
			return
		} else if !errors.Is(err, ErrNotFound) {
			s.fail(w, err)
			return
		}
	}
	var events []auditEvent
	if admin {
		if orgSet && org != cl.Organization {
			events = append(events, auditEvent{"set_client_organization", cl.Name, cl.Organization + " -> " + org})
			cl.Organization = org
		}
		if stateSet && state != cl.ApprovalState {
			events = append(events, auditEvent{"set_client_approval", cl.Name, fmt.Sprintf("%d -> %d", cl.ApprovalState, state)})
			cl.ApprovalState = state
		}
	}
	if v, set := truthyJSON(m["capacity"]); set {
		cl.Capacity = v
	}
	if v, set := truthyJSON(m["props"]); set {
		cl.Props = v
	}
	if nameSet {
		if name == "" {
			writeJSON(w, 422, obj{"status": "invalid name"})
			return
		}
		cl.Name = name
	}
	if descSet {
		cl.Description = desc
	}
	err := s.Store.UpdateClient(cl)
	if errors.Is(err, ErrConflict) {
		writeJSON(w, 409, obj{"status": "conflicting"})
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	s.auditAll(c.Sub, events)
	if cl, err = s.Store.Client(cl.ID); err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, ok(obj{"client": cl.JSON()}))
}

func (s *Server) deleteClient(w http.ResponseWriter, r *http.Request, c *Claims) {
	cl, _, good := s.clientAccess(w, r, c)
	if !good {
		return
	}
	if err := s.Store.DeleteClient(cl.ID); err != nil {
		s.fail(w, err)
		return
	}
	s.audit(c.Sub, "delete_client", cl.Name, "")
	writeJSON(w, 200, ok(obj{}))
}
