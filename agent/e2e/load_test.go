package e2e_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/agenttest"
	"github.com/flarekit/terraform-provider-flare/agent/client"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// Load test bounds: connections of each kind, how slowly they send, and
// how long the whole load may last.
const (
	loadIdle       = 100 // keep-alive connections idle after one request
	loadSlowHeader = 50  // request headers one byte every loadDrip
	loadSlowBody   = 50  // JSON bodies one byte every loadDrip
	loadUploads    = 50  // parallel uploads of a kit archive, dripping
	loadDrip       = 500 * time.Millisecond
	loadFor        = 12 * time.Second // hard stop of every load goroutine
)

// TestAgentUnderLoad (issue 11 item 5) runs `flare-agent serve` on
// 127.0.0.1 and holds 200 connections against it (idle keep-alives, slow
// headers, slow bodies) plus 50 parallel dripping uploads, bounded in
// count and time. /healthz must keep answering quickly; afterwards the
// server must have closed every connection by its timeouts, refused the
// uploads beyond max_concurrent_uploads with 429, cut off the admitted ones
// and deleted their files, and its goroutines and open files must be back
// to where they were.
func TestAgentUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("a bounded load test of about 30 s; not in -short")
	}
	deps := agenttest.NeedHost(t)
	base, err := os.MkdirTemp("", "flare-load-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	bin := agenttest.BuildAgent(t, base)
	p := newPKI(t, filepath.Join(base, "pki"))
	site := p.agentKit(t, "site-1", "org-a")
	adminTLS := tlsFromKit(t, p.kit(t, "admin", "client", pki.Subject{CommonName: "admin@org-a.example", Organization: "org-a", Role: "project_admin"}))
	memberTLS := tlsFromKit(t, p.kit(t, "member", "client", pki.Subject{CommonName: "m@org-a.example", Organization: "org-a", Role: "member"}))

	port := agenttest.FreePort(t)
	stateDir := filepath.Join(base, "state")
	cfg := filepath.Join(base, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: 127.0.0.1:%d
state_dir: %s
agent_kit_dir: %s
qemu: %s
mode: simulated
accel: tcg
network: none
log_level: info
read_header_timeout: 2s
read_timeout: 3s
write_timeout: 10s
idle_timeout: 3s
upload_timeout: 4s
max_concurrent_uploads: 4
max_upload_bytes: 67108864
`, port, stateDir, site, deps.QEMU)), 0o600); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	logFile := filepath.Join(base, "agent.log")
	agent := agenttest.StartAgent(t, bin, cfg, logFile, url+"/healthz", adminTLS)
	t.Cleanup(agent.Term)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", agenttest.TailFile(logFile, 40))
		}
	})

	// metrics reads go_goroutines and process_open_fds on a connection of
	// its own, closed afterwards.
	metrics := func() (goroutines, fds int) {
		t.Helper()
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: adminTLS, DisableKeepAlives: true}, Timeout: 10 * time.Second}
		resp, err := hc.Get(url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		num := func(name string) int {
			m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(b)
			if m == nil {
				t.Fatalf("metrics lack %s", name)
			}
			f, _ := strconv.ParseFloat(string(m[1]), 64)
			return int(f)
		}
		return num("go_goroutines"), num("process_open_fds")
	}
	time.Sleep(500 * time.Millisecond)
	baseG, baseFD := metrics()
	t.Logf("baseline: %d goroutines, %d open files", baseG, baseFD)

	stop := make(chan struct{})
	time.AfterFunc(loadFor, func() { close(stop) })
	var wg sync.WaitGroup
	var open, closedByServer atomic.Int32
	dial := func(cfg *tls.Config) *tls.Conn {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			t.Errorf("dial: %v", err)
			return nil
		}
		open.Add(1)
		return c
	}
	// hold keeps c until the server closes it or the load ends.
	hold := func(c *tls.Conn, drip []byte) {
		defer c.Close()
		done := make(chan struct{})
		go func() { io.Copy(io.Discard, c); close(done) }()
		for i := 0; ; i++ {
			select {
			case <-done:
				closedByServer.Add(1)
				return
			case <-stop:
				return
			case <-time.After(loadDrip):
			}
			if drip != nil {
				c.Write([]byte{drip[i%len(drip)]})
			}
		}
	}
	for i := 0; i < loadIdle; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dial(memberTLS)
			if c == nil {
				return
			}
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
			br := bufio.NewReader(c)
			if resp, err := http.ReadResponse(br, nil); err == nil {
				io.Copy(io.Discard, resp.Body)
			}
			hold(c, nil)
		}()
	}
	for i := 0; i < loadSlowHeader; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c := dial(memberTLS); c != nil {
				fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\n")
				hold(c, []byte("X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"))
			}
		}()
	}
	for i := 0; i < loadSlowBody; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c := dial(memberTLS); c != nil {
				fmt.Fprintf(c, "POST /v1/cvms/none/attestation HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"nonce\":\"")
				hold(c, []byte("AAAA"))
			}
		}()
	}
	// Uploads: the start of a gzip stream, then a byte every loadDrip.
	var upCodes sync.Map
	archive := slowArchive()
	for i := 0; i < loadUploads; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dial(adminTLS)
			if c == nil {
				return
			}
			defer c.Close()
			fmt.Fprintf(c, "POST /v1/cvms/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/gzip\r\nContent-Length: %d\r\n\r\n", len(archive))
			c.Write(archive[:16])
			got := make(chan int, 1)
			go func() {
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					got <- 0 // closed without an answer
					return
				}
				resp.Body.Close()
				got <- resp.StatusCode
			}()
			for j := 16; ; j++ {
				select {
				case code := <-got:
					v, _ := upCodes.LoadOrStore(code, new(atomic.Int32))
					v.(*atomic.Int32).Add(1)
					return
				case <-stop:
					return
				case <-time.After(loadDrip):
				}
				c.Write(archive[j : j+1])
			}
		}()
	}

	// /healthz on fresh connections (TLS handshake included) while loaded.
	var lat []time.Duration
	fails := 0
	probe := &http.Client{Transport: &http.Transport{TLSClientConfig: adminTLS, DisableKeepAlives: true}, Timeout: 5 * time.Second}
	time.Sleep(time.Second) // the load is in place
	maxG, _ := metrics()
	for t0 := time.Now(); time.Since(t0) < 6*time.Second; time.Sleep(100 * time.Millisecond) {
		s := time.Now()
		resp, err := probe.Get(url + "/healthz")
		if err != nil || resp.StatusCode != 200 {
			fails++
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(s))
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) == 0 {
		t.Fatal("/healthz never answered under load")
	}
	pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	t.Logf("load: %d connections opened (%d idle keep-alive, %d slow headers, %d slow bodies, %d uploads); peak %d goroutines",
		open.Load(), loadIdle, loadSlowHeader, loadSlowBody, loadUploads, maxG)
	t.Logf("/healthz under load on a new mTLS connection each: %d answered, %d failed; p50 %s, p95 %s, max %s",
		len(lat), fails, pct(0.5).Round(time.Microsecond), pct(0.95).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	var codes []string
	upCodes.Range(func(k, v any) bool {
		codes = append(codes, fmt.Sprintf("%v×%d", k, v.(*atomic.Int32).Load()))
		return true
	})
	sort.Strings(codes)
	t.Logf("uploads answered: %s (0 = closed without an answer); connections closed by the server before the load ended: %d of %d",
		strings.Join(codes, ", "), closedByServer.Load(), loadIdle+loadSlowHeader+loadSlowBody)
	if fails > 0 {
		t.Errorf("/healthz failed %d times under load", fails)
	}
	if p := pct(0.95); p > time.Second {
		t.Errorf("/healthz p95 %s under load", p)
	}
	if n := closedByServer.Load(); n != loadIdle+loadSlowHeader+loadSlowBody {
		t.Errorf("the server closed %d of %d idle or slow connections within %s", n, loadIdle+loadSlowHeader+loadSlowBody, loadFor)
	}
	if v, ok := upCodes.Load(http.StatusTooManyRequests); !ok || v.(*atomic.Int32).Load() < loadUploads-4 {
		t.Errorf("uploads beyond max_concurrent_uploads (4) were not refused with 429: %v", codes)
	}

	// Nothing left behind.
	t0 := time.Now()
	var g, fd int
	for {
		g, fd = metrics()
		if g <= baseG+2 && fd <= baseFD+2 || time.Since(t0) > 15*time.Second {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("after the load: %d goroutines (baseline %d), %d open files (baseline %d), %s after the load ended",
		g, baseG, fd, baseFD, time.Since(t0).Round(time.Millisecond))
	if g > baseG+2 || fd > baseFD+2 {
		t.Errorf("not back to baseline: %d goroutines (baseline %d), %d open files (baseline %d)", g, baseG, fd, baseFD)
	}
	var left []string
	filepath.WalkDir(stateDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, strings.TrimPrefix(p, stateDir+"/"))
		}
		return nil
	})
	ents, _ := os.ReadDir(filepath.Join(stateDir, "kits"))
	if len(left) > 0 || len(ents) > 0 {
		t.Errorf("files left in state_dir: %v; kits/: %d entries", left, len(ents))
	}
}

func tlsFromKit(t *testing.T, kit string) *tls.Config {
	t.Helper()
	cfg, err := client.TLSConfigFromKit(kit)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// slowArchive is a kit-like archive: one 1 MiB file of random bytes, so
// its first bytes cannot be unpacked on their own.
func slowArchive() []byte {
	data := make([]byte, 1<<20)
	rand.Read(data)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "site-1/cvm_0a1b2c3d/root.qcow2", Mode: 0o600, Size: int64(len(data)), Typeflag: tar.TypeReg})
	tw.Write(data)
	tw.Close()
	zw.Close()
	return out.Bytes()
}
