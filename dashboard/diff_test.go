package dashboard

import (
	"archive/zip"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The differential test: one scripted session against NVFlare 2.9.0's own
// Dashboard (build/venv-2.9.0, Flask on 127.0.0.1) and against ours; status
// codes and JSON must match except ids, timestamps and tokens, and except
// the differences each step names with a reason.

const (
	diffSecret = "differential-test-secret-key-0123456789"
	diffAdmin  = "admin@nvidia.com"
	diffPass   = "Passw0rd1"
	diffCred   = diffAdmin + ":" + diffPass + ":nvidia"
)

func nvflarePython(t testing.TB) string {
	t.Helper()
	py, _ := filepath.Abs(filepath.Join("..", "build", "venv-2.9.0", "bin", "python"))
	if _, err := os.Stat(py); err != nil {
		if os.Getenv("FLARE_REQUIRE_NVFLARE") == "1" {
			t.Fatalf("FLARE_REQUIRE_NVFLARE=1 but NVFlare 2.9.0 is not installed at %s (make interop-venvs or mk/interop.mk installs it)", py)
		}
		t.Skipf("NVFlare 2.9.0 not installed at %s: skipping the differential test (set FLARE_REQUIRE_NVFLARE=1 to fail instead)", py)
	}
	return py
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startNVFlare runs NVFlare's Dashboard (wsgi app, Werkzeug dev server) on
// 127.0.0.1 with a throwaway web root and returns its API base. A start
// that dies (another process took the free port first) is retried.
func startNVFlare(t testing.TB, py string) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		base, err := tryStartNVFlare(t, py)
		if err == nil {
			return base
		}
		if attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("NVFlare's dashboard did not start (%v); retrying", err)
	}
}

func tryStartNVFlare(t testing.TB, py string) (string, error) {
	root := t.TempDir()
	port := freePort(t)
	cmd := exec.Command(py, "-c", fmt.Sprintf(
		"from nvflare.dashboard.wsgi import app; app.run(host='127.0.0.1', port=%d)", port))
	cmd.Env = append(os.Environ(), "NVFL_WEB_ROOT="+root, "NVFL_CREDENTIAL="+diffCred, "SECRET_KEY="+diffSecret)
	logBuf := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logBuf, logBuf
	cmd.Dir = root
	if err := cmd.Start(); err != nil {
		return "", err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	base := fmt.Sprintf("http://127.0.0.1:%d/nvflare-dashboard/api/v1", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			return "", fmt.Errorf("NVFlare's dashboard exited (%v):\n%s", err, logBuf.String())
		default:
		}
		resp, err := http.Get(base + "/project")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Cleanup(func() {
					stop()
					if t.Failed() {
						t.Logf("NVFlare dashboard log:\n%s", logBuf.String())
					}
				})
				return base, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return "", fmt.Errorf("NVFlare's dashboard did not answer on %s within 60s:\n%s", base, logBuf.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lockedBuffer is a bytes.Buffer safe for the child's output goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startOurs serves ours on 127.0.0.1 with the same admin and JWT key.
func startOurs(t *testing.T, prefix string) (string, *Server) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "jwt.key"), []byte(hex.EncodeToString([]byte(diffSecret))), 0o600); err != nil {
		t.Fatal(err)
	}
	cred, _ := ParseCredential(diffCred)
	s, err := Open(dir, &cred, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() { ts.Close(); s.Close() })
	return ts.URL + prefix, s
}

type answer struct {
	status int
	body   any
	raw    string
	header http.Header
}

func call(t *testing.T, method, url, auth string, body any) answer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, raw: string(raw), header: resp.Header}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		a.body = nil
	}
	return a
}

// ignoredKeys differ by nature between two servers.
var ignoredKeys = map[string]bool{"id": true, "created_at": true, "updated_at": true, "access_token": true}

// normalize drops ignored keys' values (keeping their JSON type) so two
// answers compare by keys, types and the values that matter.
func normalize(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, x := range t {
			if ignoredKeys[k] {
				out[k] = fmt.Sprintf("<%T>", x)
			} else {
				out[k] = normalize(x)
			}
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = normalize(x)
		}
		return out
	default:
		return v
	}
}

// step is one call of the session. who names a token (logged-in user) or is
// a literal Authorization header when it starts with "!". differs, when
// set, is why NVFlare's answer is not expected to equal ours; ours must
// then answer wantOurs.
type step struct {
	name     string
	method   string
	path     string
	who      string
	body     any
	differs  string
	wantOurs int
}

