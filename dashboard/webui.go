package dashboard

import (
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"strings"

	"github.com/flarekit/terraform-provider-flare/internal/approve"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/project"
)

// Our own web UI (issue 13 item 4): server-rendered HTML from embedded
// html/template files under /ui/, served by the same binary, no
// JavaScript. It is a client of the same store and rules as the API
// (kitDownload, saveProject, the login limiter).
//
// Sessions: the cookie flare_session holds an access token as the API's
// (HS256, 30 minutes), HttpOnly, SameSite=Strict, Secure when served over
// TLS, Path=/ui. Every request reads the user again from the store, so a
// role or approval change applies at once.
//
// CSRF: every form carries a token that must match. Signed in, it is the
// session token's csrf claim (a fresh uuid per login); before sign-in
// (login, sign-up) it is the value of the flare_csrf cookie (HttpOnly,
// SameSite=Strict; double submit). A POST whose token does not match, or
// that a browser marks Sec-Fetch-Site: cross-site, is refused with 403.

//go:embed webui
var webuiFS embed.FS

const (
	sessionCookie = "flare_session"
	csrfCookie    = "flare_csrf"
	uiBase        = "/ui"
)

// uiPageNames are the templates under webui/, each rendered inside layout.html.
var uiPageNames = []string{"home", "login", "signup", "project", "approvals", "sites", "downloads"}

func parseUITemplates() map[string]*template.Template {
	funcs := template.FuncMap{
		"state": approvalName,
		"gpus":  func(capacity string) string { return capacityField(capacity, "num_of_gpus") },
		"mem":   func(capacity string) string { return capacityField(capacity, "mem_per_gpu_in_GiB") },
		"decision": func(csrf, kind string, id, state int64) map[string]any {
			return map[string]any{"CSRF": csrf, "Kind": kind, "ID": id, "State": state}
		},
		"kitform": func(csrf, kind string, id int64, key string) map[string]any {
			return map[string]any{"CSRF": csrf, "Kind": kind, "ID": id, "Key": key}
		},
	}
	out := map[string]*template.Template{}
	for _, n := range uiPageNames {
		out[n] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(webuiFS, "webui/layout.html", "webui/"+n+".html"))
	}
	return out
}

