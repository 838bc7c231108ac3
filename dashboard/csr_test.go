package dashboard

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/flarekit/terraform-provider-flare/internal/approve"
	"github.com/flarekit/terraform-provider-flare/internal/approve/approvetest"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// raw sends body as is and returns status, body and headers.
func raw(t *testing.T, method, url, token, contentType string, body []byte) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

func status(b []byte) string {
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	s, _ := m["status"].(string)
	return s
}

// csrDashboard is a frozen Dashboard (project "csrproj", server
// server1.example.com) with an approved lead and an approved other user.
func csrDashboard(t *testing.T) (s *Server, api string, c client, admin, lead, other string) {
	t.Helper()
	cred, _ := ParseCredential("admin@x.org:pw:nvidia")
	dir := t.TempDir()
	s, err := Open(dir, &cred, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() { ts.Close(); s.Close() })
	c = client{t, ts.URL}
	admin = c.login("admin@x.org", "pw")
	c.do("POST", "/api/v1/users", "", map[string]any{"email": "lead@o.org", "password": "p", "organization": "orgA", "role": "lead"})
	c.do("POST", "/api/v1/users", "", map[string]any{"email": "other@o.org", "password": "p", "organization": "orgA", "role": "lead"})
	lead, other = c.login("lead@o.org", "p"), c.login("other@o.org", "p")
	return s, ts.URL + "/api/v1", c, admin, lead, other
}

func freeze(t *testing.T, c client, admin, short string) {
	t.Helper()
	if st, r := c.do("PATCH", "/api/v1/project", admin, map[string]any{"short_name": short, "server1": "server1.example.com", "frozen": true}); st != 200 {
		t.Fatalf("freeze: %d %v", st, r)
	}
}

