package kit

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/project"
)

var (
	server = project.Participant{Type: project.TypeServer, Name: "server1", Org: "nvidia", FedLearnPort: 8002, AdminPort: 8003}
	client = project.Participant{Type: project.TypeClient, Name: "site-1", Org: "nvidia", NumGPUs: 1, MemPerGPUInGiB: 8}
	admin  = project.Participant{Type: project.TypeAdmin, Name: "admin@nvidia.com", Org: "nvidia", Role: "project_admin"}
	relay  = project.Participant{Type: project.TypeRelay, Name: "relay-1", Org: "nvidia", Port: 8102}
)

type fixture struct {
	ca pki.CA
}

func newFixture(t *testing.T) fixture {
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.NewRootCA(key, "proj", pki.ValidityFor(time.Now(), 1), pki.Profile{})
	if err != nil {
		t.Fatal(err)
	}
	return fixture{ca: pki.CA{Cert: cert, Signer: key}}
}

func (f fixture) input(t *testing.T, p project.Participant) Input {
	key, _ := pki.GenerateKey()
	cert, err := f.ca.Issue(pki.LeafRequest{Subject: pki.Subject{CommonName: p.Name, Organization: p.Org, Role: p.CertRole()}, PublicKey: &key.PublicKey, Validity: pki.ValidityFor(time.Now(), 1)})
	if err != nil {
		t.Fatal(err)
	}
	return Input{Project: "proj", Participant: p, Server: server, RootCAPEM: pki.CertPEM(f.ca.Cert), CertPEM: pki.CertPEM(cert), KeyPEM: pki.KeyPEM(key), Signer: f.ca.Signer}
}

func paths(k *Kit) []string {
	var out []string
	for _, f := range k.Files {
		out = append(out, f.Path)
	}
	sort.Strings(out)
	return out
}

// The file sets NVFlare 2.7's provisioner writes for each type.
func TestFileSets(t *testing.T) {
	f := newFixture(t)
	want := map[project.Type]string{
		project.TypeServer: "local/authorization.json.default local/log_config.json.default local/privacy.json.sample local/resources.json.default local/signature.json readme.txt startup/fed_server.json startup/rootCA.pem startup/server.crt startup/server.key startup/signature.json startup/start.sh startup/stop_fl.sh startup/sub_start.sh",
		project.TypeClient: "local/authorization.json.default local/log_config.json.default local/privacy.json.sample local/resources.json.default local/signature.json readme.txt startup/client.crt startup/client.key startup/fed_client.json startup/rootCA.pem startup/signature.json startup/start.sh startup/stop_fl.sh startup/sub_start.sh",
		project.TypeAdmin:  "local/resources.json.default local/signature.json startup/client.crt startup/client.key startup/fed_admin.json startup/fl_admin.sh startup/readme.txt startup/rootCA.pem startup/signature.json startup/system_info.ipynb",
		project.TypeRelay:  "local/comm_config.json local/log_config.json.default local/signature.json startup/client.crt startup/client.key startup/fed_relay.json startup/rootCA.pem startup/server.crt startup/server.key startup/signature.json startup/start.sh startup/stop_fl.sh startup/sub_start.sh",
	}
	for _, p := range []project.Participant{server, client, admin, relay} {
		k, err := Build(f.input(t, p))
		if err != nil {
			t.Fatalf("%s: %v", p.Type, err)
		}
		if got := strings.Join(paths(k), " "); got != want[p.Type] {
			t.Errorf("%s files:\n got %s\nwant %s", p.Type, got, want[p.Type])
		}
		for _, file := range k.Files {
			wantMode := os.FileMode(0o644)
			switch {
			case strings.HasSuffix(file.Path, ".sh"):
				wantMode = 0o755
			case strings.HasSuffix(file.Path, ".key"):
				wantMode = 0o600
			}
			if file.Mode != wantMode {
				t.Errorf("%s %s mode %o, want %o", p.Type, file.Path, file.Mode, wantMode)
			}
			if strings.HasSuffix(file.Path, ".json") || strings.HasSuffix(file.Path, ".default") || strings.HasSuffix(file.Path, ".sample") || strings.HasSuffix(file.Path, ".ipynb") {
				if !json.Valid(file.Data) {
					t.Errorf("%s %s is not valid JSON", p.Type, file.Path)
				}
			}
		}
	}
}