// capacityField shows one number of a client's capacity JSON.
func capacityField(capacity, key string) string {
	var m map[string]any
	if json.Unmarshal([]byte(capacity), &m) != nil {
		return "—"
	}
	if v, ok := m[key].(float64); ok {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return "—"
}

func approvalName(state int64) string {
	switch {
	case state >= 200:
		return "project admin (seed)"
	case state >= 100:
		return "approved"
	case state < 0:
		return "rejected"
	default:
		return "pending"
	}
}

// uiSession is the signed-in user of a request, or nil.
type uiSession struct {
	Claims *Claims
	User   *User
}

func (u *uiSession) Admin() bool { return u != nil && u.User.Role == "project_admin" }

// page is what every template gets.
type page struct {
	Title   string
	Page    string
	CSRF    string
	Session *uiSession
	Project *Project
	Error   string
	Notice  string
	Data    any
}

// doneNotices are the fixed messages a redirect after a successful POST may
// name (?done=<key>), so a link cannot put words on the page.
var doneNotices = map[string]string{
	"request":  "Site registered with its certificate request. Once a project admin approves it, download its signed zip under Downloads.",
	"signup":   "Signed up. A project admin must approve your account before you can register sites or download kits.",
	"project":  "Project saved.",
	"frozen":   "Project frozen: the root CA is made, project fields are read-only and sign-up is open.",
	"approval": "Approval state saved.",
	"site":     "Site registered. A project admin must approve it before its kit can be downloaded.",
	"deleted":  "Site deleted.",
	"logout":   "Signed out.",
}

func (s *Server) uiRoutes(mux *http.ServeMux) {
	s.uiTemplates = parseUITemplates()
	static, _ := fs.Sub(webuiFS, "webui/static")
	mux.Handle("GET "+uiBase+"/static/", http.StripPrefix(uiBase+"/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET "+uiBase+"/{$}", s.uiHome)
	mux.HandleFunc("GET "+uiBase, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, uiBase+"/", http.StatusFound)
	})
	mux.HandleFunc("GET "+uiBase+"/login", s.uiLoginForm)
	mux.HandleFunc("POST "+uiBase+"/login", s.uiCSRF(s.uiLogin))
	mux.HandleFunc("POST "+uiBase+"/logout", s.uiCSRF(s.uiLogout))
	mux.HandleFunc("GET "+uiBase+"/signup", s.uiSignupForm)
	mux.HandleFunc("POST "+uiBase+"/signup", s.uiCSRF(s.uiSignup))
	mux.HandleFunc("GET "+uiBase+"/project", s.uiAdminOnly(s.uiProjectForm))
	mux.HandleFunc("POST "+uiBase+"/project", s.uiCSRF(s.uiAdminOnly(s.uiProject)))
	mux.HandleFunc("POST "+uiBase+"/project/freeze", s.uiCSRF(s.uiAdminOnly(s.uiFreeze)))
	mux.HandleFunc("GET "+uiBase+"/approvals", s.uiAdminOnly(s.uiApprovals))
	mux.HandleFunc("POST "+uiBase+"/approvals/{kind}/{id}", s.uiCSRF(s.uiAdminOnly(s.uiApprove)))
	mux.HandleFunc("GET "+uiBase+"/sites", s.uiSignedIn(s.uiSites))
	mux.HandleFunc("POST "+uiBase+"/sites", s.uiCSRF(s.uiSignedIn(s.uiAddSite)))
	mux.HandleFunc("POST "+uiBase+"/sites/{id}/delete", s.uiCSRF(s.uiSignedIn(s.uiDeleteSite)))
	mux.HandleFunc("POST "+uiBase+"/sites/request", s.uiCSRF(s.uiSignedIn(s.uiAddSiteRequest)))
	mux.HandleFunc("POST "+uiBase+"/downloads/signed/{id}", s.uiCSRF(s.uiSignedIn(s.uiDownloadSigned)))
	mux.HandleFunc("GET "+uiBase+"/downloads", s.uiSignedIn(s.uiDownloads))
	mux.HandleFunc("POST "+uiBase+"/downloads/{kind}/{id}", s.uiCSRF(s.uiSignedIn(s.uiDownload)))
}

func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: uiBase, MaxAge: maxAge,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// session returns the signed-in user, or nil (no, expired or refused token;
// a deleted or rejected user).
func (s *Server) session(r *http.Request) *uiSession {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil
	}
	c, aerr := VerifyToken(s.Key, "Bearer "+ck.Value, s.now())
	if aerr != nil {
		return nil
	}
	u, err := s.Store.UserByEmail(c.Sub)
	if err != nil || u.ApprovalState < 0 {
		return nil
	}
	// The claims the rules read are the user's current ones.
	c.Role, c.Organization, c.Approved = u.Role, u.Organization, u.ApprovalState >= 100
	return &uiSession{Claims: c, User: u}
}

// csrfToken is the token forms of this request must carry (setting the
// pre-session cookie when there is none).
func (s *Server) csrfToken(w http.ResponseWriter, r *http.Request, sess *uiSession) string {
	if sess != nil {
		return sess.Claims.Csrf
	}
	if ck, err := r.Cookie(csrfCookie); err == nil && len(ck.Value) == 64 {
		return ck.Value
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	s.setCookie(w, r, csrfCookie, tok, 0)
	return tok
}

// uiCSRF refuses a POST without the right token.
func (s *Server) uiCSRF(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<16)
		var err error
		if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
			err = r.ParseMultipartForm(1 << 16) // the request zip upload
		} else {
			err = r.ParseForm()
		}
		if err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		var want string
		if sess := s.session(r); sess != nil {
			want = sess.Claims.Csrf
		} else if ck, err := r.Cookie(csrfCookie); err == nil {
			want = ck.Value
		}
		got := r.PostFormValue("csrf")
		if r.Header.Get("Sec-Fetch-Site") == "cross-site" || want == "" ||
			subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			securityHeaders(w)
			http.Error(w, "invalid or missing CSRF token: reload the page and try again", http.StatusForbidden)
			return
		}
		h(w, r)
	}
}

type pageHandler func(w http.ResponseWriter, r *http.Request, sess *uiSession)

