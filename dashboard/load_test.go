package dashboard

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// The load driver (issue 13 item 8): users sign up, some log in and each
// registers a site, the project admin approves the sites, then kits are
// downloaded all at once. BenchmarkDashboardLoad runs it at full size
// against ours and NVFlare 2.9.0's Dashboard in the same run (make
// bench-dashboard, part of make bench); TestLoadSmoke runs it small in make
// test and checks errors and kit contents only, never timings.

type loadSpec struct {
	Users       int // sign-ups
	Sites       int // of those users, each logs in and registers one site
	Downloads   int // client kits downloaded at the same moment
	Concurrency int // requests in flight in the sign-up, login, register and approve phases
}

// phaseStats is one phase against one server.
type phaseStats struct {
	Name        string
	N           int
	Concurrency int
	Errors      int
	Skipped     int // not tried: an earlier phase failed for this user or site
	FirstErr    string
	Wall        time.Duration
	lat         []time.Duration
}

func (p *phaseStats) quantile(q float64) time.Duration {
	if len(p.lat) == 0 {
		return 0
	}
	s := slices.Clone(p.lat)
	slices.Sort(s)
	// nearest rank
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

type loadRun struct {
	Server string
	Phases []*phaseStats
	Kits   map[string][]byte // site name → downloaded zip, when kept
	Pool   string            // ours: key pool hits and misses from /metrics after the run
}

// keyPoolMetrics reads the key pool's counters from ours' /metrics.
func keyPoolMetrics(tb testing.TB, url string) string {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	val := func(name string) string {
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				return v
			}
		}
		return "?"
	}
	return fmt.Sprintf("%s hits, %s misses, %s keys ready at the end",
		val("flare_dashboard_key_pool_hits_total"), val("flare_dashboard_key_pool_misses_total"), val("flare_dashboard_key_pool_keys"))
}

func (r *loadRun) errors() int {
	n := 0
	for _, p := range r.Phases {
		n += p.Errors
	}
	return n
}

// loadClient talks to one server's API base.
type loadClient struct {
	base string
	http *http.Client
}

func newLoadClient(base string, conns int) *loadClient {
	tr := &http.Transport{MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns * 2, MaxConnsPerHost: 0,
		IdleConnTimeout: time.Minute, DisableCompression: true}
	return &loadClient{base: base, http: &http.Client{Transport: tr, Timeout: 10 * time.Minute}}
}

// do sends a JSON request and returns the status and body.
func (c *loadClient) do(ctx context.Context, method, path, token string, body any) (int, []byte, http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, resp.Header, err
}

// want calls do and decodes a JSON answer, failing on another status.
func (c *loadClient) want(ctx context.Context, status int, method, path, token string, body any) (map[string]any, error) {
	st, raw, _, err := c.do(ctx, method, path, token, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if st != status {
		return nil, fmt.Errorf("%s %s: HTTP %d (want %d): %.200s", method, path, st, status, raw)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%s %s: not JSON: %.200s", method, path, raw)
	}
	return m, nil
}

// runPhase runs fn(0..n-1) on conc workers (conc == n: all at once, after a
// start barrier) and records each call's latency.
func runPhase(name string, n, conc int, fn func(i int) error) *phaseStats {
	p := &phaseStats{Name: name, N: n, Concurrency: conc, lat: make([]time.Duration, 0, n)}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		next = make(chan int, n)
		gate = make(chan struct{})
	)
	for i := range n {
		next <- i
	}
	close(next)
	for range min(conc, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			for i := range next {
				t0 := time.Now()
				err := fn(i)
				d := time.Since(t0)
				mu.Lock()
				if errors.Is(err, errSkipped) {
					p.Skipped++
				} else {
					p.lat = append(p.lat, d)
				}
				if err != nil && !errors.Is(err, errSkipped) {
					p.Errors++
					if p.FirstErr == "" {
						p.FirstErr = err.Error()
					}
				}
				mu.Unlock()
			}
		}()
	}
	t0 := time.Now()
	close(gate)
	wg.Wait()
	p.Wall = time.Since(t0)
	return p
}

// errSkipped marks a call not made because an earlier phase failed for
// the same user or site; it is counted apart from errors.
var errSkipped = errors.New("skipped: an earlier phase failed")

func loadOrg(i int) string { return fmt.Sprintf("org%02d", i%20) }

