package dashboard

import (
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flarekit/terraform-provider-flare/internal/kit"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

func postBlob(t *testing.T, url, token, pin string) (*http.Response, []byte) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"pin": pin})
	req, _ := http.NewRequest("POST", url, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestBlobs: a frozen project's server, client and admin kits download as
// `zip -P` archives that Debian's unzip opens with the PIN; each kit is signed
// by the project's root (kit.VerifyFolder on startup/ and local/) and its
// certificate chains to that root.
func TestBlobs(t *testing.T) {
	unzip, err := exec.LookPath("unzip")
	if err != nil {
		t.Skip("unzip not on PATH (Debian package unzip)")
	}
	cred, _ := ParseCredential("admin@x.org:pw:nvidia")
	s, err := Open(t.TempDir(), &cred, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	c := client{t, ts.URL}
	api := ts.URL + "/nvflare-dashboard/api/v1"
	admin := c.login("admin@x.org", "pw")

	c.do("POST", "/api/v1/users", "", map[string]any{"email": "lead@o.org", "password": "p", "organization": "orgA", "role": "lead"})
	c.do("POST", "/api/v1/users", "", map[string]any{"email": "other@o.org", "password": "p", "organization": "orgA", "role": "member"})
	lead := c.login("lead@o.org", "p")
	other := c.login("other@o.org", "p")
	if st, _ := c.do("POST", "/api/v1/clients", lead, map[string]any{"name": "site-1", "organization": "orgA",
		"capacity": map[string]any{"num_of_gpus": 2, "mem_per_gpu_in_GiB": 16}}); st != 201 {
		t.Fatal(st)
	}
	// Before freezing: no root CA yet.
	if resp, b := postBlob(t, api+"/servers/1/blob", admin, "abc123"); resp.StatusCode != 409 {
		t.Fatalf("server blob before freeze: %d %s", resp.StatusCode, b)
	}
	if st, r := c.do("PATCH", "/api/v1/project", admin, map[string]any{"short_name": "blobproj", "server1": "server1.example.com", "frozen": true}); st != 200 {
		t.Fatalf("freeze: %d %v", st, r)
	}
	// Unapproved client and user: 200 "not approved yet", as NVFlare.
	if resp, b := postBlob(t, api+"/clients/1/blob", lead, "abc123"); resp.StatusCode != 200 || !strings.Contains(string(b), "not approved yet") {
		t.Fatalf("unapproved client: %d %s", resp.StatusCode, b)
	}
	if resp, b := postBlob(t, api+"/users/2/blob", lead, "abc123"); resp.StatusCode != 200 || !strings.Contains(string(b), "not approved yet") {
		t.Fatalf("unapproved user: %d %s", resp.StatusCode, b)
	}
	c.do("PATCH", "/api/v1/clients/1", admin, map[string]any{"approval_state": 100})
	c.do("PATCH", "/api/v1/users/2", admin, map[string]any{"approval_state": 100})
	c.do("PATCH", "/api/v1/users/3", admin, map[string]any{"approval_state": 100})

	refusals := []struct {
		path, token, pin string
		status           int
	}{
		{"/servers/1/blob", lead, "abc123", 403},
		{"/clients/1/blob", other, "abc123", 403},
		{"/users/2/blob", other, "abc123", 403},
		{"/clients/1/blob", lead, "ab-12", 422},
		{"/clients/1/blob", lead, "", 422},
		{"/clients/99/blob", lead, "abc123", 404},
		{"/clients/x/blob", lead, "abc123", 404},
	}
	for _, rf := range refusals {
		if resp, b := postBlob(t, api+rf.path, rf.token, rf.pin); resp.StatusCode != rf.status {
			t.Errorf("%s pin %q: %d %s, want %d", rf.path, rf.pin, resp.StatusCode, b, rf.status)
		}
	}

	proj, _ := s.Store.Project()
	root, err := pki.ParseCertPEM([]byte(proj.RootCert))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)

	kits := []struct {
		path, token, name, cert string
		files                   []string
	}{
		{"/servers/1/blob", admin, "server1.example.com", "startup/server.crt", []string{"startup/fed_server.json", "startup/server.key", "startup/start.sh", "local/resources.json.default"}},
		{"/clients/1/blob", lead, "site-1", "startup/client.crt", []string{"startup/fed_client.json", "startup/client.key", "startup/start.sh"}},
		{"/users/2/blob", lead, "lead@o.org", "startup/client.crt", []string{"startup/fed_admin.json", "startup/fl_admin.sh"}},
	}
	for _, k := range kits {
		resp, b := postBlob(t, api+k.path, k.token, "Pin42")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "zip" ||
			resp.Header.Get("Content-Disposition") != `attachment; filename="`+k.name+`.zip"` {
			t.Fatalf("%s: %d %v %.200s", k.path, resp.StatusCode, resp.Header, b)
		}
		dir := t.TempDir()
		zipPath := filepath.Join(dir, "kit.zip")
		os.WriteFile(zipPath, b, 0o600)
		if out, err := exec.Command(unzip, "-t", "-P", "wrong", zipPath).CombinedOutput(); err == nil {
			t.Fatalf("%s: a wrong PIN opens the zip:\n%s", k.path, out)
		}
		kitDir := filepath.Join(dir, "kit")
		if out, err := exec.Command(unzip, "-q", "-P", "Pin42", zipPath, "-d", kitDir).CombinedOutput(); err != nil {
			t.Fatalf("%s: unzip -P: %v\n%s", k.path, err, out)
		}
		for _, f := range append(k.files, "startup/rootCA.pem", "startup/signature.json", k.cert) {
			if _, err := os.Stat(filepath.Join(kitDir, f)); err != nil {
				t.Errorf("%s: %v", k.path, err)
			}
		}
		for _, sub := range []string{"startup", "local"} {
			if err := kit.VerifyFolder(filepath.Join(kitDir, sub), root); err != nil {
				t.Errorf("%s: %s signature: %v", k.path, sub, err)
			}
		}
		pemBytes, _ := os.ReadFile(filepath.Join(kitDir, k.cert))
		leaf, err := pki.ParseCertPEM(pemBytes)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s: certificate does not chain to the root: %v", k.path, err)
		}
		if strings.Contains(k.path, "clients") {
			fc, _ := os.ReadFile(filepath.Join(kitDir, "startup/fed_client.json"))
			if !strings.Contains(string(fc), "server1.example.com:8002") {
				t.Errorf("fed_client.json does not dial server1.example.com:8002:\n%s", fc)
			}
		}
		if leaf.Subject.CommonName != k.name {
			t.Errorf("%s: CN %q", k.path, leaf.Subject.CommonName)
		}
	}
	// Downloads count.
	if _, r := c.do("GET", "/api/v1/clients/1", admin, nil); r["client"].(map[string]any)["download_count"] != float64(1) {
		t.Errorf("client download_count: %v", r)
	}
	if _, r := c.do("GET", "/api/v1/users/2", admin, nil); r["user"].(map[string]any)["download_count"] != float64(1) {
		t.Errorf("user download_count: %v", r)
	}
	// The audit log (ours only) names approvals, the freeze and downloads.
	if st, _ := c.do("GET", "/api/v1/audit", lead, nil); st != 403 {
		t.Errorf("audit as lead: %d", st)
	}
	st, r := c.do("GET", "/api/v1/audit", admin, nil)
	if st != 200 {
		t.Fatalf("audit: %d", st)
	}
	var got []string
	for _, e := range r["audit"].([]any) {
		m := e.(map[string]any)
		got = append(got, m["actor"].(string)+" "+m["action"].(string)+" "+m["target"].(string)+" "+m["detail"].(string))
	}
	want := []string{
		"admin@x.org freeze_project blobproj root CA created",
		"admin@x.org set_client_approval site-1 0 -> 100",
		"admin@x.org set_user_approval lead@o.org 0 -> 100",
		"admin@x.org set_user_approval other@o.org 0 -> 100",
		"admin@x.org download_server_kit server1.example.com ",
		"lead@o.org download_client_kit site-1 ",
		"lead@o.org download_admin_kit lead@o.org ",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