func (s *Server) uiSignedIn(h pageHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess := s.session(r)
		if sess == nil {
			http.Redirect(w, r, uiBase+"/login", http.StatusSeeOther)
			return
		}
		h(w, r, sess)
	}
}

func (s *Server) uiAdminOnly(h pageHandler) http.HandlerFunc {
	return s.uiSignedIn(func(w http.ResponseWriter, r *http.Request, sess *uiSession) {
		if !sess.Admin() {
			s.render(w, r, http.StatusForbidden, sess, "home", page{Title: "Forbidden", Error: "Only the project admin may do this."})
			return
		}
		h(w, r, sess)
	})
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, sess *uiSession, name string, p page) {
	p.Page = name
	p.Session = sess
	p.CSRF = s.csrfToken(w, r, sess)
	if p.Project == nil {
		proj, err := s.Store.Project()
		if err != nil {
			s.uiFail(w, err)
			return
		}
		p.Project = proj
	}
	if p.Notice == "" {
		p.Notice = doneNotices[r.URL.Query().Get("done")]
	}
	securityHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := s.uiTemplates[name].Execute(w, p); err != nil && s.Log != nil {
		s.Log.Printf("ui template %s: %v", name, err)
	}
}

func (s *Server) uiFail(w http.ResponseWriter, err error) {
	if s.Log != nil {
		s.Log.Printf("ui error: %v", err)
	}
	securityHeaders(w)
	http.Error(w, "internal error", http.StatusInternalServerError)
}

func seeOther(w http.ResponseWriter, r *http.Request, path, done string) {
	if done != "" {
		path += "?done=" + done
	}
	http.Redirect(w, r, uiBase+path, http.StatusSeeOther)
}

func (s *Server) uiHome(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, 200, s.session(r), "home", page{Title: "Overview"})
}

func (s *Server) uiLoginForm(w http.ResponseWriter, r *http.Request) {
	if sess := s.session(r); sess != nil {
		seeOther(w, r, "/", "")
		return
	}
	s.render(w, r, 200, nil, "login", page{Title: "Sign in"})
}

func (s *Server) uiLogin(w http.ResponseWriter, r *http.Request) {
	email, pw := strings.TrimSpace(r.PostFormValue("email")), r.PostFormValue("password")
	fail := func(status int, msg string) {
		s.render(w, r, status, nil, "login", page{Title: "Sign in", Error: msg, Data: email})
	}
	if s.limiter.blocked(email, s.now()) {
		fail(http.StatusTooManyRequests, "Too many failed sign-ins for this email: try again later.")
		return
	}
	u, err := s.Store.UserByEmail(email)
	if err != nil && !errors.Is(err, ErrNotFound) {
		s.uiFail(w, err)
		return
	}
	if u == nil || !CheckPassword(u.PasswordHash, pw) || u.ApprovalState < 0 {
		s.limiter.fail(email, s.now())
		if s.Log != nil {
			s.Log.Printf("failed ui login for %q from %s", email, clientIP(r))
		}
		fail(http.StatusUnauthorized, "Wrong email or password.")
		return
	}
	s.limiter.reset(email)
	tok, err := SignToken(s.Key, u, s.now())
	if err != nil {
		s.uiFail(w, err)
		return
	}
	s.setCookie(w, r, sessionCookie, tok, int(TokenTTL.Seconds()))
	s.setCookie(w, r, csrfCookie, "", -1)
	seeOther(w, r, "/", "")
}

func (s *Server) uiLogout(w http.ResponseWriter, r *http.Request) {
	s.setCookie(w, r, sessionCookie, "", -1)
	seeOther(w, r, "/login", "logout")
}

// signupForm is what the sign-up page shows again after an error.
type signupForm struct {
	Name, Email, Organization, Role string
}

var signupRoles = map[string]bool{"org_admin": true, "lead": true, "member": true}

func (s *Server) uiSignupForm(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, 200, s.session(r), "signup", page{Title: "Sign up", Data: signupForm{Role: "lead"}})
}

