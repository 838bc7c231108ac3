package dashboard

import (
	"fmt"
	"io"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/pgtest"
)

// TestPostgresReplicas: DATABASE_URL=postgres://... on a throwaway
// PostgreSQL (internal/pgtest, 127.0.0.1). Two replicas start at once on one
// database (one migrates, one admin is made), serve the same users (a
// token of one is accepted by the other: the JWT key is in the database),
// keep names unique across replicas under concurrent sign-ups, build kits
// from the one root CA, and a restart of PostgreSQL and of the Dashboard
// keeps everything.
func TestPostgresReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	start := time.Now()
	cluster := pgtest.StartCluster(t)
	t.Logf("PostgreSQL up in %v", time.Since(start).Round(time.Millisecond))
	dsn := cluster.DSN
	cred, _ := ParseCredential("admin@nvidia.com:Passw0rd1:nvidia")

	// Two replicas start together.
	var reps [2]*Server
	var errs [2]error
	var wg sync.WaitGroup
	for i := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reps[i], errs[i] = OpenURL(t.TempDir(), dsn, &cred, io.Discard)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		defer reps[i].Close()
		if reps[i].Store.Dialect() != "postgres" {
			t.Fatalf("replica %d dialect %s", i, reps[i].Store.Dialect())
		}
	}
	if v, err := reps[0].Store.SchemaVersion(); err != nil || v != len(migrations) {
		t.Fatalf("schema version %d %v", v, err)
	}
	tsA, tsB := httptest.NewServer(reps[0].Handler()), httptest.NewServer(reps[1].Handler())
	defer tsA.Close()
	defer tsB.Close()
	a, b := client{t, tsA.URL}, client{t, tsB.URL}

	admin := a.login("admin@nvidia.com", "Passw0rd1")
	if st, r := b.do("GET", "/api/v1/users", admin, nil); st != 200 || len(r["user_list"].([]any)) != 1 {
		t.Fatalf("replica B with replica A's token: %d %v", st, r)
	}
	if st, r := b.do("PATCH", "/api/v1/project", admin, map[string]any{"short_name": "pgproj", "server1": "localhost",
		"project_props": map[string]any{"nvflare_version": "2.9"}, "frozen": true}); st != 200 || r["project"].(map[string]any)["frozen"] != true {
		t.Fatalf("freeze on B: %d %v", st, r)
	}
	if st, r := a.do("GET", "/api/v1/project", "", nil); st != 200 || r["project"].(map[string]any)["short_name"] != "pgproj" {
		t.Fatalf("project on A: %d %v", st, r)
	}

	// Concurrent sign-ups over both replicas: distinct emails all land,
	// one email five times lands once.
	var mu sync.Mutex
	codes := map[int]int{}
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := []client{a, b}[i%2]
			email := fmt.Sprintf("user%d@o.org", i)
			if i >= 25 {
				email = "same@o.org"
			}
			st, _ := c.do("POST", "/api/v1/users", "", map[string]any{"email": email, "password": "pw", "organization": "orgA", "role": "lead"})
			mu.Lock()
			codes[st]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[201] != 26 || codes[409] != 4 {
		t.Fatalf("concurrent sign-ups: %v, want 26×201 and 4×409", codes)
	}
	lead := b.login("user1@o.org", "pw") // signed up through A
	if st, r := a.do("POST", "/api/v1/clients", lead, map[string]any{"name": "site-1", "organization": "orgA",
		"capacity": map[string]any{"num_of_gpus": 1, "mem_per_gpu_in_GiB": 8}}); st != 201 {
		t.Fatalf("client on A: %d %v", st, r)
	}
	if st, _ := b.do("POST", "/api/v1/clients", lead, map[string]any{"name": "site-1", "organization": "orgA"}); st != 409 {
		t.Fatalf("duplicate client on B: %d", st)
	}
	if st, _ := b.do("PATCH", "/api/v1/clients/1", admin, map[string]any{"approval_state": 100}); st != 200 {
		t.Fatalf("approve on B: %d", st)
	}
	u1, _ := reps[0].Store.UserByEmail("user1@o.org")
	if st, _ := a.do("PATCH", fmt.Sprintf("/api/v1/users/%d", u1.ID), admin, map[string]any{"approval_state": 100}); st != 200 {
		t.Fatalf("approve user on A: %d", st)
	}
	lead = a.login("user1@o.org", "pw") // a token saying approved
	var zips [][]byte
	for _, base := range []string{tsA.URL, tsB.URL} {
		resp, body := postBlob(t, base+"/api/v1/clients/1/blob", lead, "pgpin1")
		if resp.StatusCode != 200 {
			t.Fatalf("blob: %d %s", resp.StatusCode, body)
		}
		zips = append(zips, body)
	}
	if unzip, err := exec.LookPath("unzip"); err == nil {
		for _, z := range zips {
			files, _, err := unzipWithPIN(t, z, "pgpin1")
			if err != nil {
				t.Fatal(err)
			}
			if ca := string(files["startup/rootCA.pem"]); ca == "" || !strings.Contains(ca, "BEGIN CERTIFICATE") {
				t.Fatalf("kit without the root CA (unzip %s)", unzip)
			}
		}
		fa, _, _ := unzipWithPIN(t, zips[0], "pgpin1")
		fb, _, _ := unzipWithPIN(t, zips[1], "pgpin1")
		if string(fa["startup/rootCA.pem"]) != string(fb["startup/rootCA.pem"]) {
			t.Fatal("the replicas' kits carry different root CAs")
		}
	}
	if cl, _ := reps[0].Store.Client(1); cl.DownloadCount != 2 {
		t.Fatalf("download_count %d, want 2 (one per replica)", cl.DownloadCount)
	}
	_, r := a.do("GET", "/api/v1/audit", admin, nil)
	if n := len(r["audit"].([]any)); n != 5 { // freeze, client approval, user approval, 2 downloads
		t.Fatalf("audit log has %d entries: %v", n, r)
	}

	// Restart PostgreSQL and the Dashboard: everything stays, old tokens work.
	tsA.Close()
	tsB.Close()
	reps[0].Close()
	reps[1].Close()
	if err := cluster.Restart(); err != nil {
		t.Fatal(err)
	}
	s, err := OpenURL(t.TempDir(), dsn, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	c := client{t, ts.URL}
	if st, r := c.do("GET", "/api/v1/users", admin, nil); st != 200 || len(r["user_list"].([]any)) != 27 {
		t.Fatalf("users after restart with the old token: %d %d", st, len(r["user_list"].([]any)))
	}
	if st, r := c.do("GET", "/api/v1/clients", lead, nil); st != 200 || len(r["client_list"].([]any)) != 1 {
		t.Fatalf("clients after restart: %d %v", st, r)
	}
	if resp, body := postBlob(t, ts.URL+"/api/v1/clients/1/blob", lead, "pgpin2"); resp.StatusCode != 200 {
		t.Fatalf("blob after restart: %d %s", resp.StatusCode, body)
	}
	c.login("user7@o.org", "pw")
}

// TestPostgresMigrations: a PostgreSQL database at schema 3 (the first with
// PostgreSQL, whose JWT key lives in the setting table) migrates to the
// newest, and a newer one is refused, as with SQLite.
func TestPostgresMigrations(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dsn := pgtest.Start(t)
	saved := migrations
	migrations = migrations[:3]
	cred, _ := ParseCredential("admin@x.org:pw:nvidia")
	s, err := OpenURL(t.TempDir(), dsn, &cred, io.Discard)
	migrations = saved
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = OpenURL(t.TempDir(), dsn, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Store.SchemaVersion(); v != len(migrations) {
		t.Fatalf("version %d, want %d", v, len(migrations))
	}
	if u, err := s.Store.UserByEmail("admin@x.org"); err != nil || u.ID != 1 || u.ApprovalState != 200 {
		t.Fatalf("admin after migrating: %v %v", u, err)
	}
	s.Store.db.Exec(`INSERT INTO schema_migrations(version, applied_at) VALUES (99, 'x')`)
	s.Close()
	if _, err := OpenURL(t.TempDir(), dsn, nil, io.Discard); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("newer schema: %v", err)
	}
}
