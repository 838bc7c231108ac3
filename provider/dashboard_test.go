package provider

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/flarekit/terraform-provider-flare/dashboard"
)

const (
	dashAdmin = "admin@nvidia.com"
	dashPass  = "Passw0rd1"
)

// startFlareDashboard serves flare-dashboard in the test process and
// returns its URL.
func startFlareDashboard(t *testing.T) string {
	t.Helper()
	cred, _ := dashboard.ParseCredential(dashAdmin + ":" + dashPass + ":nvidia")
	s, err := dashboard.Open(t.TempDir(), &cred, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() { ts.Close(); s.Close() })
	return ts.URL
}

// startNVFlareDashboard runs NVFlare 2.9.0's own Dashboard (Flask, from
// build/venv-2.9.0, made by `make interop`) on 127.0.0.1 and returns its
// URL; it skips without the venv unless FLARE_REQUIRE_NVFLARE=1.
func startNVFlareDashboard(t *testing.T) string {
	t.Helper()
	py, _ := filepath.Abs(filepath.Join("..", "build", "venv-2.9.0", "bin", "python"))
	if _, err := os.Stat(py); err != nil {
		if os.Getenv("FLARE_REQUIRE_NVFLARE") == "1" {
			t.Fatalf("FLARE_REQUIRE_NVFLARE=1 but NVFlare 2.9.0 is not installed at %s (make interop installs it)", py)
		}
		t.Skipf("NVFlare 2.9.0 not installed at %s", py)
	}
	for attempt := 1; ; attempt++ {
		url, err := tryNVFlareDashboard(t, py)
		if err == nil {
			return url
		}
		if attempt == 3 {
			t.Fatal(err)
		}
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func tryNVFlareDashboard(t *testing.T, py string) (string, error) {
	root := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(py, "-c", fmt.Sprintf("from nvflare.dashboard.wsgi import app; app.run(host='127.0.0.1', port=%d)", port))
	cmd.Env = append(os.Environ(), "NVFL_WEB_ROOT="+root, "NVFL_CREDENTIAL="+dashAdmin+":"+dashPass+":nvidia",
		"SECRET_KEY=provider-acceptance-test-secret-0123456789")
	logs := &syncBuf{}
	cmd.Stdout, cmd.Stderr, cmd.Dir = logs, logs, root
	if err := cmd.Start(); err != nil {
		return "", err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() { _ = cmd.Process.Kill(); <-exited }
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	for deadline := time.Now().Add(60 * time.Second); ; {
		select {
		case err := <-exited:
			exited <- err
			return "", fmt.Errorf("NVFlare's dashboard exited (%v):\n%s", err, logs.String())
		default:
		}
		if resp, err := http.Get(url + "/nvflare-dashboard/api/v1/project"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				t.Cleanup(func() {
					stop()
					if t.Failed() {
						t.Logf("NVFlare dashboard log:\n%s", logs.String())
					}
				})
				return url, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return "", fmt.Errorf("NVFlare's dashboard did not answer within 60s:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dashAPI calls the Dashboard API directly (test setup and checks).
func dashAPI(t *testing.T, base, method, path, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, base+"/nvflare-dashboard/api/v1"+path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func dashLogin(t *testing.T, base, email, pw string) string {
	t.Helper()
	st, m := dashAPI(t, base, "POST", "/login", "", map[string]any{"email": email, "password": pw})
	if st != 200 {
		t.Fatalf("login %s: %d %v", email, st, m)
	}
	return m["access_token"].(string)
}

// dashClientState is site name's approval_state on the Dashboard.
func dashClientState(t *testing.T, base, name string) float64 {
	t.Helper()
	_, m := dashAPI(t, base, "GET", "/clients", dashLogin(t, base, dashAdmin, dashPass), nil)
	for _, c := range m["client_list"].([]any) {
		if c.(map[string]any)["name"] == name {
			return c.(map[string]any)["approval_state"].(float64)
		}
	}
	t.Fatalf("client %s not on the dashboard: %v", name, m)
	return 0
}

func dashboardConfig(url, extra string) string {
	return fmt.Sprintf(`
provider "flare" {
  dashboard = {
    url      = %q
    email    = %q
    password = %q
  }
}
%s
`, url, dashAdmin, dashPass, extra)
}

const dashProjectHCL = `
resource "flare_dashboard_project" "p" {
  short_name     = "accdash"
  server1        = "server1.example.com"
  title          = %q
  description    = "managed by terraform"
  fed_learn_port = 8102
  admin_port     = 8103
  frozen         = %t
}
`

const dashApprovalsHCL = `
resource "flare_dashboard_approval" "site" {
  kind = "client"
  name = "site-1"
}

resource "flare_dashboard_approval" "lead" {
  kind = "user"
  name = "lead@org-a.org"
}

data "flare_dashboard_registrations" "approved" {
  approved_only = true
  organization  = "org_a"
  depends_on    = [flare_dashboard_approval.site, flare_dashboard_approval.lead]
}
`

// TestAccDashboard manages a Dashboard through its API, against ours
// (flare-dashboard) and against NVFlare 2.9.0's own (Flask): the project's
// fields and freeze (a frozen project refuses changes at plan time),
// approvals of a site and a user (drift from the Dashboard is put back;
// destroy sets them pending; import), and the registrations with their
// organization, role, capacity and approval state.
func TestAccDashboard(t *testing.T) {
	for _, server := range []struct {
		name  string
		start func(*testing.T) string
	}{
		{"flare-dashboard", startFlareDashboard},
		{"nvflare-2.9.0", startNVFlareDashboard},
	} {
		t.Run(server.name, func(t *testing.T) {
			if os.Getenv("TF_ACC") == "" {
				t.Skip("TF_ACC not set")
			}
			url := server.start(t)
			// A lead of org_a signs up and registers a site, as on the Dashboard.
			if st, m := dashAPI(t, url, "POST", "/users", "", map[string]any{"name": "Lead", "email": "lead@org-a.org",
				"password": "LeadPassw0rd", "organization": "org_a", "role": "lead"}); st != 201 {
				t.Fatalf("sign-up: %d %v", st, m)
			}
			lead := dashLogin(t, url, "lead@org-a.org", "LeadPassw0rd")
			if st, m := dashAPI(t, url, "POST", "/clients", lead, map[string]any{"name": "site-1", "organization": "org_a",
				"capacity": map[string]any{"num_of_gpus": 2, "mem_per_gpu_in_GiB": 16}}); st != 201 {
				t.Fatalf("client: %d %v", st, m)
			}
			reg := "data.flare_dashboard_registrations.all"
			resource.Test(t, resource.TestCase{
				ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
				CheckDestroy: func(*terraform.State) error {
					if st := dashClientState(t, url, "site-1"); st != 0 {
						return fmt.Errorf("site-1 approval_state %v after destroy, want 0", st)
					}
					return nil
				},
				Steps: []resource.TestStep{
					{
						Config: dashboardConfig(url, fmt.Sprintf(dashProjectHCL, "Study", false)+`
data "flare_dashboard_registrations" "all" {
  depends_on = [flare_dashboard_project.p]
}`),
						Check: resource.ComposeAggregateTestCheckFunc(
							resource.TestCheckResourceAttr("flare_dashboard_project.p", "id", "project"),
							resource.TestCheckResourceAttr("flare_dashboard_project.p", "frozen", "false"),
							resource.TestCheckResourceAttr(reg, "short_name", "accdash"),
							resource.TestCheckResourceAttr(reg, "users.#", "2"),
							resource.TestCheckResourceAttr(reg, "users.0.role", "project_admin"),
							resource.TestCheckResourceAttr(reg, "users.1.email", "lead@org-a.org"),
							resource.TestCheckResourceAttr(reg, "users.1.organization", "org_a"),
							resource.TestCheckResourceAttr(reg, "users.1.role", "lead"),
							resource.TestCheckResourceAttr(reg, "users.1.approved", "false"),
							resource.TestCheckResourceAttr(reg, "clients.#", "1"),
							resource.TestCheckResourceAttr(reg, "clients.0.name", "site-1"),
							resource.TestCheckResourceAttr(reg, "clients.0.num_gpus", "2"),
							resource.TestCheckResourceAttr(reg, "clients.0.mem_per_gpu_in_gib", "16"),
							resource.TestCheckResourceAttr(reg, "clients.0.approval_state", "0"),
							func(*terraform.State) error {
								_, m := dashAPI(t, url, "GET", "/project", "", nil)
								p := m["project"].(map[string]any)
								if p["title"] != "Study" || p["server1"] != "server1.example.com" {
									return fmt.Errorf("project on the dashboard: %v", p)
								}
								return nil
							},
						),
					},
					{
						Config: dashboardConfig(url, fmt.Sprintf(dashProjectHCL, "Study", false)+dashApprovalsHCL),
						Check: resource.ComposeAggregateTestCheckFunc(
							resource.TestCheckResourceAttr("flare_dashboard_approval.site", "approval_state", "100"),
							resource.TestCheckResourceAttr("flare_dashboard_approval.site", "organization", "org_a"),
							resource.TestCheckResourceAttr("flare_dashboard_approval.lead", "id", "user:lead@org-a.org"),
							resource.TestCheckResourceAttr("data.flare_dashboard_registrations.approved", "clients.#", "1"),
							resource.TestCheckResourceAttr("data.flare_dashboard_registrations.approved", "clients.0.approved", "true"),
							resource.TestCheckResourceAttr("data.flare_dashboard_registrations.approved", "users.#", "1"),
							func(*terraform.State) error {
								if st := dashClientState(t, url, "site-1"); st != 100 {
									return fmt.Errorf("site-1 approval_state %v", st)
								}
								return nil
							},
						),
					},
					{
						// Someone resets the approval on the Dashboard: the plan puts it back.
						PreConfig: func() {
							admin := dashLogin(t, url, dashAdmin, dashPass)
							if st, m := dashAPI(t, url, "PATCH", "/clients/1", admin, map[string]any{"approval_state": 0}); st != 200 {
								t.Fatalf("reset: %d %v", st, m)
							}
						},
						Config: dashboardConfig(url, fmt.Sprintf(dashProjectHCL, "Study", false)+dashApprovalsHCL),
						Check: func(*terraform.State) error {
							if st := dashClientState(t, url, "site-1"); st != 100 {
								return fmt.Errorf("drift not corrected: site-1 approval_state %v", st)
							}
							return nil
						},
					},
					{
						ResourceName:      "flare_dashboard_approval.site",
						ImportState:       true,
						ImportStateId:     "client:site-1",
						ImportStateVerify: true,
					},
					{
						Config: dashboardConfig(url, fmt.Sprintf(dashProjectHCL, "Study", true)+dashApprovalsHCL),
						Check: resource.ComposeAggregateTestCheckFunc(
							resource.TestCheckResourceAttr("flare_dashboard_project.p", "frozen", "true"),
							func(*terraform.State) error {
								_, m := dashAPI(t, url, "GET", "/project", "", nil)
								if m["project"].(map[string]any)["frozen"] != true {
									return fmt.Errorf("not frozen on the dashboard: %v", m)
								}
								return nil
							},
						),
					},
					{
						Config:      dashboardConfig(url, fmt.Sprintf(dashProjectHCL, "Another title", true)+dashApprovalsHCL),
						ExpectError: regexp.MustCompile(`Dashboard Project Is Frozen`),
					},
					{
						ResourceName:      "flare_dashboard_project.p",
						ImportState:       true,
						ImportStateId:     "project",
						ImportStateVerify: true,
					},
				},
			})
		})
	}
}

// TestAccDashboardErrors: a wrong password, a user who is not the project
// admin, and an approval of a registration that does not exist are
// errors that say so.
func TestAccDashboardErrors(t *testing.T) {
	if os.Getenv("TF_ACC") == "" {
		t.Skip("TF_ACC not set")
	}
	url := startFlareDashboard(t)
	dashAPI(t, url, "POST", "/users", "", map[string]any{"name": "M", "email": "m@o.org", "password": "MPassw0rd", "organization": "o", "role": "member"})
	hcl := func(email, pw, extra string) string {
		return fmt.Sprintf(`
provider "flare" {
  dashboard = { url = %q, email = %q, password = %q }
}
%s`, url, email, pw, extra)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{Config: hcl(dashAdmin, "wrong", `data "flare_dashboard_registrations" "r" {}`), ExpectError: regexp.MustCompile(`wrong email or password`)},
			{Config: hcl("m@o.org", "MPassw0rd", `data "flare_dashboard_registrations" "r" {}`), ExpectError: regexp.MustCompile(`not project_admin`)},
			{Config: hcl(dashAdmin, dashPass, `
resource "flare_dashboard_approval" "x" {
  kind = "client"
  name = "no-such-site"
}`), ExpectError: regexp.MustCompile(`not registered on the dashboard`)},
		},
	})
}