// runLoad drives one server at base (an API base, .../api/v1) whose project
// admin is adminEmail/adminPass. Setup (admin login, project fields,
// freeze) is not timed. keepKits keeps every downloaded zip.
func runLoad(ctx context.Context, server, base, adminEmail, adminPass string, spec loadSpec, keepKits bool) (*loadRun, error) {
	c := newLoadClient(base, max(spec.Concurrency, spec.Downloads))
	defer c.http.CloseIdleConnections()
	run := &loadRun{Server: server, Kits: map[string][]byte{}}
	m, err := c.want(ctx, 200, "POST", "/login", "", obj{"email": adminEmail, "password": adminPass})
	if err != nil {
		return nil, fmt.Errorf("%s: admin login: %w", server, err)
	}
	admin, _ := m["access_token"].(string)
	if _, err := c.want(ctx, 200, "PATCH", "/project", admin, obj{"short_name": "load", "title": "Load",
		"server1": "server1.example.com", "description": "load test"}); err != nil {
		return nil, fmt.Errorf("%s: %w", server, err)
	}
	if _, err := c.want(ctx, 200, "PATCH", "/project", admin, obj{"frozen": true}); err != nil {
		return nil, fmt.Errorf("%s: freeze: %w", server, err)
	}

	email := func(i int) string { return fmt.Sprintf("user%04d@%s.example.com", i, loadOrg(i)) }
	password := func(i int) string { return fmt.Sprintf("Load-pw-%04d", i) }
	signedUp := make([]bool, spec.Users)
	run.Phases = append(run.Phases, runPhase("sign-up (POST /users, no login)", spec.Users, spec.Concurrency, func(i int) error {
		_, err := c.want(ctx, 201, "POST", "/users", "", obj{"name": fmt.Sprintf("User %d", i), "email": email(i),
			"password": password(i), "organization": loadOrg(i), "role": "lead"})
		signedUp[i] = err == nil
		return err
	}))
	tokens := make([]string, spec.Sites)
	run.Phases = append(run.Phases, runPhase("login of the site owners (POST /login)", spec.Sites, spec.Concurrency, func(i int) error {
		if !signedUp[i] {
			return errSkipped
		}
		m, err := c.want(ctx, 200, "POST", "/login", "", obj{"email": email(i), "password": password(i)})
		if err == nil {
			tokens[i], _ = m["access_token"].(string)
			if tokens[i] == "" {
				err = errors.New("login: no access_token")
			}
		}
		return err
	}))
	ids := make([]int64, spec.Sites)
	run.Phases = append(run.Phases, runPhase("site registration (POST /clients)", spec.Sites, spec.Concurrency, func(i int) error {
		if tokens[i] == "" {
			return errSkipped
		}
		m, err := c.want(ctx, 201, "POST", "/clients", tokens[i], obj{"name": fmt.Sprintf("site-%04d", i),
			"organization": loadOrg(i), "description": "load",
			"capacity": obj{"num_of_gpus": 1 + i%4, "mem_per_gpu_in_GiB": 16}})
		if err != nil {
			return err
		}
		cl, _ := m["client"].(map[string]any)
		id, _ := cl["id"].(float64)
		if id <= 0 {
			return fmt.Errorf("POST /clients: no client id in %v", m)
		}
		ids[i] = int64(id)
		return nil
	}))
	run.Phases = append(run.Phases, runPhase("site approval by the project admin (PATCH /clients/{id})", spec.Sites, spec.Concurrency, func(i int) error {
		if ids[i] == 0 {
			return errSkipped
		}
		_, err := c.want(ctx, 200, "PATCH", fmt.Sprintf("/clients/%d", ids[i]), admin, obj{"approval_state": 100})
		return err
	}))
	var kmu sync.Mutex
	n := min(spec.Downloads, spec.Sites)
	run.Phases = append(run.Phases, runPhase("kit download, all at once (POST /clients/{id}/blob)", n, n, func(i int) error {
		if ids[i] == 0 || tokens[i] == "" {
			return errSkipped
		}
		path := fmt.Sprintf("/clients/%d/blob", ids[i])
		st, raw, hdr, err := c.do(ctx, "POST", path, tokens[i], obj{"pin": fmt.Sprintf("Pin%04d", i)})
		if err != nil {
			return fmt.Errorf("POST %s: %w", path, err)
		}
		if st != 200 || !bytes.HasPrefix(raw, []byte("PK")) {
			return fmt.Errorf("POST %s: HTTP %d, not a zip: %.200s", path, st, raw)
		}
		name := fmt.Sprintf("site-%04d", i)
		if cd := hdr.Get("Content-Disposition"); !strings.Contains(cd, `"`+name+`.zip"`) {
			return fmt.Errorf("POST %s: Content-Disposition %q", path, cd)
		}
		if keepKits {
			kmu.Lock()
			run.Kits[name] = raw
			kmu.Unlock()
		}
		return nil
	}))
	return run, nil
}