// TestClientRequest: a site registers with a request zip, the admin
// approves it, the site downloads a signed zip that `nvflare package`
// accepts (approve.ReadSigned checks it as package does) for the site's own
// key; no private key of the site is ever in the database; the PIN kit is
// refused for it; the rules on who may do what.
func TestClientRequest(t *testing.T) {
	s, api, c, admin, lead, other := csrDashboard(t)
	r, err := approvetest.New("csrproj", "site-7", "orgA", "client", "")
	if err != nil {
		t.Fatal(err)
	}
	zipData, err := r.Zip()
	if err != nil {
		t.Fatal(err)
	}

	if st, b, _ := raw(t, "POST", api+"/clients/request", "", "application/zip", zipData); st != 401 {
		t.Fatalf("upload without login: %d %s", st, b)
	}
	if st, b, _ := raw(t, "POST", api+"/clients/request", lead, "application/zip", zipData); st != 409 || status(b) != "project is not frozen" {
		t.Fatalf("upload before freeze: %d %s", st, b)
	}
	freeze(t, c, admin, "csrproj")

	// Requests the Dashboard refuses.
	other1, _ := approvetest.New("another", "site-8", "orgA", "client", "")
	otherZip, _ := other1.Zip()
	server1, _ := approvetest.New("csrproj", "server1.example.com", "nvidia", "server", "")
	serverZip, _ := server1.Zip()
	user1, _ := approvetest.New("csrproj", "u@o.org", "orgA", "admin", "lead")
	userZip, _ := user1.Zip()
	withKey, _ := approvetest.New("csrproj", "site-9", "orgA", "client", "")
	withKey.Extra = map[string][]byte{"site-9.key": pki.KeyPEM(withKey.Key)}
	keyZip, _ := withKey.Zip()
	for name, bad := range map[string][]byte{"other project": otherZip, "server request": serverZip, "user request": userZip,
		"zip with a private key": keyZip, "not a zip": []byte("hello")} {
		if st, b, _ := raw(t, "POST", api+"/clients/request", lead, "application/zip", bad); st != 422 || !strings.HasPrefix(status(b), "invalid request zip") {
			t.Errorf("%s: %d %s", name, st, b)
		} else {
			t.Logf("%s: %d %s", name, st, status(b))
		}
	}

	st, b, _ := raw(t, "POST", api+"/clients/request", lead, "application/zip", zipData)
	if st != 201 {
		t.Fatalf("upload: %d %s", st, b)
	}
	var up struct {
		Client  map[string]any `json:"client"`
		Request map[string]any `json:"request"`
	}
	_ = json.Unmarshal(b, &up)
	id := int64(up.Client["id"].(float64))
	if up.Client["name"] != "site-7" || up.Client["organization"] != "orgA" || up.Client["approval_state"] != float64(0) {
		t.Fatalf("registered %v", up.Client)
	}
	wantKey, _ := pki.KeyFingerprint(&r.Key.PublicKey)
	if up.Request["public_key_sha256"] != wantKey {
		t.Fatalf("request %v, want key %s", up.Request, wantKey)
	}
	idPath := api + "/clients/" + itoa(id)
	if st, b, _ := raw(t, "POST", api+"/clients/request", other, "application/zip", zipData); st != 409 {
		t.Fatalf("same request again: %d %s", st, b)
	}
	// Listed as any site; its name is the request's.
	if st, m := c.do("PATCH", "/api/v1/clients/"+itoa(id), lead, map[string]any{"name": "renamed"}); st != 409 {
		t.Fatalf("rename: %d %v", st, m)
	}
	if st, m := c.do("PATCH", "/api/v1/clients/"+itoa(id), lead, map[string]any{"description": "d"}); st != 200 {
		t.Fatalf("description: %d %v", st, m)
	}
	// Not approved yet; other users may not see or download it.
	if st, b, _ := raw(t, "GET", idPath+"/signed", lead, "", nil); st != 409 || status(b) != "not approved yet" {
		t.Fatalf("unapproved: %d %s", st, b)
	}
	if st, b, _ := raw(t, "GET", idPath+"/signed", other, "", nil); st != 403 {
		t.Fatalf("other user: %d %s", st, b)
	}
	if st, b, _ := raw(t, "GET", idPath+"/request", other, "", nil); st != 403 {
		t.Fatalf("other user reads the request: %d %s", st, b)
	}
	if st, m := c.do("PATCH", "/api/v1/clients/"+itoa(id), admin, map[string]any{"approval_state": 100}); st != 200 {
		t.Fatalf("approve: %d %v", st, m)
	}
	if resp, b := postBlob(t, idPath+"/blob", lead, "abc123"); resp.StatusCode != 409 || !strings.Contains(string(b), "certificate request") {
		t.Fatalf("PIN kit of a request site: %d %s", resp.StatusCode, b)
	}

	proj, _ := s.Store.Project()
	root, _ := pki.ParseCertPEM([]byte(proj.RootCert))
	st, zip1, hdr := raw(t, "GET", idPath+"/signed", lead, "", nil)
	if st != 200 || hdr.Get("Content-Disposition") != `attachment; filename="site-7.signed.zip"` {
		t.Fatalf("signed zip: %d %v %.200s", st, hdr, zip1)
	}
	if hdr.Get("X-Rootca-Fingerprint-Sha256") != approve.Fingerprint(root) {
		t.Fatalf("fingerprint header %q", hdr.Get("X-Rootca-Fingerprint-Sha256"))
	}
	signed, err := approve.ReadSigned(zip1, root)
	if err != nil {
		t.Fatalf("the signed zip does not check as nvflare package checks it: %v", err)
	}
	if signed.Name != "site-7" || signed.Org != "orgA" || signed.CertType != "client" || signed.Project != "csrproj" ||
		signed.PublicKeySHA256 != wantKey || signed.Server.Host != "server1.example.com" || signed.Server.FedLearnPort != 8002 {
		t.Fatalf("signed %+v", signed)
	}
	if k, _ := pki.KeyFingerprint(signed.Cert.PublicKey); k != wantKey {
		t.Fatal("the certificate is not for the site's key")
	}
	// The admin may download it too; the certificate stays the same.
	st, zip2, _ := raw(t, "GET", idPath+"/signed", admin, "", nil)
	if st != 200 {
		t.Fatalf("admin download: %d", st)
	}
	if s2, err := approve.ReadSigned(zip2, root); err != nil || s2.Cert.SerialNumber.Cmp(signed.Cert.SerialNumber) != 0 {
		t.Fatalf("second download: %v (serials %v %v)", err, s2, signed.Cert.SerialNumber)
	}
	st, b, _ = raw(t, "GET", idPath+"/request", lead, "", nil)
	if st != 200 || !strings.Contains(string(b), `"certificate_issued":true`) || !strings.Contains(string(b), approve.Fingerprint(root)) {
		t.Fatalf("request info: %d %s", st, b)
	}
	// A site registered without a request has no signed zip.
	c.do("POST", "/api/v1/clients", lead, map[string]any{"name": "site-plain", "organization": "orgA"})
	if st, b, _ := raw(t, "GET", api+"/clients/2/signed", lead, "", nil); st != 409 {
		t.Fatalf("plain site's signed zip: %d %s", st, b)
	}
	// Multipart upload (the web UI's form).
	r2, _ := approvetest.New("csrproj", "site-10", "orgA", "client", "")
	z2, _ := r2.Zip()
	body, ctype := multipartZip(t, "request_zip", "site-10.request.zip", z2, map[string]string{"description": "from a form"})
	if st, b, _ := raw(t, "POST", api+"/clients/request", lead, ctype, body); st != 201 || !strings.Contains(string(b), "from a form") {
		t.Fatalf("multipart upload: %d %s", st, b)
	}
	// The audit log records the upload, the issue and the downloads.
	st, b, _ = raw(t, "GET", api+"/audit", admin, "", nil)
	for _, want := range []string{"register_client_request", "issue_client_certificate", "download_signed_zip"} {
		if st != 200 || !strings.Contains(string(b), want) {
			t.Errorf("audit log lacks %s: %d %s", want, st, b)
		}
	}
	assertNoSitePrivateKey(t, s)
	// Deleting the site deletes its request.
	if st, m := c.do("DELETE", "/api/v1/clients/"+itoa(id), admin, nil); st != 200 {
		t.Fatalf("delete: %d %v", st, m)
	}
	if _, err := s.Store.ClientRequest(id); err != ErrNotFound {
		t.Fatalf("request after delete: %v", err)
	}
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }

// multipartZip is a multipart/form-data body with one file and fields.
func multipartZip(t *testing.T, field, filename string, data []byte, fields map[string]string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		_ = mw.WriteField(k, v)
	}
	fw, err := mw.CreateFormFile(field, filename)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fw.Write(data)
	_ = mw.Close()
	return buf.Bytes(), mw.FormDataContentType()
}

// assertNoSitePrivateKey: the only private key anywhere in the database is
// the root CA's.
func assertNoSitePrivateKey(t *testing.T, s *Server) {
	t.Helper()
	var dump strings.Builder
	for _, table := range []string{"client", "client_request", "audit", "setting", `"user"`} {
		rows, err := s.Store.db.Query(`SELECT * FROM ` + table)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for _, v := range vals {
				switch x := v.(type) {
				case string:
					dump.WriteString(x)
				case []byte:
					dump.Write(x)
				}
			}
		}
		rows.Close()
	}
	text := dump.String()
	for _, marker := range []string{"PRIVATE KEY", "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS"} {
		if strings.Contains(text, marker) {
			t.Errorf("the database holds a private key outside the project row (%q)", marker)
		}
	}
	// Stored request zips are checked by approve too: none holds a key.
	ids, _ := s.Store.RequestClientIDs()
	for id := range ids {
		cr, err := s.Store.ClientRequest(id)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(cr.RequestZip, []byte("PRIVATE KEY")) {
			t.Errorf("request zip of client %d holds a private key", id)
		}
	}
}