// What each line's provisioner writes where the lines differ, per file:
// taken from `nvflare provision` of 2.7.3, 2.8.3 and 2.9.0.
func TestLineDifferences(t *testing.T) {
	relayed := project.Participant{Type: project.TypeClient, Name: "site-2", Org: "nvidia", ConnectTo: "relay-1"}
	for _, tc := range []struct {
		line            string
		overseer        bool
		target          string
		identityMap     bool
		logReceiver     string
		errorLog        string
		classAllowList  bool
		flwrRight       bool
		workspaceEnv    bool
		gpuExpiration   float64
		siteLogStreamer bool
	}{
		{"2.7", true, "", false, "nvflare.app_common.logging.log_receiver.LogReceiver", "log_error.txt", false, false, false, 0, false},
		{"2.8", false, "server1:8002", false, "nvflare.app_common.logging.job_log_receiver.JobLogReceiver", "error_log.txt", true, false, true, 300, true},
		{"2.9", false, "server1:8002", true, "nvflare.app_common.logging.job_log_receiver.JobLogReceiver", "error_log.txt", true, true, true, 300, true},
	} {
		t.Run(tc.line, func(t *testing.T) {
			line, err := LookupLine(tc.line)
			if err != nil {
				t.Fatal(err)
			}
			f := newFixture(t)
			kits := map[string]*Kit{}
			for _, p := range []project.Participant{server, client} {
				in := f.input(t, p)
				in.Line, in.RelayedClients = line, []project.Participant{relayed}
				if kits[p.Name], err = Build(in); err != nil {
					t.Fatal(err)
				}
			}
			fedClient := jsonOf(t, kits["site-1"], "startup/fed_client.json")
			fedServer := jsonOf(t, kits["server1"], "startup/fed_server.json")
			if _, ok := fedClient["overseer_agent"]; ok != tc.overseer {
				t.Errorf("fed_client.json overseer_agent present: %v", ok)
			}
			if _, ok := fedServer["overseer_agent"]; ok != tc.overseer {
				t.Errorf("fed_server.json overseer_agent present: %v", ok)
			}
			if got, _ := at(fedClient, "servers", 0, "service", "target").(string); got != tc.target {
				t.Errorf("fed_client.json servers[0].service.target %q, want %q", got, tc.target)
			}
			wantMap := map[string]any(nil)
			if tc.identityMap {
				wantMap = map[string]any{"relay-1.site-2": "site-2"}
			}
			for name, got := range map[string]any{"fed_client.json client": at(fedClient, "client", "auth_identity_map"),
				"fed_server.json servers[0]": at(fedServer, "servers", 0, "auth_identity_map")} {
				if gotMap, _ := got.(map[string]any); !equalJSON(gotMap, wantMap) {
					t.Errorf("%s auth_identity_map %v, want %v", name, got, wantMap)
				}
			}
			serverRes := jsonOf(t, kits["server1"], "local/resources.json.default")
			if got := at(serverRes, "components", 4, "path"); got != tc.logReceiver {
				t.Errorf("log receiver %v, want %s", got, tc.logReceiver)
			}
			for _, k := range kits {
				res := jsonOf(t, k, "local/resources.json.default")
				list, _ := res["class_allow_list"].([]any)
				if (len(list) > 80) != tc.classAllowList || (res["class_list_enforcement_mode"] == "enforce") != tc.classAllowList {
					t.Errorf("%s: class_allow_list of %d, mode %v", k.Name, len(list), res["class_list_enforcement_mode"])
				}
				if got := at(jsonOf(t, k, "local/log_config.json.default"), "handlers", "errorFileHandler", "filename"); got != tc.errorLog {
					t.Errorf("%s: error log %v, want %s", k.Name, got, tc.errorLog)
				}
				authz := jsonOf(t, k, "local/authorization.json.default")
				for _, role := range []string{"org_admin", "lead"} {
					if _, ok := at(authz, "permissions", role).(map[string]any)["server-predeployed-flwr"]; ok != tc.flwrRight {
						t.Errorf("%s: %s server-predeployed-flwr present: %v", k.Name, role, ok)
					}
				}
				for _, script := range []string{"startup/sub_start.sh", "startup/stop_fl.sh"} {
					if got := strings.Contains(string(k.File(script).Data), "NVFL_WORKSPACE"); got != tc.workspaceEnv {
						t.Errorf("%s %s honours NVFL_WORKSPACE: %v", k.Name, script, got)
					}
				}
			}
			clientRes := jsonOf(t, kits["site-1"], "local/resources.json.default")
			gpuArgs := at(clientRes, "components", 0, "args").(map[string]any)
			if got, _ := gpuArgs["expiration_period"].(float64); got != tc.gpuExpiration || gpuArgs["num_of_gpus"] != float64(1) || gpuArgs["mem_per_gpu_in_GiB"] != float64(8) {
				t.Errorf("GPUResourceManager args %v", gpuArgs)
			}
			streamer := at(clientRes, "components", 3, "path")
			if (streamer == "nvflare.app_common.logging.site_log_streamer.SiteLogStreamer") != tc.siteLogStreamer ||
				(clientRes["allow_log_streaming"] == true) != tc.siteLogStreamer {
				t.Errorf("site log streaming: component %v, allow_log_streaming %v", streamer, clientRes["allow_log_streaming"])
			}
			sub := string(kits["site-1"].File("startup/sub_start.sh").Data)
			if !strings.Contains(sub, "nvflare.private.fed.app.client.client_train -m \"$WORKSPACE\" -s fed_client.json --set secure_train=true uid=site-1 org=nvidia config_folder=config") {
				t.Errorf("sub_start.sh lacks the client command line:\n%s", sub)
			}
		})
	}
}

