package dashboard

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPasswordHash(t *testing.T) {
	h, err := HashPassword("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q is not argon2id PHC", h)
	}
	if !CheckPassword(h, "s3cret") || CheckPassword(h, "s3cret ") || CheckPassword(h, "") {
		t.Fatal("CheckPassword")
	}
	h2, _ := HashPassword("s3cret")
	if h == h2 {
		t.Fatal("no salt")
	}
	for _, bad := range []string{"", "plain", "$argon2id$v=19$m=0,t=0,p=0$AA$AA", "$2b$12$abc"} {
		if CheckPassword(bad, "s3cret") {
			t.Fatalf("CheckPassword(%q) accepted", bad)
		}
	}
}

func TestToken(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	u := &User{Email: "a@b.c", Role: "lead", Organization: "o", ApprovalState: 100}
	at := time.Unix(1_800_000_000, 0)
	tok, err := SignToken(key, u, at)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	hdr, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if string(hdr) != `{"alg":"HS256","typ":"JWT"}` {
		t.Fatalf("header %s", hdr)
	}
	var claims map[string]any
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"fresh", "iat", "jti", "type", "sub", "nbf", "csrf", "exp", "role", "organization", "approved"} {
		if _, found := claims[k]; !found {
			t.Errorf("claim %s missing", k)
		}
	}
	if claims["exp"].(float64)-claims["iat"].(float64) != 1800 || claims["sub"] != "a@b.c" || claims["approved"] != true || claims["type"] != "access" {
		t.Fatalf("claims %v", claims)
	}
	c, aerr := VerifyToken(key, "Bearer "+tok, at.Add(time.Minute))
	if aerr != nil || c.Role != "lead" || c.Organization != "o" || !c.Approved {
		t.Fatalf("verify: %v %v", c, aerr)
	}
	cases := []struct {
		header string
		at     time.Time
		status int
	}{
		{"", at, 401},
		{"Basic x", at, 401},
		{"Bearer a b", at, 422},
		{"Bearer abc", at, 422},
		{"Bearer " + tok[:len(tok)-2] + "AA", at, 422},
		{"Bearer " + tok, at.Add(TokenTTL), 401},
		{"Bearer " + tok, at.Add(-time.Minute), 422},
	}
	for _, tc := range cases {
		if _, aerr := VerifyToken(key, tc.header, tc.at); aerr == nil || aerr.status != tc.status {
			t.Errorf("VerifyToken(%.30q): %v, want status %d", tc.header, aerr, tc.status)
		}
	}
	other, _ := SignToken([]byte("another key of enough length...."), u, at)
	if _, aerr := VerifyToken(key, "Bearer "+other, at); aerr == nil || aerr.body["msg"] != "Signature verification failed" {
		t.Fatalf("foreign key: %v", aerr)
	}
}

func TestParseCredential(t *testing.T) {
	c, err := ParseCredential("a@b.c:pw:org")
	if err != nil || c.Email != "a@b.c" || c.Password != "pw" || c.Org != "org" {
		t.Fatal(c, err)
	}
	for _, bad := range []string{"a@b.c:pw", "a@b.c:pw:org:x", ":pw:org", "a@b.c::org"} {
		if _, err := ParseCredential(bad); err == nil {
			t.Errorf("ParseCredential(%q) accepted", bad)
		}
	}
}

type client struct {
	t    *testing.T
	base string
}

func (c client) do(method, path, token string, body any) (int, map[string]any) {
	c.t.Helper()
	auth := ""
	if token != "" {
		auth = "Bearer " + token
	}
	a := call(c.t, method, c.base+path, auth, body)
	m, _ := a.body.(map[string]any)
	return a.status, m
}

func (c client) login(email, pw string) string {
	c.t.Helper()
	st, m := c.do("POST", "/api/v1/login", "", map[string]any{"email": email, "password": pw})
	if st != 200 {
		c.t.Fatalf("login %s: %d %v", email, st, m)
	}
	return m["access_token"].(string)
}