// checkLoadKits opens every kept kit with `unzip -P` and checks it is the
// site's: startup/client.crt names the site and its organization and
// chains to startup/rootCA.pem, which is the same in every kit;
// fed_client.json and client.key are there.
func checkLoadKits(t *testing.T, run *loadRun, want int) {
	t.Helper()
	if len(run.Kits) != want {
		t.Errorf("%s: %d kits downloaded, want %d", run.Server, len(run.Kits), want)
	}
	var root []byte
	for name, data := range run.Kits {
		i, _ := strconv.Atoi(strings.TrimPrefix(name, "site-"))
		files, _, err := unzipWithPIN(t, data, fmt.Sprintf("Pin%04d", i))
		if err != nil {
			t.Errorf("%s: %s: unzip -P: %v", run.Server, name, err)
			continue
		}
		get := func(suffix string) []byte {
			for f, b := range files {
				if strings.HasSuffix(f, suffix) {
					return b
				}
			}
			t.Errorf("%s: %s: no %s in the kit", run.Server, name, suffix)
			return nil
		}
		rootPEM, certPEM := get("startup/rootCA.pem"), get("startup/client.crt")
		get("startup/client.key")
		get("startup/fed_client.json")
		if root == nil {
			root = rootPEM
		} else if !bytes.Equal(root, rootPEM) {
			t.Errorf("%s: %s: another rootCA.pem than the other kits", run.Server, name)
		}
		rc, err1 := pki.ParseCertPEM(rootPEM)
		cc, err2 := pki.ParseCertPEM(certPEM)
		if err1 != nil || err2 != nil {
			t.Errorf("%s: %s: certificates: %v %v", run.Server, name, err1, err2)
			continue
		}
		if cc.Subject.CommonName != name || len(cc.Subject.Organization) == 0 || cc.Subject.Organization[0] != loadOrg(i) {
			t.Errorf("%s: %s: client.crt subject %v", run.Server, name, cc.Subject)
		}
		pool := x509.NewCertPool()
		pool.AddCert(rc)
		if _, err := cc.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s: %s: client.crt does not chain to rootCA.pem: %v", run.Server, name, err)
		}
	}
}

// startOursForLoad serves ours (SQLite in a temporary folder) on 127.0.0.1,
// with flare-dashboard's default key pool (DefaultKeyPool keys;
// BENCH_DASHBOARD_KEY_POOL overrides it, 0 included, for comparisons).
func startOursForLoad(tb testing.TB) string {
	tb.Helper()
	cred, _ := ParseCredential(diffCred)
	s, err := Open(tb.TempDir(), &cred, io.Discard)
	if err != nil {
		tb.Fatal(err)
	}
	s.Log = nil
	s.StartKeyPool(loadKeyPool())
	ts := httptest.NewServer(s.Handler())
	tb.Cleanup(func() { ts.Close(); s.Close() })
	return ts.URL + "/api/v1"
}