func TestDifferentialNVFlare(t *testing.T) {
	py := nvflarePython(t)
	if testing.Short() {
		t.Skip("-short: the differential test starts NVFlare's dashboard")
	}
	theirs := startNVFlare(t, py)
	ours, srv := startOurs(t, "/nvflare-dashboard/api/v1")
	bases := map[string]string{"nvflare": theirs, "ours": ours}
	tokens := map[string]map[string]string{"nvflare": {}, "ours": {}}

	// Tokens the test signs itself with the shared key: expired, and one
	// signed with another key.
	adminUser := &User{Email: diffAdmin, Role: "project_admin", Organization: "nvidia", ApprovalState: 200}
	expired, _ := SignToken([]byte(diffSecret), adminUser, time.Now().Add(-time.Hour))
	forged, _ := SignToken([]byte("not-the-key"), adminUser, time.Now())
	_ = srv

	login := func(name, email, pw string) step {
		return step{name: "login " + name, method: "POST", path: "/login", body: map[string]any{"email": email, "password": pw}}
	}
	steps := []step{
		{name: "project without login", method: "GET", path: "/project"},
		{name: "organizations without login", method: "GET", path: "/organizations"},
		{name: "login wrong password", method: "POST", path: "/login", body: map[string]any{"email": diffAdmin, "password": "nope"}},
		{name: "login unknown email", method: "POST", path: "/login", body: map[string]any{"email": "x@y.z", "password": "nope"}},
		login("admin", diffAdmin, diffPass),
		{name: "users without token", method: "GET", path: "/users"},
		{name: "users with a malformed token", method: "GET", path: "/users", who: "!Bearer abc"},
		{name: "users with an expired token", method: "GET", path: "/users", who: "!Bearer " + expired},
		{name: "users with a token signed by another key", method: "GET", path: "/users", who: "!Bearer " + forged},
		{name: "users as admin", method: "GET", path: "/users", who: "admin"},
		{name: "patch project", method: "PATCH", path: "/project", who: "admin", body: map[string]any{
			"title": "Diff", "description": "d", "short_name": "a-very-long-short-name", "server1": "server1.example.com",
			"app_location": "", "starting_date": "2026-01-01", "end_date": "2026-12-31", "public": true,
			"project_props": map[string]any{"k": "v"}, "ignored_key": 1}},
		{name: "sign up alice (org_admin, orgA)", method: "POST", path: "/users", body: map[string]any{
			"name": "Alice", "email": "alice@a.org", "password": "pw-alice", "organization": "orgA", "role": "org_admin"}},
		{name: "sign up bob (lead, orgA)", method: "POST", path: "/users", body: map[string]any{
			"name": "Bob", "email": "bob@a.org", "password": "pw-bob", "organization": "orgA", "role": "lead"}},
		{name: "sign up carol (member, orgB)", method: "POST", path: "/users", body: map[string]any{
			"name": "Carol", "email": "carol@b.org", "password": "pw-carol", "organization": "orgB", "role": "member"}},
		{name: "sign up dave (no role yet)", method: "POST", path: "/users", body: map[string]any{
			"name": "Dave", "email": "dave@b.org", "password": "pw-dave", "organization": "orgB", "role": ""}},
		{name: "sign up duplicate email", method: "POST", path: "/users", body: map[string]any{
			"name": "A2", "email": "alice@a.org", "password": "x", "organization": "orgA", "role": "lead"}},
		{name: "sign up as project_admin", method: "POST", path: "/users", body: map[string]any{
			"name": "Eve", "email": "eve@e.org", "password": "x", "organization": "orgE", "role": "project_admin"}},
		login("alice", "alice@a.org", "pw-alice"),
		login("bob", "bob@a.org", "pw-bob"),
		login("carol", "carol@b.org", "pw-carol"),
		login("dave", "dave@b.org", "pw-dave"),
		{name: "users as unapproved alice", method: "GET", path: "/users", who: "alice"},
		{name: "clients as unapproved alice", method: "GET", path: "/clients", who: "alice"},
		{name: "unapproved alice registers site-1", method: "POST", path: "/clients", who: "alice", body: map[string]any{
			"name": "site-1", "organization": "orgA", "description": "first",
			"capacity": map[string]any{"num_of_gpus": 2, "mem_per_gpu_in_GiB": 16}}},
		{name: "duplicate site-1", method: "POST", path: "/clients", who: "bob", body: map[string]any{
			"name": "site-1", "organization": "orgA"}},
		{name: "bob registers site-2 with props", method: "POST", path: "/clients", who: "bob", body: map[string]any{
			"name": "site-2", "organization": "orgA", "props": map[string]any{"listening_host": "h"}}},
		{name: "alice approves herself (ignored)", method: "PATCH", path: "/users/2", who: "alice", body: map[string]any{"approval_state": 100, "description": "me"}},
		{name: "alice reads bob", method: "GET", path: "/users/3", who: "alice"},
		{name: "alice reads herself", method: "GET", path: "/users/2", who: "alice"},
		{name: "dave fills in his role", method: "PATCH", path: "/users/5", who: "dave", body: map[string]any{"role": "lead", "organization": "orgC"}},
		{name: "dave tries project_admin", method: "PATCH", path: "/users/5", who: "dave", body: map[string]any{"role": "project_admin"}},
		{name: "admin approves alice", method: "PATCH", path: "/users/2", who: "admin", body: map[string]any{"approval_state": 100}},
		{name: "admin approves bob", method: "PATCH", path: "/users/3", who: "admin", body: map[string]any{"approval_state": 100}},
		{name: "admin approves carol and moves her", method: "PATCH", path: "/users/4", who: "admin", body: map[string]any{"approval_state": 100, "organization": "orgB2", "role": "lead"}},
		{name: "admin reads user 3", method: "GET", path: "/users/3", who: "admin"},
		{name: "alice's old token still says unapproved", method: "GET", path: "/users", who: "alice"},
		login("alice again", "alice@a.org", "pw-alice"),
		login("carol again", "carol@b.org", "pw-carol"),
		{name: "users as approved alice (orgA only)", method: "GET", path: "/users", who: "alice again"},
		{name: "users as approved carol (orgB2 only)", method: "GET", path: "/users", who: "carol again"},
		{name: "users as admin (all)", method: "GET", path: "/users", who: "admin"},
		{name: "clients as approved carol (all clients)", method: "GET", path: "/clients", who: "carol again"},
		{name: "client 1 as alice", method: "GET", path: "/clients/1", who: "alice again"},
		{name: "missing client as alice", method: "GET", path: "/clients/999", who: "alice again"},
		{name: "bob patches alice's client", method: "PATCH", path: "/clients/1", who: "bob", body: map[string]any{"description": "x"}},
		{name: "alice patches her client (approval ignored)", method: "PATCH", path: "/clients/1", who: "alice again", body: map[string]any{
			"approval_state": 100, "organization": "orgZ", "capacity": map[string]any{"num_of_gpus": 4, "mem_per_gpu_in_GiB": 32}}},
		{name: "admin approves site-1", method: "PATCH", path: "/clients/1", who: "admin", body: map[string]any{"approval_state": 100}},
		{name: "admin renames site-2 to site-1", method: "PATCH", path: "/clients/2", who: "admin", body: map[string]any{"name": "site-1"}},
		{name: "patch a missing client", method: "PATCH", path: "/clients/999", who: "admin", body: map[string]any{"name": "z"}},
		{name: "alice patches the project", method: "PATCH", path: "/project", who: "alice again", body: map[string]any{"title": "mine"}},
		{name: "server blob before freezing", method: "POST", path: "/servers/1/blob", who: "admin", body: map[string]any{"pin": "abc123"},
			differs: "NVFlare: HTTP 500 (no root CA before freezing); ours: 409", wantOurs: 409},
		{name: "organizations", method: "GET", path: "/organizations"},
		{name: "project counts", method: "GET", path: "/project"},
		{name: "freeze", method: "PATCH", path: "/project", who: "admin", body: map[string]any{"frozen": true}},
		{name: "patch a frozen project", method: "PATCH", path: "/project", who: "admin", body: map[string]any{"title": "late"}},
		{name: "frozen project", method: "GET", path: "/project"},
		{name: "sign up after freezing", method: "POST", path: "/users", body: map[string]any{
			"name": "Fay", "email": "fay@f.org", "password": "pw", "organization": "orgF", "role": "member"}},
		{name: "server blob as alice", method: "POST", path: "/servers/1/blob", who: "alice again", body: map[string]any{"pin": "abc123"}},
		{name: "server blob with an unsafe pin", method: "POST", path: "/servers/1/blob", who: "admin", body: map[string]any{"pin": "ab-12"},
			differs: "NVFlare: HTTP 500 (RuntimeError: unsafe download key); ours: 422", wantOurs: 422},
		{name: "server blob", method: "POST", path: "/servers/1/blob", who: "admin", body: map[string]any{"pin": "abc123"}},
		{name: "client blob by its creator", method: "POST", path: "/clients/1/blob", who: "alice again", body: map[string]any{"pin": "abc123"}},
		{name: "client blob by another user", method: "POST", path: "/clients/1/blob", who: "carol again", body: map[string]any{"pin": "abc123"}},
		{name: "blob of an unapproved client", method: "POST", path: "/clients/2/blob", who: "bob", body: map[string]any{"pin": "abc123"}},
		{name: "user blob of oneself", method: "POST", path: "/users/2/blob", who: "alice again", body: map[string]any{"pin": "abc123"}},
		{name: "user blob of another user", method: "POST", path: "/users/2/blob", who: "carol again", body: map[string]any{"pin": "abc123"}},
		{name: "user blob of an unapproved user", method: "POST", path: "/users/5/blob", who: "dave", body: map[string]any{"pin": "abc123"}},
		{name: "user blob by the project admin", method: "POST", path: "/users/3/blob", who: "admin", body: map[string]any{"pin": "abc123"}},
		{name: "counts after downloads", method: "GET", path: "/users/2", who: "admin"},
		{name: "bob deletes his client", method: "DELETE", path: "/clients/2", who: "bob"},
		{name: "clients after delete", method: "GET", path: "/clients", who: "admin"},
		{name: "admin patches a missing user", method: "PATCH", path: "/users/999", who: "admin", body: map[string]any{"name": "z"},
			differs: "NVFlare: HTTP 500 (AttributeError on a missing user); ours: 404", wantOurs: 404},
		{name: "register a client without a name", method: "POST", path: "/clients", who: "admin", body: map[string]any{"organization": "nvidia"},
			differs: "NVFlare stores a client with a null name (201); ours refuses it", wantOurs: 422},
		{name: "sign up with an unknown role", method: "POST", path: "/users", body: map[string]any{
			"name": "G", "email": "g@g.org", "password": "pw", "organization": "orgG", "role": "superuser"},
			differs: "NVFlare stores any role string (201); ours accepts org_admin, lead, member or empty", wantOurs: 422},
	}

	for _, st := range steps {
		answers := map[string]answer{}
		for _, side := range []string{"nvflare", "ours"} {
			auth := ""
			switch {
			case strings.HasPrefix(st.who, "!"):
				auth = st.who[1:]
			case st.who != "":
				tok, found := tokens[side][st.who]
				if !found {
					t.Fatalf("%s: no token %q on %s", st.name, st.who, side)
				}
				auth = "Bearer " + tok
			}
			a := call(t, st.method, bases[side]+st.path, auth, st.body)
			answers[side] = a
			if strings.HasPrefix(st.name, "login ") && a.status == 200 {
				tokens[side][strings.TrimPrefix(st.name, "login ")] = a.body.(map[string]any)["access_token"].(string)
			}
		}
		n, o := answers["nvflare"], answers["ours"]
		if os.Getenv("FLARE_DIFF_VERBOSE") == "1" {
			t.Logf("%s %s %s\n nvflare %d %s ours    %d %s", st.name, st.method, st.path, n.status, n.raw, o.status, o.raw)
		}
		if st.differs != "" {
			if o.status != st.wantOurs {
				t.Errorf("%s: ours answered %d %s, want %d (%s)", st.name, o.status, o.raw, st.wantOurs, st.differs)
			}
			t.Logf("%s: known difference: NVFlare %d, ours %d (%s)", st.name, n.status, o.status, st.differs)
			continue
		}
		if n.status != o.status {
			t.Errorf("%s %s %s: status NVFlare %d, ours %d\n nvflare: %s\n ours:    %s", st.name, st.method, st.path, n.status, o.status, n.raw, o.raw)
			continue
		}
		if n.body == nil && n.status == 200 {
			// A kit: compare the download headers; the zips' file lists
			// differ by design (see zipNames).
			for _, h := range []string{"Content-Type", "Content-Disposition"} {
				if n.header.Get(h) != o.header.Get(h) {
					t.Errorf("%s: %s NVFlare %q, ours %q", st.name, h, n.header.Get(h), o.header.Get(h))
				}
			}
			checkKits(t, st.name, n.raw, o.raw)
			continue
		}
		nn, on := normalize(n.body), normalize(o.body)
		if !reflect.DeepEqual(nn, on) {
			t.Errorf("%s %s %s: JSON differs\n nvflare: %s\n ours:    %s", st.name, st.method, st.path, canon(nn), canon(on))
		}
	}
}

