package dashboard

import (
	"context"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

// chromiumPath finds headless Chromium (Debian package chromium); without
// it the test skips, or fails under FLARE_REQUIRE_CHROMIUM=1 (make test).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("FLARE_REQUIRE_CHROMIUM") == "1" {
		t.Fatal("FLARE_REQUIRE_CHROMIUM=1 but chromium is not installed (mk/dashboard.mk installs Debian's chromium)")
	}
	t.Skip("chromium is not installed (apt-get install chromium; make dashboard-test does)")
	return ""
}

// TestWebUIInChromium drives our web UI in headless Chromium over HTTPS
// (so the session cookie is Secure): the project admin sets the project up
// and freezes it; a user signs up; the admin approves the user; the user
// registers a site; the admin approves it; the user downloads the site's
// kit with a PIN, and `unzip -P <pin>` opens it. Each page is screenshot;
// FLARE_DASHBOARD_SCREENSHOTS=<dir> (make dashboard-screenshots:
// docs/dashboard) keeps them.
func TestWebUIInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	chrome := chromiumPath(t)
	unzip, err := exec.LookPath("unzip")
	if err != nil {
		t.Skip("unzip not on PATH (Debian package unzip)")
	}
	cred, _ := ParseCredential("admin@nvidia.com:Adm1nPassw0rd:nvidia")
	s, err := Open(t.TempDir(), &cred, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := httptest.NewTLSServer(s.Handler())
	defer ts.Close()
	base := ts.URL + "/ui"

	shots := os.Getenv("FLARE_DASHBOARD_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	downloads := t.TempDir()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("ignore-certificate-errors", true), // httptest's self-signed certificate
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 860))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelT()

	done := make(chan string, 4)
	step := func(name string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		start := time.Now()
		if err := chromedp.Do(ctx, actions...); err != nil {
			html, _ := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
			t.Fatalf("%s: %v\npage:\n%s", name, err, html)
		}
		t.Logf("%s (%v)", name, time.Since(start).Round(time.Millisecond))
	}
	step("start chromium")
	if err := chromedp.ListenBrowser(ctx, func(ev any) {
		if e, ok := ev.(*browser.EventDownloadProgress); ok && e.State == browser.DownloadProgressStateCompleted {
			done <- e.GUID
		}
	}); err != nil {
		t.Fatal(err)
	}
	shot := func(file string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, file), png, 0o644)
		})
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return s
	}
	login := func(email, pw string) {
		t.Helper()
		step("login "+email,
			chromedp.Navigate(base+"/login"),
			chromedp.WaitVisible(chromedp.CSS("#login-form")),
			chromedp.SendKeys(chromedp.CSS("#email"), email),
			chromedp.SendKeys(chromedp.CSS("#password"), pw),
			chromedp.Click(chromedp.CSS("#login")),
			chromedp.WaitVisible(chromedp.CSS("#account-state")))
	}
	logout := func() {
		t.Helper()
		step("logout", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#login-form")))
	}

	step("home before setup", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#project-state")), shot("01-home.png"))
	if !strings.Contains(text("#project-state"), "being set up") {
		t.Fatal("a new project is not shown as being set up")
	}
	step("sign-up closed", chromedp.Navigate(base+"/signup"), chromedp.WaitVisible(chromedp.CSS("main")))
	if !strings.Contains(text("main"), "Sign-up opens when") {
		t.Fatal("sign-up is open before the freeze")
	}
	step("login page", chromedp.Navigate(base+"/login"), chromedp.WaitVisible(chromedp.CSS("#login-form")), shot("02-login.png"))
	login("admin@nvidia.com", "Adm1nPassw0rd")
	step("project setup",
		chromedp.Navigate(base+"/project"),
		chromedp.WaitVisible(chromedp.CSS("#project-form")),
		chromedp.SendKeys(chromedp.CSS("#title"), "Hospital study"),
		chromedp.SendKeys(chromedp.CSS("#short_name"), "hospital"),
		chromedp.SendKeys(chromedp.CSS("#server1"), "server.hospital.example"),
		chromedp.SetValue(chromedp.CSS("#nvflare_version"), "2.9"),
		chromedp.SendKeys(chromedp.CSS("#fed_learn_port"), "8102"),
		chromedp.SendKeys(chromedp.CSS("#admin_port"), "8103"),
		chromedp.Click(chromedp.CSS("#save-project")),
		chromedp.WaitVisible(chromedp.CSS("#notice")),
		shot("03-project.png"))
	step("freeze without confirmation is refused",
		chromedp.Click(chromedp.CSS("#freeze")), chromedp.WaitVisible(chromedp.CSS("#error")))
	step("freeze",
		chromedp.Click(chromedp.CSS("#confirm-freeze")),
		chromedp.Click(chromedp.CSS("#freeze")),
		chromedp.WaitVisible(chromedp.CSS("#frozen-note")),
		shot("04-project-frozen.png"))
	if p, _ := s.Store.Project(); !p.Frozen || p.RootCert == "" || p.ShortName != "hospital" || !strings.Contains(p.ServerProps, "8103") {
		t.Fatalf("project after the UI's freeze: %+v", p)
	}
	logout()

	step("sign up",
		chromedp.Navigate(base+"/signup"),
		chromedp.WaitVisible(chromedp.CSS("#signup-form")),
		chromedp.SendKeys(chromedp.CSS("#name"), "Dana Lead"),
		chromedp.SendKeys(chromedp.CSS("#email"), "dana@hospital-a.org"),
		chromedp.SendKeys(chromedp.CSS("#organization"), "hospital_a"),
		chromedp.SetValue(chromedp.CSS("#role"), "lead"),
		chromedp.SendKeys(chromedp.CSS("#password"), "DanaPassw0rd"),
		chromedp.SendKeys(chromedp.CSS("#password2"), "DanaPassw0rd"),
		shot("05-signup.png"),
		chromedp.Click(chromedp.CSS("#signup")),
		chromedp.WaitVisible(chromedp.CSS("#notice")))
	login("dana@hospital-a.org", "DanaPassw0rd")
	if st := text("#account-state"); st != "pending" {
		t.Fatalf("new user's state %q", st)
	}
	step("user home, pending", shot("06-home-pending.png"))
	logout()

	login("admin@nvidia.com", "Adm1nPassw0rd")
	step("approve the user",
		chromedp.Navigate(base+"/approvals"),
		chromedp.WaitVisible(chromedp.CSS("#users")),
		shot("07-approvals-user.png"),
		chromedp.Click(chromedp.CSS("#approve-users-2")),
		chromedp.WaitVisible(chromedp.CSS("#notice")))
	logout()

	login("dana@hospital-a.org", "DanaPassw0rd")
	step("register a site",
		chromedp.Navigate(base+"/sites"),
		chromedp.WaitVisible(chromedp.CSS("#site-form")),
		chromedp.SendKeys(chromedp.CSS("#site-name"), "site-a1"),
		chromedp.SetValue(chromedp.CSS("#gpus"), "2"),
		chromedp.SetValue(chromedp.CSS("#mem"), "24"),
		chromedp.Click(chromedp.CSS("#add-site")),
		chromedp.WaitVisible(chromedp.CSS("#sites")),
		shot("08-sites.png"))
	step("site not yet downloadable", chromedp.Navigate(base+"/downloads"), chromedp.WaitVisible(chromedp.CSS("#kits")))
	if !strings.Contains(text(`tr[data-name="site-a1"]`), "waiting for approval") {
		t.Fatal("an unapproved site offers a download")
	}
	logout()

	login("admin@nvidia.com", "Adm1nPassw0rd")
	step("approve the site",
		chromedp.Navigate(base+"/approvals"),
		chromedp.WaitVisible(chromedp.CSS("#clients")),
		chromedp.Click(chromedp.CSS("#approve-clients-1")),
		chromedp.WaitVisible(chromedp.CSS("#notice")),
		shot("09-approvals.png"))
	logout()

	login("dana@hospital-a.org", "DanaPassw0rd")
	step("downloads page", chromedp.Navigate(base+"/downloads"), chromedp.WaitVisible(chromedp.CSS("#pin-site-a1")))
	step("a short PIN is refused",
		chromedp.SetAttributeValue(chromedp.CSS("#pin-site-a1"), "minlength", "1"), // past the browser's own check
		chromedp.SendKeys(chromedp.CSS("#pin-site-a1"), "abc"),
		chromedp.Click(chromedp.CSS("#download-site-a1")),
		chromedp.WaitVisible(chromedp.CSS("#error")))
	step("download the site kit",
		chromedp.Navigate(base+"/downloads"),
		chromedp.WaitVisible(chromedp.CSS("#pin-site-a1")),
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
				Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads, EventsEnabled: new(true)})
			return err
		}),
		chromedp.SendKeys(chromedp.CSS("#pin-site-a1"), "Pin4Site"),
		shot("10-downloads.png"),
		chromedp.Click(chromedp.CSS("#download-site-a1")))
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("no completed download within 60s")
	}
	zipPath := filepath.Join(downloads, "site-a1.zip")
	if _, err := os.Stat(zipPath); err != nil {
		entries, _ := os.ReadDir(downloads)
		t.Fatalf("downloaded kit: %v (folder holds %v)", err, entries)
	}
	if out, err := exec.Command(unzip, "-t", "-P", "wrongPIN", zipPath).CombinedOutput(); err == nil {
		t.Fatalf("unzip with a wrong PIN succeeded:\n%s", out)
	}
	out := filepath.Join(t.TempDir(), "kit")
	if b, err := exec.Command(unzip, "-q", "-P", "Pin4Site", zipPath, "-d", out).CombinedOutput(); err != nil {
		t.Fatalf("unzip -P: %v\n%s", err, b)
	}
	for _, f := range []string{"startup/client.crt", "startup/client.key", "startup/fed_client.json", "startup/rootCA.pem"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("kit lacks %s: %v", f, err)
		}
	}
	fed, _ := os.ReadFile(filepath.Join(out, "startup/fed_client.json"))
	if !strings.Contains(string(fed), "server.hospital.example") || !strings.Contains(string(fed), "8102") {
		t.Errorf("fed_client.json does not name the project's server and port:\n%s", fed)
	}
	if cl, _ := s.Store.Client(1); cl.DownloadCount != 1 {
		t.Errorf("download_count %d, want 1", cl.DownloadCount)
	}
	entries, _ := s.Store.AuditLog()
	var actions []string
	for _, e := range entries {
		actions = append(actions, e.Actor+" "+e.Action+" "+e.Target)
	}
	want := []string{"admin@nvidia.com freeze_project hospital", "admin@nvidia.com set_user_approval dana@hospital-a.org",
		"admin@nvidia.com set_client_approval site-a1", "dana@hospital-a.org download_client_kit site-a1"}
	if strings.Join(actions, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit log:\n%s\nwant:\n%s", strings.Join(actions, "\n"), strings.Join(want, "\n"))
	}
	t.Logf("screenshots in %s", shots)
}