// TestFirstStartAndRestart: the generated admin password is printed, files
// are 0600, and a restart keeps users, the project and valid tokens.
func TestFirstStartAndRestart(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	s, err := Open(dir, nil, &out)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`email (\S+), password (\S+) `).FindStringSubmatch(out.String())
	if m == nil || m[1] != "admin@nvidia.com" {
		t.Fatalf("no generated password printed: %q", out.String())
	}
	for _, f := range []string{"db.sqlite", "jwt.key"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want mode 0600", f, fi.Mode(), err)
		}
	}
	if v, err := s.Store.SchemaVersion(); err != nil || v != len(migrations) {
		t.Fatalf("schema version %d %v", v, err)
	}
	ts := httptest.NewServer(s.Handler())
	c := client{t, ts.URL}
	if st, _ := c.do("GET", "/healthz", "", nil); st != 200 {
		t.Fatalf("healthz %d", st)
	}
	tok := c.login(m[1], m[2])
	if st, r := c.do("PATCH", "/api/v1/project", tok, map[string]any{"title": "kept"}); st != 200 {
		t.Fatalf("patch project %d %v", st, r)
	}
	if st, _ := c.do("POST", "/api/v1/users", "", map[string]any{"email": "u@o.org", "password": "p", "organization": "o", "role": "member"}); st != 201 {
		t.Fatalf("sign-up %d", st)
	}
	ts.Close()
	s.Close()

	out.Reset()
	cred, _ := ParseCredential("other@x.org:pw:x")
	s2, err := Open(dir, &cred, &out) // --cred on a later start changes nothing
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if out.Len() != 0 {
		t.Fatalf("restart printed %q", out.String())
	}
	ts2 := httptest.NewServer(s2.Handler())
	defer ts2.Close()
	c2 := client{t, ts2.URL}
	st, r := c2.do("GET", "/nvflare-dashboard/api/v1/users", tok, nil)
	if st != 200 || len(r["user_list"].([]any)) != 2 {
		t.Fatalf("token after restart: %d %v", st, r)
	}
	_, r = c2.do("GET", "/api/v1/project", "", nil)
	if r["project"].(map[string]any)["title"] != "kept" {
		t.Fatalf("project after restart %v", r)
	}
	if st, _ := c2.do("POST", "/api/v1/login", "", map[string]any{"email": "other@x.org", "password": "pw"}); st != 401 {
		t.Fatalf("--cred on restart created a user: %d", st)
	}
}