func (s *Server) uiSignup(w http.ResponseWriter, r *http.Request) {
	f := signupForm{Name: strings.TrimSpace(r.PostFormValue("name")), Email: strings.TrimSpace(r.PostFormValue("email")),
		Organization: strings.TrimSpace(r.PostFormValue("organization")), Role: r.PostFormValue("role")}
	pw, pw2 := r.PostFormValue("password"), r.PostFormValue("password2")
	fail := func(status int, msg string) {
		s.render(w, r, status, nil, "signup", page{Title: "Sign up", Error: msg, Data: f})
	}
	proj, err := s.Store.Project()
	if err != nil {
		s.uiFail(w, err)
		return
	}
	switch {
	case !proj.Frozen:
		fail(http.StatusConflict, "Sign-up opens when the project admin freezes the project.")
		return
	case f.Name == "" || f.Organization == "" || !strings.Contains(f.Email, "@"):
		fail(http.StatusUnprocessableEntity, "Name, a valid email and organization are required.")
		return
	case !signupRoles[f.Role]:
		fail(http.StatusUnprocessableEntity, "Choose a role: org admin, lead or member.")
		return
	case project.ValidateEmail(f.Email) != nil:
		fail(http.StatusUnprocessableEntity, project.ValidateEmail(f.Email).Error())
		return
	case project.ValidateOrg(f.Organization) != nil:
		fail(http.StatusUnprocessableEntity, project.ValidateOrg(f.Organization).Error())
		return
	case len(pw) < 8:
		fail(http.StatusUnprocessableEntity, "The password must have at least 8 characters.")
		return
	case pw != pw2:
		fail(http.StatusUnprocessableEntity, "The passwords do not match.")
		return
	}
	hash, err := HashPassword(pw)
	if err != nil {
		s.uiFail(w, err)
		return
	}
	if _, err := s.Store.CreateUser(&User{Email: f.Email, Name: f.Name, PasswordHash: hash, Role: f.Role, Organization: f.Organization}); errors.Is(err, ErrConflict) {
		fail(http.StatusConflict, "This email is already registered.")
		return
	} else if err != nil {
		s.uiFail(w, err)
		return
	}
	seeOther(w, r, "/login", "signup")
}

// projectForm is the project page's data.
type projectForm struct {
	NVFlareVersion string
	FedLearnPort   string
	AdminPort      string
	Versions       []string
}

func projectFormOf(p *Project) projectForm {
	f := projectForm{Versions: []string{"2.9", "2.8", "2.7"}}
	var pp struct {
		V string `json:"nvflare_version"`
	}
	_ = json.Unmarshal([]byte(p.ProjectProps), &pp)
	f.NVFlareVersion = pp.V
	var sp struct {
		F int `json:"fed_learn_port"`
		A int `json:"admin_port"`
	}
	_ = json.Unmarshal([]byte(p.ServerProps), &sp)
	if sp.F != 0 {
		f.FedLearnPort = strconv.Itoa(sp.F)
	}
	if sp.A != 0 {
		f.AdminPort = strconv.Itoa(sp.A)
	}
	return f
}

func (s *Server) uiProjectForm(w http.ResponseWriter, r *http.Request, sess *uiSession) {
	p, err := s.Store.Project()
	if err != nil {
		s.uiFail(w, err)
		return
	}
	s.render(w, r, 200, sess, "project", page{Title: "Project", Project: p, Data: projectFormOf(p)})
}

