package e2e_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/agenttest"
	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/client"
	"github.com/flarekit/terraform-provider-flare/internal/cvm"
	"github.com/flarekit/terraform-provider-flare/internal/guestconfig"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/kbs"
	"github.com/flarekit/terraform-provider-flare/kbs/kbstest"
)

// slirpHost is the host as QEMU's user network shows it to the guest: a
// connection there reaches the host's 127.0.0.1.
const slirpHost = "10.0.2.2"

// TestCVMKeyRelease boots a CVM kit with its own initrd: flare-init on
// Debian's 6.12 kernel attests (SIMULATED SEV-SNP: go-sev-guest's test
// device and fake AMD chain, described by flare-agent over fw_cfg) to
// flare-kbs, gets the root key, opens the LUKS root, puts the firewall
// up and runs the image's entrypoint (a probe) from the encrypted root
// with the startup kit bound at /user_config/nvflare. Then a kit whose
// command line changed after the broker's rule was written gets no key
// and powers off, and no file of the site holds the root key or the
// participant's private key.
func TestCVMKeyRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU guests (about a minute each); not in -short")
	}
	tStart := time.Now()
	deps := agenttest.NeedHost(t)
	kernel := guestKernel(t)
	base, err := os.MkdirTemp("", "flare-cvm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		agenttest.KillAll(base)
		if !t.Failed() || os.Getenv("FLARE_E2E_KEEP") == "" {
			os.RemoveAll(base)
		} else {
			t.Logf("kept %s", base)
		}
	})
	site := filepath.Join(base, "site") // everything the site host holds
	admin := filepath.Join(base, "admin")
	os.MkdirAll(site, 0o700)
	os.MkdirAll(admin, 0o700)
	agentBin := agenttest.BuildAgent(t, site)
	initBin := agenttest.BuildStatic(t, admin, "flare-init", "github.com/flarekit/terraform-provider-flare/agent/cmd/flare-init")
	probeBin := agenttest.BuildStatic(t, admin, "probe", "./testdata/probe")

	p := newPKI(t, filepath.Join(admin, "pki"))
	siteKit := p.kit(t, "site-1", "client", pki.Subject{CommonName: "site-1", Organization: "org-a"})
	participantKey, _ := os.ReadFile(filepath.Join(siteKit, "startup", "client.key"))
	agentKit := p.agentKit(t, "site-1", "org-a")
	adminKit := p.kit(t, "admin", "client", pki.Subject{CommonName: "admin@org-a.example", Organization: "org-a", Role: "project_admin"})

	// The project admin's broker, reachable from the guest at 10.0.2.2.
	store, err := kbs.NewDirStore(filepath.Join(admin, "kbs-store"))
	if err != nil {
		t.Fatal(err)
	}
	var kbsLog syncBuf
	srv, err := kbs.New(kbs.Options{Store: store, Simulated: true, Logger: slog.New(slog.NewJSONHandler(&kbsLog, nil))})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, cert, err := kbstest.NewTLS("127.0.0.1", slirpHost)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	hs.StartTLS()
	t.Cleanup(hs.Close)
	kbsPort := hs.Listener.Addr().(*net.TCPAddr).Port

	// Two host services: the firewall lets the guest reach only the first.
	allowed, blocked := listen(t), listen(t)

	image := dockerSave(t, admin, probeBin, []string{
		"PROBE_OUT=" + slirpHost + ":" + fmt.Sprint(allowed.port) + " " + slirpHost + ":" + fmt.Sprint(blocked.port)})
	measurement := randHex(48)
	cfg := cvm.Config{
		Role:            cvm.RoleClient,
		RootDriveSizeGB: 1, AppLogDriveSizeGB: 1, UserConfigDriveSizeGB: 1, UserDataDriveSizeGB: 1,
		DockerArchive: image, VCPUs: 1, MemoryMiB: 1024,
		Firmware: deps.OVMF, Kernel: kernel, GuestInit: initBin,
		KernelCmdline:   "console=ttyS0 panic=-1 loglevel=4",
		EncryptRoot:     true,
		AllowedOutPorts: []int{allowed.port},
		HostsEntries:    map[string]string{"kbs.flare.test": slirpHost},
		KeyRelease:      &guestconfig.KeyRelease{URL: fmt.Sprintf("https://%s:%d", slirpHost, kbsPort), CACertPEM: string(caPEM)},
	}
	build := func(cfg cvm.Config, measurement string) *cvm.Result {
		t0 := time.Now()
		res, err := cvm.Build(context.Background(), cvm.BuildInput{Config: cfg, StartupKitDir: siteKit, Signer: p.ca.Signer,
			OutputDir: filepath.Join(site, "kits"), ParticipantName: "site-1", ExpectedMeasurement: measurement})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kit %s built in %s (initrd %d bytes)", res.ID, time.Since(t0).Round(time.Millisecond), res.Manifest.Initrd.Size)
		return res
	}
	res := build(cfg, measurement)
	if !res.RootEncrypted {
		t.Fatal("root not encrypted")
	}
	// What Terraform does on apply: the key and the rule for this kit's
	// measurement go to the broker's store; never to the site.
	path := kbs.ResourcePath{Repo: "flare", Type: "root-key", Tag: "site-1"}
	ctx := ctxT(t, 15*time.Minute)
	if err := store.PutSecret(ctx, path, res.RootKey); err != nil {
		t.Fatal(err)
	}
	if err := store.PutPolicy(ctx, path, kbs.Policy{Measurements: []string{measurement}}); err != nil {
		t.Fatal(err)
	}

	port := agenttest.FreePort(t)
	cfgPath := filepath.Join(site, "agent.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`listen: 127.0.0.1:%d
state_dir: %s
agent_kit_dir: %s
qemu: %s
mode: simulated
accel: %s
network: user
forward_address: 127.0.0.1
restart:
  policy: never
stop_timeout: 20s
log_level: debug
`, port, filepath.Join(site, "state"), agentKit, deps.QEMU, agenttest.EnvOr("FLARE_E2E_ACCEL", "tcg"))), 0o600)
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	adminTLS, err := client.TLSConfigFromKit(adminKit)
	if err != nil {
		t.Fatal(err)
	}
	adminTLS = client.PinSite(adminTLS, "site-1")
	logFile := filepath.Join(site, "agent.log")
	agent := agenttest.StartAgent(t, agentBin, cfgPath, logFile, url+"/healthz", adminTLS)
	t.Cleanup(agent.Term)
	c := client.New(url, adminTLS)
	t.Logf("setup took %s", time.Since(tStart).Round(time.Millisecond))

	// 1. The kit boots, gets its key and runs its workload.
	console, took := runToPowerOff(t, ctx, c, res.Dir)
	t.Logf("guest ran to power-off in %s", took.Round(time.Millisecond))
	for _, want := range []string{
		"Measurement: " + measurement + " (SIMULATED)",
		"flare-init: key released",
		"probe: startup-kit ok",
		"probe: startup-kit read-only",
		"probe: workspace ok",
		"probe: uid 0",
		fmt.Sprintf("probe: connect %s:%d ok", slirpHost, allowed.port),
		fmt.Sprintf("probe: connect %s:%d refused", slirpHost, blocked.port),
		"flare-init: workload exited with status 0",
		"flare-init: powering off",
	} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if t.Failed() {
		t.Fatalf("console:\n%s", console)
	}
	if got := allowed.received(); !strings.Contains(got, "hello from the CVM") {
		t.Errorf("the allowed port got %q", got)
	}
	if got := blocked.received(); got != "" {
		t.Errorf("the firewall let the guest reach a port outside allowed_out_ports: %q", got)
	}
	if !strings.Contains(kbsLog.String(), "simulated") {
		t.Errorf("the broker did not label the release simulated:\n%s", kbsLog.String())
	}
	logTimes(t, console)

	// 2. The command line changes after the rule was written: another
	// measurement, no key, power off before anything runs.
	cfg2 := cfg
	cfg2.KernelCmdline += " flare.changed=1"
	res2 := build(cfg2, randHex(48))
	console2, _ := runToPowerOff(t, ctx, c, res2.Dir)
	if !strings.Contains(console2, "flare-init: FAILED") || !strings.Contains(console2, "refused") {
		t.Errorf("a kit the rule does not name got on:\n%s", console2)
	}
	if strings.Contains(console2, "key released") || strings.Contains(console2, "probe:") {
		t.Errorf("a kit the rule does not name got its key:\n%s", console2)
	}

	// 3. No file of the site holds the root key or the participant's key
	// (the root is a LUKS container, user_config holds no kit).
	for name, secret := range map[string][]byte{"root key": res.RootKey, "participant key": participantKey} {
		if f := fileContaining(t, site, secret); f != "" {
			t.Errorf("the site's %s holds the %s", f, name)
		}
	}
}

// runToPowerOff launches kitDir and waits until QEMU exits; it returns the
// console log.
func runToPowerOff(t *testing.T, ctx context.Context, c *client.Client, kitDir string) (string, time.Duration) {
	t.Helper()
	t0 := time.Now()
	cv, err := c.Launch(ctx, kitDir)
	if err != nil {
		t.Fatal(err)
	}
	for {
		st, err := c.Get(ctx, cv.ID)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != api.StateStarting && st.State != api.StateRunning {
			break
		}
		if time.Since(t0) > 8*time.Minute {
			logs, _ := c.Logs(ctx, cv.ID, 200)
			t.Fatalf("guest still %s after %s; console:\n%s", st.State, time.Since(t0), strings.Join(logs.Lines, "\n"))
		}
		time.Sleep(time.Second)
	}
	took := time.Since(t0)
	logs, err := c.Logs(ctx, cv.ID, 2000)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(logs.Lines, "\n"), took
}

// logTimes reports boot milestones from the kernel's timestamps.
func logTimes(t *testing.T, console string) {
	sc := bufio.NewScanner(strings.NewReader(console))
	for sc.Scan() {
		l := sc.Text()
		for _, m := range []string{"key released", "workload started", "workload exited"} {
			if strings.Contains(l, m) {
				t.Logf("console: %s", l)
			}
		}
	}
}

func guestKernel(t *testing.T) string {
	t.Helper()
	if k := os.Getenv("FLARE_GUEST_KERNEL"); k != "" {
		return k
	}
	_, file, _, _ := runtime.Caller(0)
	ks, _ := filepath.Glob(filepath.Join(filepath.Dir(file), "..", "..", "build", "guest-kernel", "boot", "vmlinuz-*"))
	sort.Strings(ks)
	if len(ks) == 0 {
		agenttest.SkipOrFail(t, "no guest kernel with sev-guest and dm-crypt: `make guest-kernel` unpacks Debian's 6.12 cloud kernel into build/guest-kernel (or set FLARE_GUEST_KERNEL)")
	}
	return ks[len(ks)-1]
}

// dockerSave writes a `docker save` archive whose entrypoint is the probe.
func dockerSave(t *testing.T, dir, probe string, env []string) string {
	t.Helper()
	body, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for _, e := range []struct {
		name string
		mode int64
		body []byte
	}{
		{"etc/", 0o755, nil}, {"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/probe\n")},
		{"probe", 0o755, body}, {"root/", 0o700, nil}, {"tmp/", 0o1777, nil},
	} {
		h := &tar.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.body)), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag = tar.TypeDir
		}
		tw.WriteHeader(h)
		tw.Write(e.body)
	}
	tw.Close()
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/probe"}, "Env": append([]string{"PATH=/"}, env...), "WorkingDir": "/"}})
	sum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(sum[:]) + ".json"
	man, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{"flare/probe:latest"}, "Layers": []string{"l1/layer.tar"}}})
	var out bytes.Buffer
	ow := tar.NewWriter(&out)
	for _, e := range []struct {
		name string
		body []byte
	}{{"l1/layer.tar", layer.Bytes()}, {cfgName, cfg}, {"manifest.json", man}} {
		ow.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)})
		ow.Write(e.body)
	}
	ow.Close()
	p := filepath.Join(dir, "probe-image.tar")
	if err := os.WriteFile(p, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type hostService struct {
	port int
	mu   sync.Mutex
	got  strings.Builder
}

func (h *hostService) received() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.got.String()
}

func listen(t *testing.T) *hostService {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	h := &hostService{port: l.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				b := make([]byte, 256)
				n, _ := c.Read(b)
				h.mu.Lock()
				h.got.Write(b[:n])
				h.mu.Unlock()
			}()
		}
	}()
	return h
}

// fileContaining returns the first file under dir whose bytes contain s.
func fileContaining(t *testing.T, dir string, s []byte) string {
	t.Helper()
	if len(s) == 0 {
		t.Fatal("empty secret")
	}
	found := ""
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || found != "" || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, s) {
			found = p
		}
		return nil
	})
	return found
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
