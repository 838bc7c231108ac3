package dashboard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestNVFlareUI serves NVFlare 2.9's own static UI (from build/venv-2.9.0)
// on our API, at the routes NVFlare's Flask app uses.
func TestNVFlareUI(t *testing.T) {
	py := nvflarePython(t)
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(filepath.Dir(py)), "lib", "python3*", "site-packages", "nvflare", "dashboard", "application", "static"))
	if len(matches) != 1 {
		t.Fatalf("NVFlare's static UI folder not found next to %s", py)
	}
	s, err := Open(t.TempDir(), nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.UIDir = matches[0]
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	get := func(p string) (int, string, string) {
		resp, err := http.Get(ts.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	st, ct, index := get("/")
	if st != 200 || !strings.HasPrefix(ct, "text/html") || !strings.Contains(index, "/nvflare-dashboard/_next/") {
		t.Fatalf("/: %d %s %.200s", st, ct, index)
	}
	for _, p := range []string{"/nvflare-dashboard", "/nvflare-dashboard/registration-form", "/nvflare-dashboard/project-admin-dashboard", "/nvflare-dashboard/downloads"} {
		if st, ct, _ := get(p); st != 200 || !strings.HasPrefix(ct, "text/html") {
			t.Errorf("%s: %d %s", p, st, ct)
		}
	}
	script := regexp.MustCompile(`src="(/nvflare-dashboard/_next/[^"]+\.js)"`).FindStringSubmatch(index)
	if script == nil {
		t.Fatal("no script in index.html")
	}
	if st, ct, _ := get(script[1]); st != 200 || !strings.Contains(ct, "javascript") {
		t.Errorf("%s: %d %s", script[1], st, ct)
	}
	for _, p := range []string{"/nvflare-dashboard/_next/", "/../../../../etc/passwd", "/nvflare-dashboard/nope"} {
		if st, _, _ := get(p); st != 404 {
			t.Errorf("%s: %d, want 404", p, st)
		}
	}
	// The API keeps its routes.
	if st, _, body := get("/nvflare-dashboard/api/v1/project"); st != 200 || !strings.Contains(body, `"status":"ok"`) {
		t.Errorf("API with the UI: %d %s", st, body)
	}
	if _, err := os.Stat(filepath.Join(matches[0], "nvflare-dashboard", "index.html")); err != nil {
		t.Fatal(err)
	}
}