func TestLookupLine(t *testing.T) {
	if got := strings.Join(Versions(), ","); got != "2.7,2.8,2.9" {
		t.Errorf("versions %s", got)
	}
	if DefaultVersion() != "2.9" {
		t.Errorf("default %s, want the newest line", DefaultVersion())
	}
	if _, err := LookupLine("2.6"); err == nil || !strings.Contains(err.Error(), "2.7, 2.8, 2.9") {
		t.Errorf("unknown line: %v", err)
	}
}

func jsonOf(t *testing.T, k *Kit, rel string) map[string]any {
	t.Helper()
	f := k.File(rel)
	if f == nil {
		t.Fatalf("%s has no %s", k.Name, rel)
	}
	var out map[string]any
	if err := json.Unmarshal(f.Data, &out); err != nil {
		t.Fatalf("%s %s: %v", k.Name, rel, err)
	}
	return out
}

// at walks maps by key and lists by index; nil when a step is missing.
func at(v any, steps ...any) any {
	for _, s := range steps {
		switch s := s.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[s]
		case int:
			l, _ := v.([]any)
			if s >= len(l) {
				return nil
			}
			v = l[s]
		}
	}
	return v
}

func equalJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestBuildRejects(t *testing.T) {
	f := newFixture(t)
	in := f.input(t, client)
	in.Server = admin
	if _, err := Build(in); err == nil || !strings.Contains(err.Error(), "needs the project's server") {
		t.Errorf("client kit with an admin as server: %v", err)
	}
	behind := client
	behind.ConnectTo = "relay-1"
	in = f.input(t, behind)
	if _, err := Build(in); err == nil || !strings.Contains(err.Error(), "pass that relay's descriptor") {
		t.Errorf("client behind a relay without the relay: %v", err)
	}
	other := relay
	other.Name = "relay-2"
	in.Relay = &other
	if _, err := Build(in); err == nil || !strings.Contains(err.Error(), `connects to relay "relay-1" but was given relay "relay-2"`) {
		t.Errorf("wrong relay: %v", err)
	}
}

