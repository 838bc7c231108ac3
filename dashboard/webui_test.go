package dashboard

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// uiClient is a browser-like client: a cookie jar, no redirects followed.
type uiClient struct {
	t    *testing.T
	base string
	hc   *http.Client
}

func newUIClient(t *testing.T, ts *httptest.Server) *uiClient {
	jar, _ := cookiejar.New(nil)
	hc := *ts.Client() // a copy: ts.Client() is one shared client
	hc.Jar = jar
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &uiClient{t, ts.URL, &hc}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// get returns the page and the CSRF token of its first form.
func (c *uiClient) get(path string) (*http.Response, string, string) {
	c.t.Helper()
	resp, err := c.hc.Get(c.base + path)
	if err != nil {
		c.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	tok := ""
	if m := csrfField.FindStringSubmatch(string(b)); m != nil {
		tok = m[1]
	}
	return resp, string(b), tok
}

func (c *uiClient) post(path string, form url.Values, hdr ...string) (*http.Response, string) {
	c.t.Helper()
	req, _ := http.NewRequest("POST", c.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func cookieNamed(resp *http.Response, name string) *http.Cookie {
	for _, ck := range resp.Cookies() {
		if ck.Name == name {
			return ck
		}
	}
	return nil
}

// TestWebUISessionAndCSRF: cookies are HttpOnly, SameSite=Strict, Path=/ui
// and Secure exactly when served over TLS; every form POST without the
// right token (none, another session's, a cross-site request) is 403;
// logging out ends the session; pages set a CSP without scripts.
func TestWebUISessionAndCSRF(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		name := map[bool]string{false: "http", true: "https"}[tlsOn]
		t.Run(name, func(t *testing.T) {
			cred, _ := ParseCredential("admin@nvidia.com:Adm1nPassw0rd:nvidia")
			s, err := Open(t.TempDir(), &cred, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var ts *httptest.Server
			if tlsOn {
				ts = httptest.NewTLSServer(s.Handler())
			} else {
				ts = httptest.NewServer(s.Handler())
			}
			defer ts.Close()
			c := newUIClient(t, ts)

			resp, body, tok := c.get("/ui/login")
			if resp.StatusCode != 200 || tok == "" {
				t.Fatalf("login page: %d, token %q", resp.StatusCode, tok)
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script") {
				t.Fatalf("CSP %q", csp)
			}
			if strings.Contains(body, "<script") {
				t.Fatal("the login page has a script")
			}
			pre := cookieNamed(resp, csrfCookie)
			if pre == nil || !pre.HttpOnly || pre.SameSite != http.SameSiteStrictMode || pre.Secure != tlsOn || pre.Path != "/ui" {
				t.Fatalf("pre-session cookie %+v", pre)
			}

			login := url.Values{"email": {"admin@nvidia.com"}, "password": {"Adm1nPassw0rd"}}
			if r, _ := c.post("/ui/login", login); r.StatusCode != 403 {
				t.Fatalf("login without token: %d", r.StatusCode)
			}
			wrong := "0" + tok[1:]
			if tok[0] == '0' {
				wrong = "1" + tok[1:] // a token that differs for sure
			}
			login.Set("csrf", wrong)
			if r, _ := c.post("/ui/login", login); r.StatusCode != 403 {
				t.Fatalf("login with a wrong token: %d", r.StatusCode)
			}
			login.Set("csrf", tok)
			if r, _ := c.post("/ui/login", login, "Sec-Fetch-Site", "cross-site"); r.StatusCode != 403 {
				t.Fatalf("cross-site login: %d", r.StatusCode)
			}
			r, _ := c.post("/ui/login", login)
			if r.StatusCode != 303 {
				t.Fatalf("login: %d", r.StatusCode)
			}
			sess := cookieNamed(r, sessionCookie)
			if sess == nil || !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode || sess.Secure != tlsOn || sess.MaxAge != 1800 {
				t.Fatalf("session cookie %+v", sess)
			}

			_, _, stok := c.get("/ui/project")
			if stok == "" || stok == tok {
				t.Fatalf("signed-in token %q (pre-session %q)", stok, tok)
			}
			form := url.Values{"short_name": {"p"}, "server1": {"s.example"}}
			if r, _ := c.post("/ui/project", form); r.StatusCode != 403 {
				t.Fatalf("project without token: %d", r.StatusCode)
			}
			form.Set("csrf", tok) // the pre-session token no longer counts
			if r, _ := c.post("/ui/project", form); r.StatusCode != 403 {
				t.Fatalf("project with the pre-session token: %d", r.StatusCode)
			}
			// A second session's token is refused in the first.
			c2 := newUIClient(t, ts)
			_, _, tok2 := c2.get("/ui/login")
			c2.post("/ui/login", url.Values{"email": {"admin@nvidia.com"}, "password": {"Adm1nPassw0rd"}, "csrf": {tok2}})
			_, _, stok2 := c2.get("/ui/project")
			form.Set("csrf", stok2)
			if r, _ := c.post("/ui/project", form); r.StatusCode != 403 || stok2 == stok || stok2 == "" {
				t.Logf("stok %q stok2 %q", stok, stok2)
				t.Fatalf("project with another session's token: %d", r.StatusCode)
			}
			form.Set("csrf", stok)
			if r, _ := c.post("/ui/project", form); r.StatusCode != 303 {
				t.Fatalf("project: %d", r.StatusCode)
			}
			if p, _ := s.Store.Project(); p.ShortName != "p" || p.Server1 != "s.example" {
				t.Fatalf("project not saved: %+v", p)
			}
			if r, _ := c.post("/ui/project/freeze", url.Values{"confirm": {"freeze"}}); r.StatusCode != 403 {
				t.Fatalf("freeze without token: %d", r.StatusCode)
			}
			if r, _ := c.post("/ui/logout", url.Values{"csrf": {stok}}); r.StatusCode != 303 {
				t.Fatalf("logout: %d", r.StatusCode)
			}
			if r, _, _ := c.get("/ui/project"); r.StatusCode != 303 || r.Header.Get("Location") != "/ui/login" {
				t.Fatalf("after logout /ui/project: %d %s", r.StatusCode, r.Header.Get("Location"))
			}
		})
	}
}

// TestWebUIRules: what each kind of user may do through the UI.
func TestWebUIRules(t *testing.T) {
	cred, _ := ParseCredential("admin@nvidia.com:Adm1nPassw0rd:nvidia")
	s, err := Open(t.TempDir(), &cred, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	signIn := func(email, pw string) (*uiClient, string) {
		c := newUIClient(t, ts)
		_, _, tok := c.get("/ui/login")
		if r, body := c.post("/ui/login", url.Values{"email": {email}, "password": {pw}, "csrf": {tok}}); r.StatusCode != 303 {
			t.Fatalf("login %s: %d %s", email, r.StatusCode, body)
		}
		_, _, tok = c.get("/ui/")
		return c, tok
	}
	anon := newUIClient(t, ts)
	_, _, atok := anon.get("/ui/login")
	signup := url.Values{"csrf": {atok}, "name": {"M"}, "email": {"m@o.org"}, "organization": {"orgA"}, "role": {"member"},
		"password": {"Passw0rd!"}, "password2": {"Passw0rd!"}}
	if r, body := anon.post("/ui/signup", signup); r.StatusCode != 409 || !strings.Contains(body, "freezes the project") {
		t.Fatalf("sign-up before the freeze: %d", r.StatusCode)
	}
	admin, tok := signIn("admin@nvidia.com", "Adm1nPassw0rd")
	if r, body := admin.post("/ui/project/freeze", url.Values{"csrf": {tok}, "confirm": {"freeze"}}); r.StatusCode != 422 || !strings.Contains(body, "short_name and server1") {
		t.Fatalf("freeze without short_name: %d", r.StatusCode)
	}
	admin.post("/ui/project", url.Values{"csrf": {tok}, "short_name": {"p"}, "server1": {"localhost"}, "fed_learn_port": {"99999"}})
	if p, _ := s.Store.Project(); p.ShortName != "" {
		t.Fatal("a bad port was saved")
	}
	admin.post("/ui/project", url.Values{"csrf": {tok}, "short_name": {"p"}, "server1": {"localhost"}})
	if r, _ := admin.post("/ui/project/freeze", url.Values{"csrf": {tok}, "confirm": {"freeze"}}); r.StatusCode != 303 {
		t.Fatalf("freeze: %d", r.StatusCode)
	}
	if r, _ := admin.post("/ui/project", url.Values{"csrf": {tok}, "short_name": {"other"}, "server1": {"x"}}); r.StatusCode != 422 {
		t.Fatalf("edit after freeze: %d", r.StatusCode)
	}
	for _, bad := range []map[string]string{
		{"password2": "other"}, {"password": "short", "password2": "short"}, {"role": "project_admin"},
		{"organization": "bad org"}, {"email": "not-an-email"},
	} {
		f := url.Values{}
		for k, v := range signup {
			f[k] = v
		}
		for k, v := range bad {
			f.Set(k, v)
		}
		if r, _ := anon.post("/ui/signup", f); r.StatusCode != 422 {
			t.Errorf("sign-up with %v: %d", bad, r.StatusCode)
		}
	}
	if r, _ := anon.post("/ui/signup", signup); r.StatusCode != 303 {
		t.Fatalf("sign-up: %d", r.StatusCode)
	}
	if r, _ := anon.post("/ui/signup", signup); r.StatusCode != 409 {
		t.Fatalf("second sign-up: %d", r.StatusCode)
	}
	member, mtok := signIn("m@o.org", "Passw0rd!")
	for _, p := range []string{"/ui/project", "/ui/approvals"} {
		if r, _, _ := member.get(p); r.StatusCode != 403 {
			t.Errorf("member GET %s: %d", p, r.StatusCode)
		}
	}
	if r, _ := member.post("/ui/approvals/users/2", url.Values{"csrf": {mtok}, "decision": {"approve"}}); r.StatusCode != 403 {
		t.Fatalf("member approves self: %d", r.StatusCode)
	}
	site := url.Values{"csrf": {mtok}, "name": {"site-9"}, "organization": {"nvidia"}, "num_of_gpus": {"1"}, "mem_per_gpu_in_GiB": {"8"}}
	if r, _ := member.post("/ui/sites", site); r.StatusCode != 403 {
		t.Fatalf("unapproved member registers a site: %d", r.StatusCode)
	}
	admin.post("/ui/approvals/users/2", url.Values{"csrf": {tok}, "decision": {"approve"}})
	if u, _ := s.Store.User(2); u.ApprovalState != 100 {
		t.Fatalf("approval: %d", u.ApprovalState)
	}
	if r, _ := admin.post("/ui/approvals/users/1", url.Values{"csrf": {tok}, "decision": {"reject"}}); r.StatusCode != 409 {
		t.Fatalf("rejecting the seed admin: %d", r.StatusCode)
	}
	if r, _ := member.post("/ui/sites", site); r.StatusCode != 303 {
		t.Fatalf("site: %d", r.StatusCode)
	}
	if cl, _ := s.Store.Client(1); cl.Organization != "orgA" || cl.Capacity != `{"mem_per_gpu_in_GiB":8,"num_of_gpus":1}` {
		t.Fatalf("site %+v (a member's site is in the member's organization)", cl)
	}
	site.Set("name", "bad name!")
	if r, _ := member.post("/ui/sites", site); r.StatusCode != 422 {
		t.Fatalf("bad site name: %d", r.StatusCode)
	}
	if r, _ := member.post("/ui/downloads/client/1", url.Values{"csrf": {mtok}, "pin": {"abcdef12"}}); r.StatusCode != 409 {
		t.Fatalf("download of an unapproved site: %d", r.StatusCode)
	}
	if r, _ := member.post("/ui/downloads/server/1", url.Values{"csrf": {mtok}, "pin": {"abcdef12"}}); r.StatusCode != 403 {
		t.Fatalf("member downloads the server kit: %d", r.StatusCode)
	}
	admin.post("/ui/approvals/clients/1", url.Values{"csrf": {tok}, "decision": {"approve"}})
	if r, _ := member.post("/ui/downloads/client/1", url.Values{"csrf": {mtok}, "pin": {"ab-cdef"}}); r.StatusCode != 422 {
		t.Fatalf("download with a bad PIN: %d", r.StatusCode)
	}
	r, body := member.post("/ui/downloads/client/1", url.Values{"csrf": {mtok}, "pin": {"abcdef12"}})
	if r.StatusCode != 200 || r.Header.Get("Content-Type") != "application/zip" || !strings.HasPrefix(body, "PK") ||
		r.Header.Get("Content-Disposition") != `attachment; filename="site-9.zip"` {
		t.Fatalf("download: %d %v\n%s", r.StatusCode, r.Header, body)
	}
	// A rejected user's session ends at once.
	admin.post("/ui/approvals/users/2", url.Values{"csrf": {tok}, "decision": {"reject"}})
	if r, _, _ := member.get("/ui/sites"); r.StatusCode != 303 {
		t.Fatalf("rejected user's session: %d", r.StatusCode)
	}
	if r, _ := member.post("/ui/sites/1/delete", url.Values{"csrf": {mtok}}); r.StatusCode != 403 {
		t.Fatalf("rejected user's POST: %d", r.StatusCode)
	}
}
