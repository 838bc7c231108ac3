package provider

// TestAccPipeline runs the provider as CI pipelines do: runners that share
// nothing but Terraform's pg backend (a real PostgreSQL on 127.0.0.1) and
// Vault (an OpenBao dev server). `make pipeline-test` (and `make test`,
// with FLARE_REQUIRE_PIPELINE=1 so a missing piece fails) runs it.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// pipelineNeed skips, or fails when FLARE_REQUIRE_PIPELINE is set.
func pipelineNeed(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("FLARE_REQUIRE_PIPELINE") != "" {
		t.Fatal(msg + " (FLARE_REQUIRE_PIPELINE is set: `make pipeline-deps` installs it)")
	}
	t.Skip(msg + ": run `make pipeline-test`")
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startPostgres starts a throwaway PostgreSQL cluster on 127.0.0.1 and
// returns its connection string. As root it runs the server as nobody.
func startPostgres(t *testing.T) string {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		pipelineNeed(t, "no PostgreSQL (Debian package postgresql: /usr/lib/postgresql/*/bin/initdb)")
	}
	sort.Strings(bins)
	bin := filepath.Dir(bins[len(bins)-1])
	base, err := os.MkdirTemp("", "flare-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	data := filepath.Join(base, "data")
	var as []string // run as this user, via runuser
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chmod(base, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(base, uid, gid); err != nil {
			t.Fatal(err)
		}
		as = []string{"runuser", "-u", "nobody", "--"}
	}
	cmd := func(args ...string) *exec.Cmd {
		full := append(append([]string{}, as...), args...)
		c := exec.Command(full[0], full[1:]...)
		c.Dir = base
		return c
	}
	if out, err := cmd(filepath.Join(bin, "initdb"), "-D", data, "-A", "trust", "-U", "flare", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := freePort(t)
	if out, err := cmd(filepath.Join(bin, "pg_ctl"), "-D", data, "-l", filepath.Join(base, "server.log"), "-w", "-t", "60",
		"-o", fmt.Sprintf("-h 127.0.0.1 -p %d -k %s -F", port, base), "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(base, "server.log"))
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	t.Cleanup(func() {
		if out, err := cmd(filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "stop").CombinedOutput(); err != nil {
			t.Logf("pg_ctl stop: %v\n%s", err, out)
		}
	})
	return fmt.Sprintf("postgres://flare@127.0.0.1:%d/postgres?sslmode=disable", port)
}

// pipelineVault returns a Vault client: the server of VAULT_ADDR and
// VAULT_TOKEN (make vault-test), or an OpenBao dev server started here.
func pipelineVault(t *testing.T) *api.Client {
	t.Helper()
	if os.Getenv("VAULT_ADDR") == "" || os.Getenv("VAULT_TOKEN") == "" {
		state := t.TempDir()
		script, _ := filepath.Abs(filepath.Join("..", "scripts", "bao-dev.sh"))
		out, err := exec.Command(script, "start", state).Output()
		if err != nil {
			pipelineNeed(t, "no OpenBao dev server (%v; `make vault-tools` installs bao into build/venv)", err)
		}
		t.Cleanup(func() { _ = exec.Command(script, "stop", state).Run() })
		for _, line := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "="); ok && (k == "VAULT_ADDR" || k == "VAULT_TOKEN") {
				t.Setenv(k, v)
			}
		}
	}
	c, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sys().Health(); err != nil {
		pipelineNeed(t, "vault at %s: %v", c.Address(), err)
	}
	return c
}

// planChanges maps each resource address of a saved plan to its actions.
func planChanges(t *testing.T, r *tfRunner, planFile string) map[string]string {
	t.Helper()
	res := r.must("show", "-json", planFile)
	var p struct {
		ResourceChanges []struct {
			Address string `json:"address"`
			Change  struct {
				Actions []string `json:"actions"`
			} `json:"change"`
		} `json:"resource_changes"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &p); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, rc := range p.ResourceChanges {
		out[rc.Address] = strings.Join(rc.Change.Actions, ",")
	}
	return out
}

// kitFiles reads every file of a kit directory, by relative path.
func kitFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = fmt.Sprintf("%o:%s", info.Mode().Perm(), b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAccPipeline(t *testing.T) {
	tf := tfBinary(t)
	conn := startPostgres(t)
	client := pipelineVault(t)
	rc := providerMirror(t)
	base := t.TempDir()
	key := uniqueKey(t)
	backend := `  backend "pg" {}`
	ca := fmt.Sprintf(`{
    backend  = "vault_transit"
    key_name = %q
  }`, key)
	env := []string{"PG_CONN_STR=" + conn, "PG_SCHEMA_NAME=pipeline"}
	runner := func(name string, clients ...string) *tfRunner {
		r := newRunner(t, name, tf, rc, filepath.Join(base, name), pipelineConfig(backend, ca, clients...), env...)
		r.must("init", "-input=false")
		return r
	}

	// Runner A provisions the federation.
	a := runner("runner-a", "site-1", "site-2")
	a.must("apply", "-auto-approve", "-input=false")
	stA := showState(t, a)
	root := stateAttr(t, a, "flare_project.p", "root_ca_fingerprint")
	if _, err := os.Stat(filepath.Join(a.dir, ".flare-ca")); !os.IsNotExist(err) {
		t.Fatalf("runner A has a CA directory with the vault_transit backend (err=%v)", err)
	}

	// Runner B: a fresh directory, same backend. The plan writes kits and
	// nothing else: no project, certificate or key change.
	b := runner("runner-b", "site-1", "site-2")
	res := b.run("plan", "-detailed-exitcode", "-input=false", "-out=b.plan")
	if res.code != 2 {
		t.Fatalf("runner B plan: exit %d, want 2 (kits to write)\n%s", res.code, res)
	}
	for addr, actions := range planChanges(t, b, "b.plan") {
		want := "no-op"
		if strings.HasPrefix(addr, "flare_startup_kit.") {
			want = "update"
		}
		if actions != want {
			t.Errorf("runner B plans %s for %s, want %s", actions, addr, want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	b.must("apply", "-input=false", "b.plan")
	b.must("plan", "-detailed-exitcode", "-input=false")
	stB := showState(t, b)
	// Same certificates and keys in state, and the same kit files except signature.json.
	certs := func(st tfState) map[string]string {
		m := map[string]string{}
		for _, r := range st.Values.RootModule.Resources {
			for _, attr := range []string{"root_ca_fingerprint", "cert_fingerprint", "key_fingerprint"} {
				if v, ok := r.AttributeValues[attr].(string); ok {
					m[r.Address+"."+attr] = v
				}
			}
		}
		return m
	}
	if ca, cb := certs(stA), certs(stB); fmt.Sprint(ca) != fmt.Sprint(cb) || len(ca) < 5 {
		t.Fatalf("runner B changed certificates or keys:\nA %v\nB %v", ca, cb)
	}
	for _, kit := range []string{"server1", "site-1", "site-2", "admin@nvidia.com"} {
		fa, fb := kitFiles(t, filepath.Join(a.dir, "kits", kit)), kitFiles(t, filepath.Join(b.dir, "kits", kit))
		if len(fa) != len(fb) {
			t.Errorf("%s: runner A wrote %d files, runner B %d", kit, len(fa), len(fb))
		}
		for p, ca := range fa {
			if filepath.Base(p) == "signature.json" {
				continue // RSA-PSS signatures are randomised
			}
			if fb[p] != ca {
				t.Errorf("%s: %s differs between runner A and runner B", kit, p)
			}
		}
		if got := fingerprintOfFile(t, filepath.Join(b.dir, "kits", kit, "startup", "rootCA.pem")); got != root {
			t.Errorf("%s: runner B's kit has root %s, the project %s", kit, got, root)
		}
	}
	if err := checkKits(filepath.Join(b.dir, "kits"), map[string]string{"server1": "server", "site-1": "client", "site-2": "client", "admin@nvidia.com": "client"})(nil); err != nil {
		t.Fatal(err)
	}

	// Runner A adds site-3 and holds the state lock at the approval prompt;
	// runner C fails cleanly without waiting, and waits with -lock-timeout.
	writeConfig(t, a, pipelineConfig(backend, ca, "site-1", "site-2", "site-3"))
	held := holdLock(t, a)
	c := runner("runner-c", "site-1", "site-2", "site-3")
	res = c.run("plan", "-input=false", "-lock-timeout=1s")
	if res.code != 1 || !strings.Contains(res.stderr, "Error acquiring the state lock") {
		t.Fatalf("runner C while the lock is held: exit %d, want 1 and a lock error\n%s", res.code, res)
	}
	waited := make(chan tfResult, 1)
	go func() { waited <- c.run("apply", "-auto-approve", "-input=false", "-lock-timeout=120s") }()
	time.Sleep(2 * time.Second)
	held.approve()
	if res := <-waited; res.code != 0 {
		t.Fatalf("runner C with -lock-timeout: exit %d\n%s", res.code, res)
	} else if res.took < time.Second {
		t.Fatalf("runner C did not wait for the lock (%s)", res.took)
	}
	if r := stateAttr(t, c, "flare_project.p", "root_ca_fingerprint"); r != root {
		t.Fatal("runner C changed the root")
	}
	siteA, siteC := stateAttr(t, a, "flare_client.site_3", "cert_fingerprint"), stateAttr(t, c, "flare_client.site_3", "cert_fingerprint")
	if siteA == "" || siteA != siteC {
		t.Fatalf("site-3 issued twice: A %s, C %s", siteA, siteC)
	}

	// Two concurrent applies of a new project (another workspace) issue one root.
	keyD := key + "-d"
	caD := fmt.Sprintf(`{
    backend  = "vault_transit"
    key_name = %q
  }`, keyD)
	envD := []string{"PG_CONN_STR=" + conn, "PG_SCHEMA_NAME=concurrent"}
	var wg sync.WaitGroup
	results := make([]tfResult, 2)
	runners := make([]*tfRunner, 2)
	for i := range runners {
		runners[i] = newRunner(t, fmt.Sprintf("runner-d%d", i), tf, rc, filepath.Join(base, fmt.Sprintf("d%d", i)), pipelineConfig(backend, caD, "site-1"), envD...)
		runners[i].must("init", "-input=false")
	}
	for i := range runners {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = runners[i].run("apply", "-auto-approve", "-input=false", "-lock-timeout=120s")
		}(i)
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Fatalf("concurrent apply %d: exit %d\n%s", i, r.code, r)
		}
	}
	created := 0
	for _, r := range results {
		if strings.Contains(r.stdout, "flare_project.p: Creation complete") {
			created++
		}
	}
	r0, r1 := stateAttr(t, runners[0], "flare_project.p", "root_ca_fingerprint"), stateAttr(t, runners[1], "flare_project.p", "root_ca_fingerprint")
	if created != 1 || r0 != r1 {
		t.Fatalf("concurrent applies made %d roots (fingerprints %s, %s)", created, r0, r1)
	}
	// Even without the lock a second root cannot be made for the same key
	// version: the KV root entry is create-only.
	e := newRunner(t, "runner-e", tf, rc, filepath.Join(base, "e"), pipelineConfig(backend, caD, "site-1"), "PG_CONN_STR="+conn, "PG_SCHEMA_NAME=other")
	e.must("init", "-input=false")
	if res := e.run("apply", "-auto-approve", "-input=false"); res.code != 1 || !regexp.MustCompile(`already\s+holds\s+a\s+root\s+certificate`).MatchString(res.String()) {
		t.Fatalf("a second project on the same key and KV path: exit %d, want the create-only refusal\n%s", res.code, res)
	}
	e.run("destroy", "-auto-approve", "-input=false")

	runners[0].must("destroy", "-auto-approve", "-input=false")
	c.must("destroy", "-auto-approve", "-input=false")
	for _, k := range []string{key, keyD} {
		if s, err := client.KVv2("secret").Get(context.Background(), "flare/"+k+"/v1/root"); err == nil && s != nil && s.Data != nil {
			t.Errorf("KV root entry of %s left after destroy", k)
		}
	}
}

func writeConfig(t *testing.T, r *tfRunner, config string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(r.dir, "main.tf"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
}

// heldLock is a terraform apply waiting at its approval prompt, holding
// the state lock.
type heldLock struct {
	t     *testing.T
	stdin io.WriteCloser
	done  chan error
	out   *strings.Builder
}

func holdLock(t *testing.T, r *tfRunner) *heldLock {
	t.Helper()
	cmd := exec.Command(r.tf, "apply", "-no-color", "-input=true")
	cmd.Dir = r.dir
	cmd.Env = append(append([]string{}, r.env...), "TF_INPUT=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &heldLock{t: t, stdin: stdin, done: make(chan error, 1), out: &strings.Builder{}}
	prompt := make(chan struct{})
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Split(bufio.ScanRunes)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			h.out.WriteString(sc.Text())
			if strings.Contains(h.out.String(), "Enter a value:") {
				once.Do(func() { close(prompt) })
			}
			mu.Unlock()
		}
		h.done <- cmd.Wait()
	}()
	select {
	case <-prompt:
	case err := <-h.done:
		t.Fatalf("%s: apply ended before its prompt: %v\n%s", r.name, err, h.out)
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("%s: no approval prompt\n%s", r.name, h.out)
	}
	t.Logf("%s: terraform apply holds the state lock at its prompt", r.name)
	return h
}

func (h *heldLock) approve() {
	h.t.Helper()
	if _, err := io.WriteString(h.stdin, "yes\n"); err != nil {
		h.t.Fatal(err)
	}
	h.stdin.Close()
	if err := <-h.done; err != nil {
		h.t.Fatalf("held apply: %v\n%s", err, h.out)
	}
}