// verifySignatures checks signature.json with crypto/rsa directly, not
// with this package's VerifyFolder.
func verifySignatures(t *testing.T, dir string, root *x509.Certificate) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "signature.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(raw), `{"`) || strings.Contains(string(raw), "\n") || !strings.Contains(string(raw), `": "`) {
		t.Errorf("%s is not in json.dump's layout: %.60s", dir, raw)
	}
	var sigs map[string]string
	if err := json.Unmarshal(raw, &sigs); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(sigs) != len(entries)-1 {
		t.Errorf("%s: %d signatures for %d files", dir, len(sigs), len(entries)-1)
	}
	for _, e := range entries {
		if e.Name() == "signature.json" {
			continue
		}
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		sig, _ := base64.StdEncoding.DecodeString(sigs[e.Name()])
		sum := sha256.Sum256(data)
		if err := rsa.VerifyPSS(root.PublicKey.(*rsa.PublicKey), crypto.SHA256, sum[:], sig, &rsa.PSSOptions{SaltLength: 222, Hash: crypto.SHA256}); err != nil {
			t.Errorf("%s/%s: %v", dir, e.Name(), err)
		}
	}
}

func TestWriteSignVerifyAndDrift(t *testing.T) {
	f := newFixture(t)
	out := t.TempDir()
	for _, p := range []project.Participant{server, client, admin, relay} {
		k, err := Build(f.input(t, p))
		if err != nil {
			t.Fatal(err)
		}
		dir, err := k.Write(out)
		if err != nil {
			t.Fatal(err)
		}
		for _, sub := range []string{"startup", "local"} {
			verifySignatures(t, filepath.Join(dir, sub), f.ca.Cert)
			if err := VerifyFolder(filepath.Join(dir, sub), f.ca.Cert); err != nil {
				t.Errorf("VerifyFolder(%s): %v", sub, err)
			}
		}
		if info, err := os.Stat(filepath.Join(dir, "transfer")); err != nil || !info.IsDir() {
			t.Errorf("%s: no transfer/ folder", p.Name)
		}
		got, err := DigestDir(dir)
		if err != nil || got != k.Digest() {
			t.Fatalf("%s: digest on disk %s (%v) != written %s", p.Name, got, err, k.Digest())
		}
	}

	dir := filepath.Join(out, "site-1")
	clean, _ := DigestDir(dir)
	target := filepath.Join(dir, "startup", "fed_client.json")
	data, _ := os.ReadFile(target)
	data[10] ^= 1
	os.WriteFile(target, data, 0o644)
	if d, _ := DigestDir(dir); d == clean {
		t.Error("a changed byte did not change the digest")
	}
	if err := VerifyFolder(filepath.Join(dir, "startup"), f.ca.Cert); err == nil {
		t.Error("a changed byte still verifies")
	}
	data[10] ^= 1
	os.WriteFile(target, data, 0o644)
	os.Chmod(target, 0o600)
	if d, _ := DigestDir(dir); d == clean {
		t.Error("a mode change did not change the digest")
	}
	os.WriteFile(filepath.Join(dir, "local", "extra.json"), []byte("{}"), 0o644)
	if err := VerifyFolder(filepath.Join(dir, "local"), f.ca.Cert); err == nil {
		t.Error("an unsigned extra file still verifies")
	}
}

// A running site keeps logs, job workspaces and local overrides in its kit:
// a rewrite replaces only our files, and theirs are no drift.
func TestRewriteKeepsSiteFiles(t *testing.T) {
	f := newFixture(t)
	out := t.TempDir()
	k1, _ := Build(f.input(t, client))
	dir, err := k1.Write(out)
	if err != nil {
		t.Fatal(err)
	}
	siteFiles := map[string]string{"log.txt": "running\n", "local/authorization.json": "{}", "job-1/app/config.json": "{}"}
	for rel, body := range siteFiles {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(body), 0o644)
	}
	if d, _ := DigestDir(dir); d != k1.Digest() {
		t.Error("files the site wrote count as drift")
	}
	k2, _ := Build(f.input(t, client))
	if _, err := k2.Write(out); err != nil {
		t.Fatal(err)
	}
	for rel, body := range siteFiles {
		if b, err := os.ReadFile(filepath.Join(dir, rel)); err != nil || string(b) != body {
			t.Errorf("%s lost in the rewrite: %v", rel, err)
		}
	}
	if d, _ := DigestDir(dir); d != k2.Digest() {
		t.Error("rewritten kit differs from the second build")
	}
	for _, sub := range []string{"startup"} {
		verifySignatures(t, filepath.Join(dir, sub), f.ca.Cert)
	}

	// A file of ours that the new kit no longer has is removed.
	behind := client
	behind.ConnectTo = relay.Name
	in := f.input(t, behind)
	in.Relay = &relay
	k3, _ := Build(in)
	if _, err := k3.Write(out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "local", "relay__resources.json")); err != nil {
		t.Fatal("relay__resources.json not written")
	}
	if _, err := k2.Write(out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "local", "relay__resources.json")); !os.IsNotExist(err) {
		t.Error("relay__resources.json left after the client stopped using a relay")
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != 1 {
		t.Errorf("temporary directories left behind: %v", entries)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 6 { // startup local transfer readme.txt log.txt job-1
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("kit root holds %v", names)
	}
}

func TestWriteFailureKeepsOldKit(t *testing.T) {
	f := newFixture(t)
	out := t.TempDir()
	k, _ := Build(f.input(t, client))
	dir, err := k.Write(out)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := DigestDir(dir)
	// A file whose parent is itself a file cannot be written.
	broken := &Kit{Name: "site-1", Files: []File{{Path: "startup/a", Mode: 0o644}, {Path: "startup/a/b", Mode: 0o644}}}
	if _, err := broken.Write(out); err == nil {
		t.Fatal("broken kit was written")
	}
	if after, _ := DigestDir(dir); after != before {
		t.Error("a failed write changed the existing kit")
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != 1 {
		t.Errorf("temporary directories left behind: %v", entries)
	}
}

// Every script of every line parses as bash.
func TestScriptsParse(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	f := newFixture(t)
	for _, v := range Versions() {
		line, _ := LookupLine(v)
		for _, p := range []project.Participant{server, client, admin, relay} {
			in := f.input(t, p)
			in.Line = line
			k, err := Build(in)
			if err != nil {
				t.Fatal(err)
			}
			for _, file := range k.Files {
				if !strings.HasSuffix(file.Path, ".sh") {
					continue
				}
				cmd := exec.Command(bash, "-n")
				cmd.Stdin = strings.NewReader(string(file.Data))
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("%s %s %s: %v\n%s", v, p.Name, file.Path, err, out)
				}
			}
		}
	}
}

// On lines with WorkspaceEnv, sub_start.sh runs the runtime in
// NVFL_WORKSPACE: a private copy of the kit there, startup/ and local/
// linked to it, and the runtime told that workspace.
func TestSubStartWorkspace(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	line, err := LookupLine("2.9")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	in := f.input(t, client)
	in.Line = line
	k, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	kitDir, err := k.Write(filepath.Join(root, "kits"))
	if err != nil {
		t.Fatal(err)
	}
	// A python3 that records how it was called instead of running NVFlare.
	bin := filepath.Join(root, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(root, "called")
	fake := "#!/bin/sh\necho \"$@\" > " + record + "\n"
	if err := os.WriteFile(filepath.Join(bin, "python3"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	ws := filepath.Join(root, "ws")
	cmd := exec.Command(filepath.Join(kitDir, "startup", "sub_start.sh"), "--once")
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "NVFL_WORKSPACE="+ws)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sub_start.sh --once: %v\n%s", err, out)
	}
	called, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(called), "-m "+ws+" -s fed_client.json") {
		t.Errorf("runtime called with %q, want workspace %s", called, ws)
	}
	for _, d := range []string{"startup", "local"} {
		target, err := os.Readlink(filepath.Join(ws, d))
		if err != nil || target != filepath.Join(ws, "kit", d) {
			t.Errorf("%s/%s links to %q (%v), want the kit copy", ws, d, target, err)
		}
	}
	if _, err := os.Stat(filepath.Join(ws, "kit", "startup", "client.key")); err != nil {
		t.Errorf("no copy of the kit in the workspace: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(ws, "kit")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("kit copy mode %v (%v), want 0700: it holds the private key", fi.Mode().Perm(), err)
	}
}
