package e2e_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/agenttest"
	"github.com/flarekit/terraform-provider-flare/agent/client"
	"github.com/flarekit/terraform-provider-flare/internal/agentid"
	"github.com/flarekit/terraform-provider-flare/internal/cvm"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// testPKI is a project CA and participant certificates.
type testPKI struct {
	ca  pki.CA
	dir string
}

func newPKI(t testing.TB, dir string) *testPKI {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRootCA(key, "e2e-project", pki.ValidityFor(time.Now(), 30), pki.Profile{})
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{ca: pki.CA{Cert: root, Signer: key}, dir: dir}
}

// kit writes a startup kit folder <dir>/<name>/startup with rootCA.pem and
// <base>.crt/.key, and returns the kit folder.
func (p *testPKI) kit(t testing.TB, name, base string, subj pki.Subject) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := p.ca.Issue(pki.LeafRequest{Subject: subj, PublicKey: &key.PublicKey, DNSNames: []string{subj.CommonName},
		Validity: pki.ValidityFor(time.Now(), 30)})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(p.dir, name)
	startup := filepath.Join(dir, "startup")
	if err := os.MkdirAll(startup, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, data := range map[string][]byte{"rootCA.pem": pki.CertPEM(p.ca.Cert), base + ".crt": pki.CertPEM(cert), base + ".key": pki.KeyPEM(key)} {
		if err := os.WriteFile(filepath.Join(startup, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// agentKit writes site's agent kit (what flare_agent_identity writes:
// agent.crt, agent.key, rootCA.pem) into <dir>/<site>.agent.
func (p *testPKI) agentKit(t testing.TB, site, org string) string {
	t.Helper()
	cert, key, err := agentid.Issue(p.ca, site, org, []string{"127.0.0.1", "localhost"}, pki.ValidityFor(time.Now(), 30), pki.Profile{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(p.dir, site+".agent")
	if err := agentid.WriteKit(dir, cert, key, p.ca.Cert); err != nil {
		t.Fatal(err)
	}
	return dir
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// tamperArchive returns the tgz with the kit file named file replaced by
// change(its content).
func tamperArchive(t *testing.T, tgz []byte, file string, change func([]byte) []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	changed := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(h.Name, "/"+file) {
			data = change(data)
			h.Size = int64(len(data))
			changed = true
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	if !changed {
		t.Fatalf("no %s in the kit archive", file)
	}
	tw.Close()
	zw.Close()
	return out.Bytes()
}

// env is a running agent with one CVM kit to launch: a test CA, the site's
// and an admin's startup kits, the busybox guest and the kit around the
// Debian cloud kernel, `flare-agent serve` on 127.0.0.1 in simulated mode.
type env struct {
	deps                  agenttest.Host
	base, bin             string
	p                     *testPKI
	siteKit, adminKit     string
	agentKit              string
	res                   *cvm.Result
	measurement, hostData string
	url                   string
	statusPort            int
	cfgPath, logFile      string
	adminTLS              *tls.Config
	agent                 *agenttest.Agent
}

func newEnv(t testing.TB, stopTimeout string) *env {
	t.Helper()
	e := &env{deps: agenttest.NeedHost(t)}
	// Short base path: QMP and attestation sockets live under state_dir,
	// and unix socket paths are limited to 107 bytes.
	base, err := os.MkdirTemp("", "flare-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	e.base = base
	t.Cleanup(func() {
		agenttest.KillAll(base)
		if !t.Failed() || os.Getenv("FLARE_E2E_KEEP") == "" {
			os.RemoveAll(base)
		} else {
			t.Logf("kept %s", base)
		}
	})
	e.bin = agenttest.BuildAgent(t, base)
	initrd := filepath.Join(base, "initrd.img")
	agenttest.BuildInitrd(t, e.deps, e.bin, initrd)
	e.p = newPKI(t, filepath.Join(base, "pki"))
	e.siteKit = e.p.kit(t, "site-1", "server", pki.Subject{CommonName: "site-1", Organization: "org-a"})
	// The site's startup kit goes into the CVM kit only; the agent serves
	// with its own agent kit.
	e.agentKit = e.p.agentKit(t, "site-1", "org-a")
	e.adminKit = e.p.kit(t, "admin", "client", pki.Subject{CommonName: "admin@org-a.example", Organization: "org-a", Role: "project_admin"})

	e.measurement, e.hostData = randHex(48), randHex(32)
	e.res, err = cvm.Build(context.Background(), cvm.BuildInput{
		Config: cvm.Config{
			Role:            cvm.RoleServer,
			RootDriveSizeGB: 1, AppLogDriveSizeGB: 1, UserConfigDriveSizeGB: 1, UserDataDriveSizeGB: 1,
			DockerArchive: agenttest.DockerSave(t, base),
			VCPUs:         1, MemoryMiB: 512,
			Firmware: e.deps.OVMF, Kernel: e.deps.Kernel, Initrd: initrd,
			KernelCmdline: "console=ttyS0 panic=-1",
			HostData:      e.hostData,
		},
		StartupKitDir:       e.siteKit,
		Signer:              e.p.ca.Signer,
		OutputDir:           filepath.Join(base, "kits"),
		ParticipantName:     "site-1",
		ExpectedMeasurement: e.measurement,
	})
	if err != nil {
		t.Fatal(err)
	}

	port := agenttest.FreePort(t)
	e.statusPort = agenttest.FreePort(t)
	accel := agenttest.EnvOr("FLARE_E2E_ACCEL", "tcg") // nested KVM here offers /dev/kvm but cannot boot Linux
	e.cfgPath = filepath.Join(base, "agent.yaml")
	cfgText := fmt.Sprintf(`listen: 127.0.0.1:%d
status_listen: 127.0.0.1:%d
state_dir: %s
agent_kit_dir: %s
qemu: %s
mode: simulated
accel: %s
network: none
restart:
  policy: on-failure
  max_restarts: 2
stop_timeout: %s
attest_timeout: 30s
log_level: debug
`, port, e.statusPort, filepath.Join(base, "state"), e.agentKit, e.deps.QEMU, accel, stopTimeout)
	if err := os.WriteFile(e.cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	e.url = fmt.Sprintf("https://127.0.0.1:%d", port)
	if e.adminTLS, err = client.TLSConfigFromKit(e.adminKit); err != nil {
		t.Fatal(err)
	}
	e.adminTLS = client.PinSite(e.adminTLS, "site-1") // the agent must present site-1's agent certificate
	e.logFile = filepath.Join(base, "agent.log")
	e.agent = agenttest.StartAgent(t, e.bin, e.cfgPath, e.logFile, e.url+"/healthz", e.adminTLS)
	t.Cleanup(e.agent.Term)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", agenttest.TailFile(e.logFile, 80))
		}
	})
	return e
}