// TestLoadSmoke: the load driver at a small size against ours and, when
// the 2.9.0 venv is there, NVFlare's: no errors, every kit the site's.
func TestLoadSmoke(t *testing.T) {
	spec := loadSpec{Users: 20, Sites: 10, Downloads: 10, Concurrency: 5}
	ctx := context.Background()
	run, err := runLoad(ctx, "ours", startOursForLoad(t), diffAdmin, diffPass, spec, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range run.Phases {
		if p.Errors+p.Skipped != 0 {
			t.Errorf("ours: %s: %d errors, %d skipped, first: %s", p.Name, p.Errors, p.Skipped, p.FirstErr)
		}
	}
	checkLoadKits(t, run, spec.Downloads)

	t.Run("nvflare", func(t *testing.T) {
		py := nvflarePython(t)
		if testing.Short() {
			t.Skip("-short: starts NVFlare's dashboard")
		}
		base := startNVFlare(t, py)
		run, err := runLoad(ctx, "nvflare", base, diffAdmin, diffPass, spec, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range run.Phases {
			if p.Errors+p.Skipped != 0 {
				t.Errorf("nvflare: %s: %d errors, %d skipped, first: %s", p.Name, p.Errors, p.Skipped, p.FirstErr)
			}
		}
		checkLoadKits(t, run, spec.Downloads)
	})
}

// loadKeyPool is ours' key pool size under load: BENCH_DASHBOARD_KEY_POOL
// (0 or more), else DefaultKeyPool.
func loadKeyPool() int {
	if v, err := strconv.Atoi(os.Getenv("BENCH_DASHBOARD_KEY_POOL")); err == nil && v >= 0 {
		return v
	}
	return DefaultKeyPool
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkDashboardLoad runs the load once at full size (BENCH_DASHBOARD_*
// override: USERS 1000, SITES 500, DOWNLOADS 200, CONCURRENCY 50) against
// ours and NVFlare's, one after the other, and reports p99s. With
// FLARE_BENCH_DASHBOARD_OUT=<results.md> it writes the Dashboard section of
// that file. Run with -benchtime 1x.
func BenchmarkDashboardLoad(b *testing.B) {
	spec := loadSpec{
		Users:       envInt("BENCH_DASHBOARD_USERS", 1000),
		Sites:       envInt("BENCH_DASHBOARD_SITES", 500),
		Downloads:   envInt("BENCH_DASHBOARD_DOWNLOADS", 200),
		Concurrency: envInt("BENCH_DASHBOARD_CONCURRENCY", 50),
	}
	py := nvflarePython(b)
	ctx := context.Background()
	var runs []*loadRun
	for b.Loop() {
		runs = runs[:0]
		base := startOursForLoad(b)
		ours, err := runLoad(ctx, "ours", base, diffAdmin, diffPass, spec, false)
		if err != nil {
			b.Fatal(err)
		}
		ours.Pool = keyPoolMetrics(b, strings.TrimSuffix(base, "/api/v1")+"/metrics")
		theirs, err := runLoad(ctx, "nvflare", startNVFlare(b, py), diffAdmin, diffPass, spec, false)
		if err != nil {
			b.Fatal(err)
		}
		runs = append(runs, ours, theirs)
	}
	for _, r := range runs {
		for i, p := range r.Phases {
			b.Logf("%-8s %-60s n=%4d errors=%d skipped=%d p50=%8.1fms p99=%8.1fms wall=%.2fs %s", r.Server, p.Name, p.N, p.Errors, p.Skipped,
				ms(p.quantile(0.5)), ms(p.quantile(0.99)), p.Wall.Seconds(), p.FirstErr)
			b.ReportMetric(ms(p.quantile(0.99)), fmt.Sprintf("%s-p99-ms/phase%d", r.Server, i+1))
		}
		b.ReportMetric(float64(r.errors()), r.Server+"-errors")
	}
	if out := os.Getenv("FLARE_BENCH_DASHBOARD_OUT"); out != "" && len(runs) == 2 {
		if err := writeLoadSection(out, spec, runs[0], runs[1], nvflareVersion(py)); err != nil {
			b.Fatal(err)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func nvflareVersion(py string) string {
	out, err := exec.Command(py, "-c", "import nvflare, sys; print(nvflare.__version__, 'Python', sys.version.split()[0])").Output()
	if err != nil {
		return "nvflare (version unknown)"
	}
	return "nvflare " + strings.TrimSpace(string(out))
}

const (
	loadBegin = "<!-- dashboard-bench: begin (generated by make bench-dashboard) -->"
	loadEnd   = "<!-- dashboard-bench: end -->"
)

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			if _, v, ok := strings.Cut(line, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "unknown"
}

func fmtMS(d time.Duration) string {
	v := ms(d)
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2f s", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.0f ms", v)
	default:
		return fmt.Sprintf("%.1f ms", v)
	}
}

// writeLoadSection replaces (or appends) the Dashboard section of the
// results file.
func writeLoadSection(path string, spec loadSpec, ours, theirs *loadRun, nvflare string) error {
	var w strings.Builder
	fmt.Fprintf(&w, "# Dashboard under load: flare-dashboard vs NVFlare's Dashboard (issue 13)\n\n")
	fmt.Fprintf(&w, "Generated by `make bench-dashboard` (part of `make bench`) on %s. CPU: %s, %d CPUs. %s; %s. "+
		"Source: `BenchmarkDashboardLoad` (dashboard/load_test.go).\n\n",
		time.Now().Format("2006-01-02"), cpuModel(), runtime.NumCPU(), runtime.Version(), nvflare)
	fmt.Fprintf(&w, "Both servers on 127.0.0.1 in the same run, one after the other, each with a fresh database: "+
		"ours (SQLite, in the benchmark's process) and NVFlare 2.9's Flask app as its Docker image runs it "+
		"(`nvflare.dashboard.wsgi`, Werkzeug's threaded server, SQLite). The load generator is a Go HTTP client "+
		"in the benchmark's process. %d users sign up (%d at a time); %d of them log in and each registers one site "+
		"(%d at a time); the project admin approves the %d sites (%d at a time); then %d site owners download their "+
		"client kits at the same moment (each kit a new RSA-2048 key and certificate, zipped under a PIN; "+
		"ours takes the key from its pool of pre-generated keys when one is ready, `--key-pool %d`%s, "+
		"made by GOMAXPROCS-1 = %d background worker(s) from server start, and generates it inline otherwise). "+
		"The project is frozen beforehand (untimed). An error is any unexpected status or body; *skipped* calls were not made "+
		"because an earlier phase failed for that user or site (latencies are of the calls made).\n\n",
		spec.Users, spec.Concurrency, spec.Sites, spec.Concurrency, spec.Sites, spec.Concurrency, min(spec.Downloads, spec.Sites),
		loadKeyPool(), map[bool]string{true: " (the default)"}[loadKeyPool() == DefaultKeyPool], keyPoolWorkers())
	fmt.Fprintf(&w, "| phase | requests | in flight | ours p50 | ours p99 | NVFlare p50 | NVFlare p99 | p99 ours/NVFlare | errors ours / NVFlare | skipped ours / NVFlare | wall ours / NVFlare |\n")
	fmt.Fprintf(&w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	met := true
	for i, p := range ours.Phases {
		q := theirs.Phases[i]
		ratio := ms(p.quantile(0.99)) / ms(q.quantile(0.99))
		if ratio > 0.2 {
			met = false
		}
		fmt.Fprintf(&w, "| %s | %d | %d | %s | **%s** | %s | **%s** | %.2f | %d / %d | %d / %d | %.1f s / %.1f s |\n",
			p.Name, p.N, p.Concurrency, fmtMS(p.quantile(0.5)), fmtMS(p.quantile(0.99)),
			fmtMS(q.quantile(0.5)), fmtMS(q.quantile(0.99)), ratio, p.Errors, q.Errors, p.Skipped, q.Skipped, p.Wall.Seconds(), q.Wall.Seconds())
	}
	fmt.Fprintln(&w)
	goal := "met in every phase"
	if !met {
		goal = "**not met** in every phase (see the ratio column)"
	}
	errs := fmt.Sprintf("ours %d, NVFlare %d", ours.errors(), theirs.errors())
	fmt.Fprintf(&w, "Goal (p99 at most 1/5 of NVFlare's, 0 errors): p99 %s; errors: %s.\n", goal, errs)
	if ours.Pool != "" {
		fmt.Fprintf(&w, "\nOurs' key pool over the run (`/metrics`): %s.\n", ours.Pool)
	}
	for _, r := range []*loadRun{ours, theirs} {
		for _, p := range r.Phases {
			if p.FirstErr != "" {
				fmt.Fprintf(&w, "\nFirst error, %s, %s: `%s`\n", r.Server, p.Name, strings.ReplaceAll(strings.TrimSpace(p.FirstErr), "`", "'"))
			}
		}
	}
	section := loadBegin + "\n" + w.String() + loadEnd + "\n"

	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s := string(old)
	if i, j := strings.Index(s, loadBegin), strings.Index(s, loadEnd); i >= 0 && j > i {
		s = s[:i] + section + strings.TrimPrefix(s[j+len(loadEnd):], "\n")
	} else {
		if s != "" && !strings.HasSuffix(s, "\n\n") {
			s = strings.TrimRight(s, "\n") + "\n\n"
		}
		s += section
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