// TestClientRequestNVFlare: the real `nvflare cert request` makes the
// site's key and request zip, ours registers and signs it, and the real
// `nvflare package` accepts the signed zip with the Dashboard's root
// fingerprint and builds a kit around the site's own key.
func TestClientRequestNVFlare(t *testing.T) {
	py := nvflarePython(t)
	nvflare := filepath.Join(filepath.Dir(py), "nvflare")
	_, api, c, admin, lead, _ := csrDashboard(t)
	freeze(t, c, admin, "csrproj")

	site := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(nvflare, args...)
		cmd.Dir = site
		cmd.Env = append(os.Environ(), "HOME="+filepath.Join(site, "home"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nvflare %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if err := os.WriteFile(filepath.Join(site, "site.yaml"), []byte("name: csrproj\nparticipants:\n  - name: hospital-1\n    org: orgA\n    type: client\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run("cert", "request", "--participant", "site.yaml", "--out", filepath.Join(site, "req"))
	reqZip, err := os.ReadFile(filepath.Join(site, "req", "hospital-1.request.zip"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(site, "req", "hospital-1.key"))
	if err != nil {
		t.Fatalf("nvflare cert request left no key with the site: %v", err)
	}

	st, b, _ := raw(t, "POST", api+"/clients/request", lead, "application/zip", reqZip)
	if st != 201 {
		t.Fatalf("upload: %d %s", st, b)
	}
	var up struct {
		Client map[string]any `json:"client"`
	}
	_ = json.Unmarshal(b, &up)
	id := int64(up.Client["id"].(float64))
	if st, m := c.do("PATCH", "/api/v1/clients/"+itoa(id), admin, map[string]any{"approval_state": 100}); st != 200 {
		t.Fatalf("approve: %d %v", st, m)
	}
	st, zipData, hdr := raw(t, "GET", api+"/clients/"+itoa(id)+"/signed", lead, "", nil)
	if st != 200 {
		t.Fatalf("signed zip: %d %s", st, zipData)
	}
	signedPath := filepath.Join(site, "hospital-1.signed.zip")
	if err := os.WriteFile(signedPath, zipData, 0o600); err != nil {
		t.Fatal(err)
	}
	fp := hdr.Get("X-Rootca-Fingerprint-Sha256")
	run("package", signedPath, "--fingerprint", fp, "-w", filepath.Join(site, "ws"), "--request-dir", filepath.Join(site, "req"))
	kitDir := filepath.Join(site, "ws", "csrproj", "prod_00", "hospital-1")
	gotKey, err := os.ReadFile(filepath.Join(kitDir, "startup", "client.key"))
	if err != nil {
		t.Fatalf("nvflare package made no kit at %s: %v", kitDir, err)
	}
	if !bytes.Equal(bytes.TrimSpace(gotKey), bytes.TrimSpace(keyPEM)) {
		t.Error("the packaged kit's client.key is not the key nvflare cert request made")
	}
	var fed struct {
		Servers []struct {
			Service struct {
				Target string `json:"target"`
			} `json:"service"`
		} `json:"servers"`
	}
	b, _ = os.ReadFile(filepath.Join(kitDir, "startup", "fed_client.json"))
	if json.Unmarshal(b, &fed) != nil || len(fed.Servers) == 0 || fed.Servers[0].Service.Target != "server1.example.com:8002" {
		t.Errorf("fed_client.json: %s", b)
	}
	// A wrong fingerprint is refused by nvflare package.
	cmd := exec.Command(nvflare, "package", signedPath, "--fingerprint", "SHA256:"+strings.Repeat("00:", 31)+"00",
		"-w", filepath.Join(site, "ws-bad"), "--request-dir", filepath.Join(site, "req"))
	cmd.Dir, cmd.Env = site, append(os.Environ(), "HOME="+filepath.Join(site, "home"))
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("nvflare package accepted a wrong fingerprint:\n%s", out)
	}
}

// TestWebUIClientRequest: the web UI's sites page registers a site from a
// request zip (multipart form with the CSRF token; refused without it), the
// admin approves it, and the downloads page offers the signed zip (not a
// PIN kit) with the root fingerprint.
func TestWebUIClientRequest(t *testing.T) {
	cred, _ := ParseCredential("admin@nvidia.com:Adm1nPassw0rd:nvidia")
	s, err := Open(t.TempDir(), &cred, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	c := client{t, ts.URL}
	admin := c.login("admin@nvidia.com", "Adm1nPassw0rd")
	freeze(t, c, admin, "uiproj")
	c.do("POST", "/api/v1/users", "", map[string]any{"email": "lead@o.org", "password": "Passw0rd!", "organization": "orgA", "role": "lead"})
	c.do("PATCH", "/api/v1/users/2", admin, map[string]any{"approval_state": 100})

	ui := newUIClient(t, ts)
	_, _, tok := ui.get("/ui/login")
	if r, body := ui.post("/ui/login", url.Values{"email": {"lead@o.org"}, "password": {"Passw0rd!"}, "csrf": {tok}}); r.StatusCode != 303 {
		t.Fatalf("login: %d %s", r.StatusCode, body)
	}
	_, page, tok := ui.get("/ui/sites")
	if !strings.Contains(page, `id="request-form"`) || !strings.Contains(page, "<code>uiproj</code>") {
		t.Fatalf("sites page has no request form:\n%s", page)
	}
	r, _ := approvetest.New("uiproj", "site-ui", "orgA", "client", "")
	z, _ := r.Zip()
	upload := func(csrf string, data []byte) (int, string) {
		body, ctype := multipartZip(t, "request_zip", "site-ui.request.zip", data, map[string]string{"csrf": csrf})
		req, _ := http.NewRequest("POST", ts.URL+"/ui/sites/request", bytes.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		resp, err := ui.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, _ := upload("wrong", z); st != 403 {
		t.Fatalf("upload without the CSRF token: %d", st)
	}
	if st, body := upload(tok, []byte("not a zip")); st != 422 || !strings.Contains(body, "invalid request zip") {
		t.Fatalf("bad zip: %d", st)
	}
	if st, body := upload(tok, z); st != 303 {
		t.Fatalf("upload: %d %s", st, body)
	}
	_, page, _ = ui.get("/ui/sites")
	if !strings.Contains(page, "kept by the site (certificate request)") {
		t.Fatalf("sites page does not show the request site:\n%s", page)
	}
	_, page, _ = ui.get("/ui/downloads")
	if !strings.Contains(page, "waiting for approval") {
		t.Fatalf("downloads before approval:\n%s", page)
	}
	c.do("PATCH", "/api/v1/clients/1", admin, map[string]any{"approval_state": 100})
	_, page, tok = ui.get("/ui/downloads")
	proj, _ := s.Store.Project()
	root, _ := pki.ParseCertPEM([]byte(proj.RootCert))
	if !strings.Contains(page, `id="signed-site-ui"`) || strings.Contains(page, `id="pin-site-ui"`) || !strings.Contains(page, approve.Fingerprint(root)) {
		t.Fatalf("downloads page:\n%s", page)
	}
	resp, data := ui.post("/ui/downloads/signed/1", url.Values{"csrf": {tok}})
	if resp.StatusCode != 200 || resp.Header.Get("Content-Disposition") != `attachment; filename="site-ui.signed.zip"` {
		t.Fatalf("signed zip: %d %v", resp.StatusCode, resp.Header)
	}
	if sgn, err := approve.ReadSigned([]byte(data), root); err != nil || sgn.Name != "site-ui" {
		t.Fatalf("signed zip: %v", err)
	}
	if resp, _ := ui.post("/ui/downloads/client/1", url.Values{"csrf": {tok}, "pin": {"abc123"}}); resp.StatusCode != 409 {
		t.Fatalf("PIN kit of the request site: %d", resp.StatusCode)
	}
	assertNoSitePrivateKey(t, s)
}