// setProps sets key in a JSON object column (empty: remove it).
func setProps(raw, key string, v any) string {
	m := map[string]any{}
	_ = json.Unmarshal([]byte(raw), &m)
	if v == nil || v == "" || v == 0 {
		delete(m, key)
	} else {
		m[key] = v
	}
	if len(m) == 0 {
		return ""
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func (s *Server) uiProject(w http.ResponseWriter, r *http.Request, sess *uiSession) {
	p, err := s.Store.Project()
	if err != nil {
		s.uiFail(w, err)
		return
	}
	fail := func(msg string) {
		s.render(w, r, http.StatusUnprocessableEntity, sess, "project", page{Title: "Project", Project: p, Error: msg, Data: projectFormOf(p)})
	}
	if p.Frozen {
		fail("The project is frozen: its fields are read-only.")
		return
	}
	f := r.PostFormValue
	p.Title, p.Description, p.AppLocation = f("title"), f("description"), f("app_location")
	p.StartingDate, p.EndDate, p.Server1 = f("starting_date"), f("end_date"), strings.TrimSpace(f("server1"))
	p.Public = f("public") == "on"
	if sn := []rune(strings.TrimSpace(f("short_name"))); len(sn) > 16 {
		p.ShortName = string(sn[:16])
	} else {
		p.ShortName = string(sn)
	}
	switch v := f("nvflare_version"); v {
	case "", "2.7", "2.8", "2.9":
		p.ProjectProps = setProps(p.ProjectProps, "nvflare_version", v)
	default:
		fail("Unknown NVFlare line " + v + ".")
		return
	}
	for _, k := range []string{"fed_learn_port", "admin_port"} {
		v := strings.TrimSpace(f(k))
		n := 0
		if v != "" {
			if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 65535 {
				fail(k + " must be a port number (1-65535).")
				return
			}
		}
		p.ServerProps = setProps(p.ServerProps, k, n)
	}
	if err := s.saveProject(p, sess.User.Email); err != nil {
		s.uiFail(w, err)
		return
	}
	seeOther(w, r, "/project", "project")
}

func (s *Server) uiFreeze(w http.ResponseWriter, r *http.Request, sess *uiSession) {
	p, err := s.Store.Project()
	if err != nil {
		s.uiFail(w, err)
		return
	}
	if p.Frozen {
		seeOther(w, r, "/project", "frozen")
		return
	}
	if r.PostFormValue("confirm") != "freeze" {
		s.render(w, r, http.StatusUnprocessableEntity, sess, "project", page{Title: "Project", Project: p,
			Error: "Tick the confirmation box to freeze: freezing cannot be undone.", Data: projectFormOf(p)})
		return
	}
	p.Frozen = true
	var be *blobError
	if err := s.saveProject(p, sess.User.Email); errors.As(err, &be) {
		p.Frozen = false
		s.render(w, r, be.status, sess, "project", page{Title: "Project", Project: p, Error: fmt.Sprint(be.body["status"]), Data: projectFormOf(p)})
		return
	} else if err != nil {
		s.uiFail(w, err)
		return
	}
	seeOther(w, r, "/project", "frozen")
}

// approvalsData is the approvals page's data.
type approvalsData struct {
	Users    []*User
	Clients  []*Client
	Creators map[int64]string
}

func (s *Server) uiApprovals(w http.ResponseWriter, r *http.Request, sess *uiSession) {
	users, err := s.Store.Users(nil)
	if err != nil {
		s.uiFail(w, err)
		return
	}
	clients, err := s.Store.Clients()
	if err != nil {
		s.uiFail(w, err)
		return
	}
	d := approvalsData{Users: users, Clients: clients, Creators: map[int64]string{}}
	for _, u := range users {
		d.Creators[u.ID] = u.Email
	}
	s.render(w, r, 200, sess, "approvals", page{Title: "Approvals", Data: d})
}

func (s *Server) uiApprove(w http.ResponseWriter, r *http.Request, sess *uiSession) {
	id := pathID(r)
	var state int64
	switch r.PostFormValue("decision") {
	case "approve":
		state = 100
	case "reject":
		state = -1
	case "pending":
		state = 0
	default:
		http.Error(w, "decision must be approve, reject or pending", http.StatusBadRequest)
		return
	}
	switch r.PathValue("kind") {
	case "users":
		u, err := s.Store.User(id)
		if errors.Is(err, ErrNotFound) {
			http.NotFound(w, r)
			return
		} else if err != nil {
			s.uiFail(w, err)
			return
		}
		if u.ApprovalState >= 200 {
			http.Error(w, "the seed project admin's state is fixed", http.StatusConflict)
			return
		}
		if u.ApprovalState != state {
			s.audit(sess.User.Email, "set_user_approval", u.Email, fmt.Sprintf("%d -> %d", u.ApprovalState, state))
			u.ApprovalState = state
			if err := s.Store.UpdateUser(u); err != nil {
				s.uiFail(w, err)
				return
			}
		}
	case "clients":
		cl, err := s.Store.Client(id)
		if errors.Is(err, ErrNotFound) {
			http.NotFound(w, r)
			return
		} else if err != nil {
			s.uiFail(w, err)
			return
		}
		if cl.ApprovalState != state {
			s.audit(sess.User.Email, "set_client_approval", cl.Name, fmt.Sprintf("%d -> %d", cl.ApprovalState, state))
			cl.ApprovalState = state
			if err := s.Store.UpdateClient(cl); err != nil {
				s.uiFail(w, err)
				return
			}
		}
	default:
		http.NotFound(w, r)
		return
	}
	seeOther(w, r, "/approvals", "approval")
}

// sitesData is the sites page's data.
type sitesData struct {
	Clients                         []*Client
	Requests                        map[int64]bool // sites registered with a certificate request
	Name, Organization, GPUs, MemGB string
}

func (s *Server) ownClients(sess *uiSession) ([]*Client, error) {
	all, err := s.Store.Clients()
	if err != nil {
		return nil, err
	}
	var own []*Client
	for _, c := range all {
		if c.CreatorID == sess.User.ID || sess.Admin() {
			own = append(own, c)
		}
	}
	return own, nil
}

func (s *Server) uiSites(w http.ResponseWriter, r *http.Request, sess *uiSession) {
	s.sitesPage(w, r, sess, 200, "", sitesData{Organization: sess.User.Organization, GPUs: "0", MemGB: "0"})
}

func (s *Server) sitesPage(w http.ResponseWriter, r *http.Request, sess *uiSession, status int, msg string, d sitesData) {
	own, err := s.ownClients(sess)
	if err != nil {
		s.uiFail(w, err)
		return
	}
	d.Clients = own
	if d.Requests, err = s.Store.RequestClientIDs(); err != nil {
		s.uiFail(w, err)
		return
	}
	s.render(w, r, status, sess, "sites", page{Title: "Sites", Error: msg, Data: d})
}

func (s *Server) uiAddSite(w http.ResponseWriter, r *http.Request, sess *uiSession) {
	d := sitesData{Name: strings.TrimSpace(r.PostFormValue("name")), Organization: strings.TrimSpace(r.PostFormValue("organization")),
		GPUs: strings.TrimSpace(r.PostFormValue("num_of_gpus")), MemGB: strings.TrimSpace(r.PostFormValue("mem_per_gpu_in_GiB"))}
	fail := func(status int, msg string) { s.sitesPage(w, r, sess, status, msg, d) }
	if !sess.Claims.Approved {
		fail(http.StatusForbidden, "Your account is not approved yet.")
		return
	}
	if !sess.Admin() || d.Organization == "" {
		d.Organization = sess.User.Organization // a site belongs to its registrant's organization
	}
	gpus, err1 := strconv.Atoi(d.GPUs)
	mem, err2 := strconv.ParseFloat(d.MemGB, 64)
	if err1 != nil || err2 != nil || gpus < 0 || mem < 0 || gpus > 1024 || mem > 1<<20 {
		fail(http.StatusUnprocessableEntity, "GPUs and memory per GPU must be non-negative numbers.")
		return
	}
	if err := project.ValidateName(project.TypeClient, d.Name); err != nil {
		fail(http.StatusUnprocessableEntity, err.Error())
		return
	}
	if err := project.ValidateOrg(d.Organization); err != nil {
		fail(http.StatusUnprocessableEntity, err.Error())
		return
	}
	capJSON, _ := json.Marshal(map[string]any{"num_of_gpus": gpus, "mem_per_gpu_in_GiB": mem})
	_, err := s.Store.CreateClient(&Client{Name: d.Name, Organization: d.Organization, CreatorID: sess.User.ID, Capacity: string(capJSON)})
	if errors.Is(err, ErrConflict) {
		fail(http.StatusConflict, "A site named "+d.Name+" is already registered.")
		return
	} else if err != nil {
		s.uiFail(w, err)
		return
	}
	seeOther(w, r, "/sites", "site")
}

func (s *Server) uiDeleteSite(w http.ResponseWriter, r *http.Request, sess *uiSession) {
	cl, err := s.Store.Client(pathID(r))
	if errors.Is(err, ErrNotFound) {
		http.NotFound(w, r)
		return
	} else if err != nil {
		s.uiFail(w, err)
		return
	}
	if cl.CreatorID != sess.User.ID && !sess.Admin() {
		http.Error(w, "not your site", http.StatusForbidden)
		return
	}
	if err := s.Store.DeleteClient(cl.ID); err != nil {
		s.uiFail(w, err)
		return
	}
	s.audit(sess.User.Email, "delete_client", cl.Name, "")
	seeOther(w, r, "/sites", "deleted")
}

// downloadsData is the downloads page's data.
type downloadsData struct {
	Clients     []*Client
	Requests    map[int64]bool // sites registered with a certificate request
	Fingerprint string         // the root's, for nvflare package --fingerprint
}

func (s *Server) uiDownloads(w http.ResponseWriter, r *http.Request, sess *uiSession) {
	s.downloadsPage(w, r, sess, 200, "")
}

func (s *Server) downloadsPage(w http.ResponseWriter, r *http.Request, sess *uiSession, status int, msg string) {
	own, err := s.ownClients(sess)
	if err != nil {
		s.uiFail(w, err)
		return
	}
	d := downloadsData{Clients: own}
	if d.Requests, err = s.Store.RequestClientIDs(); err != nil {
		s.uiFail(w, err)
		return
	}
	if proj, err := s.Store.Project(); err == nil && proj.RootCert != "" {
		if root, err := pki.ParseCertPEM([]byte(proj.RootCert)); err == nil {
			d.Fingerprint = approve.Fingerprint(root)
		}
	}
	s.render(w, r, status, sess, "downloads", page{Title: "Downloads", Error: msg, Data: d})
}

func (s *Server) uiDownload(w http.ResponseWriter, r *http.Request, sess *uiSession) {
	kind := r.PathValue("kind")
	if kind != kitServer && kind != kitClient && kind != kitAdmin {
		http.NotFound(w, r)
		return
	}
	pin := r.PostFormValue("pin")
	readPIN := func() (string, error) {
		if len(pin) < 6 {
			return "", &blobError{422, obj{"status": "the PIN must have at least 6 letters or digits"}}
		}
		return checkPIN(pin)
	}
	name, data, err := s.kitDownload(kind, pathID(r), sess.Claims, readPIN)
	var be *blobError
	if errors.As(err, &be) {
		status := be.status
		if status == 200 {
			status = http.StatusConflict
		}
		s.downloadsPage(w, r, sess, status, fmt.Sprintf("Cannot download: %v.", be.body["status"]))
		return
	} else if err != nil {
		s.uiFail(w, err)
		return
	}
	securityHeaders(w)
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s.zip"`, name))
	_, _ = w.Write(data)
}

// uiAddSiteRequest registers a site from the request zip `nvflare cert
// request` made (a multipart upload); the site keeps its private key.
func (s *Server) uiAddSiteRequest(w http.ResponseWriter, r *http.Request, sess *uiSession) {
	d := sitesData{Organization: sess.User.Organization, GPUs: "0", MemGB: "0"}
	fail := func(status int, msg string) { s.sitesPage(w, r, sess, status, msg, d) }
	if !sess.Claims.Approved {
		fail(http.StatusForbidden, "Your account is not approved yet.")
		return
	}
	f, _, err := r.FormFile("request_zip")
	if err != nil {
		fail(http.StatusBadRequest, "Choose the request zip that nvflare cert request made (<site>.request.zip).")
		return
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRequestZip+1))
	if err != nil || len(data) == 0 || len(data) > maxRequestZip {
		fail(http.StatusBadRequest, "The request zip is empty or too large.")
		return
	}
	_, _, err = s.registerRequest(sess.Claims, data, "", "")
	var be *blobError
	if errors.As(err, &be) {
		fail(be.status, fmt.Sprintf("Cannot register: %v.", be.body["status"]))
		return
	} else if err != nil {
		s.uiFail(w, err)
		return
	}
	seeOther(w, r, "/sites", "request")
}

// uiDownloadSigned sends the signed zip of a site registered with a
// request.
func (s *Server) uiDownloadSigned(w http.ResponseWriter, r *http.Request, sess *uiSession) {
	name, data, _, err := s.signedZip(pathID(r), sess.Claims)
	var be *blobError
	if errors.As(err, &be) {
		s.downloadsPage(w, r, sess, be.status, fmt.Sprintf("Cannot download: %v.", be.body["status"]))
		return
	} else if err != nil {
		s.uiFail(w, err)
		return
	}
	securityHeaders(w)
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, approve.SignedZipName(name)))
	_, _ = w.Write(data)
}