// Kit files that differ by design between NVFlare's Dashboard and ours.
var (
	// NVFlare's Dashboard runs its DockerBuilder-like StaticFileBuilder
	// output and the AWS and Azure builders; the provider's kits (the
	// same as `nvflare provision` without those builders) do not have them.
	onlyNVFlare = map[string]bool{"startup/docker.sh": true, "startup/aws_start.sh": true, "startup/azure_start.sh": true}
	// Ours are signed (signature.json in startup/ and local/), so a
	// tampered kit refuses to start; NVFlare's Dashboard kits are not.
	onlyOurs = map[string]bool{"startup/signature.json": true, "local/signature.json": true}
)

// checkKits opens NVFlare's zip and ours with `unzip -P` and the PIN, and
// compares both kits' file lists.
func checkKits(t *testing.T, name, theirs, ours string) {
	t.Helper()
	files, _, err := unzipWithPIN(t, []byte(theirs), "abc123")
	if err != nil {
		t.Errorf("%s: unzip -P cannot open NVFlare's zip: %v", name, err)
	}
	if len(files) == 0 {
		t.Errorf("%s: NVFlare's zip is empty", name)
	}
	ourFiles, _, err := unzipWithPIN(t, []byte(ours), "abc123")
	if err != nil {
		t.Errorf("%s: our zip: %v", name, err)
	}
	// FLARE_DIFF_KEEP=<dir>: write both kits there, decrypted, to compare.
	if keep := os.Getenv("FLARE_DIFF_KEEP"); keep != "" {
		for side, fs := range map[string]map[string][]byte{"nvflare": files, "ours": ourFiles} {
			for f, data := range fs {
				p := filepath.Join(keep, strings.ReplaceAll(name, " ", "_"), side, f)
				if strings.HasSuffix(f, "/") {
					continue
				}
				_ = os.MkdirAll(filepath.Dir(p), 0o700)
				_ = os.WriteFile(p, data, 0o600)
			}
		}
	}
	// Every JSON file both kits have is equal, but for the communication
	// scheme: NVFlare's Dashboard writes "grpc", internal/kit writes
	// NVFlare provision's default "http" (both start on NVFlare 2.9).
	compared := 0
	for f, theirData := range files {
		ourData, both := ourFiles[f]
		if !both || !(strings.HasSuffix(f, ".json") || strings.HasSuffix(f, ".json.default") || strings.HasSuffix(f, ".json.sample")) {
			continue
		}
		compared++
		var a, b any
		if json.Unmarshal(theirData, &a) != nil || json.Unmarshal(ourData, &b) != nil {
			t.Errorf("%s: %s is not JSON in one of the kits", name, f)
			continue
		}
		if a, b = dropKey(a, "scheme"), dropKey(b, "scheme"); !reflect.DeepEqual(a, b) {
			t.Errorf("%s: %s differs\n nvflare: %s\n ours:    %s", name, f, canon(a), canon(b))
		}
	}
	if compared < 2 {
		t.Errorf("%s: only %d JSON files compared", name, compared)
	}
	n, o := map[string]bool{}, map[string]bool{}
	for _, f := range zipNames(theirs) {
		n[f] = true
	}
	for _, f := range zipNames(ours) {
		o[f] = true
	}
	for f := range n {
		if !o[f] && !onlyNVFlare[f] {
			t.Errorf("%s: NVFlare's kit has %s, ours does not", name, f)
		}
	}
	for f := range o {
		if !n[f] && !onlyOurs[f] {
			t.Errorf("%s: our kit has %s, NVFlare's does not", name, f)
		}
	}
}

func dropKey(v any, key string) any {
	switch t := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, x := range t {
			if k != key {
				out[k] = dropKey(x, key)
			}
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = dropKey(x, key)
		}
		return out
	}
	return v
}

// zipNames lists a zip's entries (names only: the files are encrypted).
func zipNames(data string) []string {
	zr, err := zip.NewReader(strings.NewReader(data), int64(len(data)))
	if err != nil {
		return []string{"<not a zip: " + err.Error() + ">"}
	}
	var out []string
	for _, f := range zr.File {
		out = append(out, strings.TrimPrefix(f.Name, "./"))
	}
	sort.Strings(out)
	return out
}

func canon(v any) string {
	b, _ := json.Marshal(sortKeys(v))
	return string(b)
}

func sortKeys(v any) any {
	if m, isMap := v.(map[string]any); isMap {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := map[string]any{}
		for _, k := range keys {
			out[k] = sortKeys(m[k])
		}
		return out
	}
	return v
}