// TestAPIRules checks role rules and input handling that the differential
// test does not reach (it needs NVFlare) or where ours is stricter.
func TestAPIRules(t *testing.T) {
	dir := t.TempDir()
	cred, _ := ParseCredential("admin@x.org:pw:nvidia")
	s, err := Open(dir, &cred, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	c := client{t, ts.URL}
	admin := c.login("admin@x.org", "pw")

	if st, _ := c.do("POST", "/api/v1/users", "", map[string]any{"email": "m@o.org", "password": "p", "organization": "o", "role": "member"}); st != 201 {
		t.Fatal(st)
	}
	member := c.login("m@o.org", "p")
	if st, r := c.do("PATCH", "/api/v1/project", member, map[string]any{"title": "x"}); st != 403 || r["status"] != "unauthorized" {
		t.Fatalf("member patches project: %d %v", st, r)
	}
	if st, _ := c.do("POST", "/api/v1/users", "", map[string]any{"email": "m@o.org", "password": "p", "role": "lead"}); st != 409 {
		t.Fatalf("duplicate: %d", st)
	}
	if st, _ := c.do("POST", "/api/v1/users", "", map[string]any{"email": 5, "password": "p"}); st != 422 {
		t.Fatalf("wrong type: %d", st)
	}
	if st, _ := c.do("PATCH", "/api/v1/project", admin, map[string]any{"frozen": "yes"}); st != 422 {
		t.Fatalf("frozen as string: %d", st)
	}
	// short_name is cut to 16 characters, not bytes.
	if _, r := c.do("PATCH", "/api/v1/project", admin, map[string]any{"short_name": "ääääääääääääääääää"}); r["project"].(map[string]any)["short_name"] != "ääääääääääääääää" {
		t.Fatalf("short_name: %v", r)
	}
	// Bad JSON body.
	req := httptest.NewRequest("POST", "/api/v1/login", strings.NewReader("{"))
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	if w.Code != 400 {
		t.Fatalf("bad JSON: %d", w.Code)
	}
	// A refused (negative approval_state) user cannot log in.
	if st, _ := c.do("PATCH", "/api/v1/users/2", admin, map[string]any{"approval_state": -1}); st != 200 {
		t.Fatal(st)
	}
	if st, _ := c.do("POST", "/api/v1/login", "", map[string]any{"email": "m@o.org", "password": "p"}); st != 401 {
		t.Fatalf("refused user logs in: %d", st)
	}
	// Capacity must be an object.
	if st, _ := c.do("POST", "/api/v1/clients", admin, map[string]any{"name": "s", "capacity": "lots"}); st != 422 {
		t.Fatalf("capacity string: %d", st)
	}
	// Deleting a user deletes the clients it registered.
	if st, _ := c.do("POST", "/api/v1/clients", member, map[string]any{"name": "site-m", "organization": "o"}); st != 201 {
		t.Fatal(st)
	}
	if st, _ := c.do("DELETE", "/api/v1/users/2", admin, nil); st != 200 {
		t.Fatal(st)
	}
	if _, r := c.do("GET", "/api/v1/clients", admin, nil); len(r["client_list"].([]any)) != 0 {
		t.Fatalf("clients left: %v", r)
	}
	if st, _ := c.do("DELETE", "/api/v1/users/2", admin, nil); st != 404 {
		t.Fatalf("delete missing user: %d", st)
	}
	// Freezing needs short_name and server1 (they name the root CA and
	// the server); then later patches answer 200 "Project is frozen".
	if st, _ := c.do("PATCH", "/api/v1/project", admin, map[string]any{"frozen": true}); st != 422 {
		t.Fatalf("freeze without short_name: %d", st)
	}
	if st, _ := c.do("PATCH", "/api/v1/project", admin, map[string]any{"frozen": true, "short_name": "p", "server1": "server1"}); st != 200 {
		t.Fatal(st)
	}
	if st, r := c.do("PATCH", "/api/v1/project", admin, map[string]any{"frozen": false}); st != 200 || r["status"] != "Project is frozen" {
		t.Fatalf("%d %v", st, r)
	}
	if _, r := c.do("GET", "/api/v1/project", "", nil); r["project"].(map[string]any)["frozen"] != true {
		t.Fatalf("%v", r)
	}
}

// TestConcurrentUse: sign-ups, logins, registrations and listings from
// many goroutines at once all succeed (one SQLite connection, bounded
// argon2id work).
func TestConcurrentUse(t *testing.T) {
	cred, _ := ParseCredential("admin@x.org:pw:nvidia")
	s, err := Open(t.TempDir(), &cred, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	c := client{t, ts.URL}
	admin := c.login("admin@x.org", "pw")
	const n = 40
	errs := make(chan string, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			email := fmt.Sprintf("u%d@o.org", i)
			if st, _ := c.do("POST", "/api/v1/users", "", map[string]any{"email": email, "password": "p", "organization": "o", "role": "member"}); st != 201 {
				errs <- fmt.Sprintf("sign-up %d: %d", i, st)
				return
			}
			st, r := c.do("POST", "/api/v1/login", "", map[string]any{"email": email, "password": "p"})
			if st != 200 {
				errs <- fmt.Sprintf("login %d: %d", i, st)
				return
			}
			tok := r["access_token"].(string)
			if st, _ := c.do("POST", "/api/v1/clients", tok, map[string]any{"name": fmt.Sprintf("site-%d", i), "organization": "o"}); st != 201 {
				errs <- fmt.Sprintf("client %d: %d", i, st)
			}
			if st, _ := c.do("GET", "/api/v1/users", admin, nil); st != 200 {
				errs <- fmt.Sprintf("list %d: %d", i, st)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	_, r := c.do("GET", "/api/v1/project", "", nil)
	p := r["project"].(map[string]any)
	if p["num_users"] != float64(n+1) || p["num_clients"] != float64(n) {
		t.Fatalf("counts %v", p)
	}
}

// TestMigrations: a database at schema 1 (the first release) is migrated
// to the newest on open, keeping its rows.
func TestMigrations(t *testing.T) {
	dir := t.TempDir()
	saved := migrations
	migrations = migrations[:1]
	cred, _ := ParseCredential("admin@x.org:pw:nvidia")
	s, err := Open(dir, &cred, io.Discard)
	migrations = saved
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Store.SchemaVersion(); v != 1 {
		t.Fatalf("version %d", v)
	}
	s.Close()
	s, err = Open(dir, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, _ := s.Store.SchemaVersion(); v != len(migrations) {
		t.Fatalf("version %d after migrating, want %d", v, len(migrations))
	}
	if u, err := s.Store.UserByEmail("admin@x.org"); err != nil || u.ID != 1 {
		t.Fatalf("admin after migrating: %v %v", u, err)
	}
	if err := s.Store.Audit("a", "b", "c", "d"); err != nil {
		t.Fatal(err)
	}
	// A database newer than the binary is refused.
	s.Store.db.Exec(`INSERT INTO schema_migrations(version, applied_at) VALUES (99, 'x')`)
	s.Close()
	if _, err := Open(dir, nil, io.Discard); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("newer schema: %v", err)
	}
}
