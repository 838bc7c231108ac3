// Package pgtest starts a throwaway PostgreSQL cluster on 127.0.0.1 for
// tests, from Debian's postgresql package (initdb and pg_ctl under
// /usr/lib/postgresql/<version>/bin). PostgreSQL refuses to run as root, so
// as root the cluster runs as the postgres user (runuser -u postgres).
//
//	dsn := pgtest.Start(t) // postgres://flare:<random>@127.0.0.1:<port>/flare?sslmode=disable
//
// Without PostgreSQL installed Start skips the test, or fails it when
// FLARE_REQUIRE_POSTGRES=1 (make test sets it and installs the package).
package pgtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BinDir returns the newest /usr/lib/postgresql/<version>/bin holding
// initdb, or "" when there is none.
func BinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	if len(dirs) == 0 {
		return ""
	}
	return filepath.Dir(dirs[0])
}

func version(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

// Cluster is a running throwaway cluster.
type Cluster struct {
	DSN  string // postgres://flare:<password>@127.0.0.1:<port>/flare?sslmode=disable
	Port int
	Dir  string // data directory and socket directory live under here

	bin    string
	runAs  []string
	logf   string
	dataD  string
	stderr bytes.Buffer
}

// Start starts a cluster for t and stops and removes it when t ends; it
// returns the DSN of database "flare" owned by user "flare".
func Start(t testing.TB) string {
	t.Helper()
	return StartCluster(t).DSN
}

// StartCluster is Start returning the cluster (for Stop/Restart tests).
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	bin := BinDir()
	if bin == "" {
		if os.Getenv("FLARE_REQUIRE_POSTGRES") == "1" {
			t.Fatal("FLARE_REQUIRE_POSTGRES=1 but PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb; Debian package postgresql, which mk/dashboard.mk installs)")
		}
		t.Skip("PostgreSQL is not installed (Debian package postgresql): set FLARE_REQUIRE_POSTGRES=1 to fail instead")
	}
	c, err := start(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Logf("pgtest: stop: %v", err)
		}
		if t.Failed() {
			if b, err := os.ReadFile(c.logf); err == nil {
				t.Logf("PostgreSQL log:\n%s", tail(string(b), 40))
			}
		}
		os.RemoveAll(c.Dir)
	})
	return c
}

func start(bin string) (*Cluster, error) {
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, bin: bin, dataD: filepath.Join(dir, "data"), logf: filepath.Join(dir, "postgres.log")}
	fail := func(err error) (*Cluster, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	if os.Geteuid() == 0 {
		// PostgreSQL will not run as root: hand the folder to postgres.
		u, err := user.Lookup("postgres")
		if err != nil {
			return fail(fmt.Errorf("running as root and there is no postgres user to run PostgreSQL as: %w", err))
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return fail(err)
		}
		c.runAs = []string{"runuser", "-u", "postgres", "--"}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fail(err)
	}
	password := randHex(12)
	pwfile := filepath.Join(dir, "pw")
	if err := c.run("sh", "-c", "umask 077 && printf '%s\\n' \"$0\" > \"$1\"", password, pwfile); err != nil {
		return fail(err)
	}
	// Superuser "flare" with a password; TCP needs it (scram-sha-256), the
	// socket (in dir, 0700) trusts its owner.
	if err := c.run(filepath.Join(bin, "initdb"), "-D", c.dataD, "-U", "flare", "--pwfile", pwfile,
		"--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync"); err != nil {
		return fail(fmt.Errorf("initdb: %w", err))
	}
	for attempt := 1; ; attempt++ {
		c.Port = freePort()
		err := c.run(filepath.Join(bin, "pg_ctl"), "-D", c.dataD, "-l", c.logf, "-w", "-t", "60", "-o",
			fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -k %s -c fsync=off -c full_page_writes=off -c max_connections=200", c.Port, dir),
			"start")
		if err == nil {
			break
		}
		if attempt == 3 {
			return fail(fmt.Errorf("pg_ctl start: %w", err))
		}
	}
	if err := c.run(filepath.Join(bin, "createdb"), "-h", dir, "-p", strconv.Itoa(c.Port), "-U", "flare", "flare"); err != nil {
		c.Stop()
		return fail(fmt.Errorf("createdb: %w", err))
	}
	c.DSN = fmt.Sprintf("postgres://flare:%s@127.0.0.1:%d/flare?sslmode=disable", password, c.Port)
	return c, nil
}

// Stop stops the cluster (fast shutdown); its data stays until the test ends.
func (c *Cluster) Stop() error {
	return c.run(filepath.Join(c.bin, "pg_ctl"), "-D", c.dataD, "-m", "fast", "-w", "stop")
}

// Restart stops and starts the cluster on the same port with the same data.
func (c *Cluster) Restart() error {
	if err := c.Stop(); err != nil {
		return err
	}
	return c.run(filepath.Join(c.bin, "pg_ctl"), "-D", c.dataD, "-l", c.logf, "-w", "-t", "60", "-o",
		fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -k %s -c fsync=off", c.Port, c.Dir), "start")
}

// CreateDB makes another database in the cluster and returns its DSN.
func (c *Cluster) CreateDB(name string) (string, error) {
	if err := c.run(filepath.Join(c.bin, "createdb"), "-h", c.Dir, "-p", strconv.Itoa(c.Port), "-U", "flare", name); err != nil {
		return "", err
	}
	return strings.Replace(c.DSN, "/flare?", "/"+name+"?", 1), nil
}

func (c *Cluster) run(name string, args ...string) error {
	argv := append(append([]string{}, c.runAs...), name)
	argv = append(argv, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = c.Dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%s: %v\n%s", filepath.Base(name), err, tail(out.String(), 20))
		}
		return nil
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		return fmt.Errorf("%s: no exit within 2 minutes\n%s", filepath.Base(name), tail(out.String(), 20))
	}
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 15432
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
