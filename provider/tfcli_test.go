package provider

// A harness that drives the real terraform binary the way a pipeline does:
// `terraform init` installs the provider from a filesystem mirror (no
// dev_overrides, no registry), and each runner is its own working
// directory that shares nothing with the others but the backend.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// tfBinary is the terraform the acceptance tests use.
func tfBinary(t *testing.T) string {
	t.Helper()
	if os.Getenv("TF_ACC") == "" {
		t.Skip("TF_ACC is not set")
	}
	tf := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if tf == "" {
		var err error
		if tf, err = exec.LookPath("terraform"); err != nil {
			t.Skip("no terraform: set TF_ACC_TERRAFORM_PATH")
		}
	}
	return tf
}

// providerMirror builds the provider from this tree into a filesystem
// mirror and returns a CLI configuration file that installs it from there.
func providerMirror(t *testing.T) string {
	t.Helper()
	base := t.TempDir()
	const version = "0.0.1"
	dir := filepath.Join(base, "mirror", "registry.terraform.io", "flarekit", "flare", version, runtime.GOOS+"_"+runtime.GOARCH)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "terraform-provider-flare_v"+version)
	build := exec.Command("go", "build", "-o", out, "github.com/flarekit/terraform-provider-flare")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	rc := filepath.Join(base, "terraform.rc")
	cfg := fmt.Sprintf("provider_installation {\n  filesystem_mirror {\n    path    = %q\n    include = [\"registry.terraform.io/flarekit/flare\"]\n  }\n}\n",
		filepath.Join(base, "mirror"))
	if err := os.WriteFile(rc, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return rc
}

// tfRunner is one pipeline runner: a working directory and an environment.
type tfRunner struct {
	t    *testing.T
	name string
	tf   string
	dir  string
	env  []string
}

func newRunner(t *testing.T, name, tf, rc, dir, config string, env ...string) *tfRunner {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.tf"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"TF_CLI_CONFIG_FILE=" + rc, "TF_IN_AUTOMATION=1", "TF_INPUT=0", "CHECKPOINT_DISABLE=1",
		"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	for _, k := range []string{"TMPDIR", "VAULT_ADDR", "VAULT_TOKEN"} {
		if v, ok := os.LookupEnv(k); ok {
			base = append(base, k+"="+v)
		}
	}
	return &tfRunner{t: t, name: name, tf: tf, dir: dir, env: append(base, env...)}
}

type tfResult struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

func (r tfResult) String() string { return r.stdout + r.stderr }

// run runs terraform with args and returns its output and exit code.
func (r *tfRunner) run(args ...string) tfResult {
	r.t.Helper()
	return r.runCtx(context.Background(), args...)
}

func (r *tfRunner) runCtx(ctx context.Context, args ...string) tfResult {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	full := args
	if args[0] != "state" {
		full = append(args[:1:1], append([]string{"-no-color"}, args[1:]...)...)
	}
	cmd := exec.CommandContext(ctx, r.tf, full...)
	cmd.Dir, cmd.Env = r.dir, r.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := tfResult{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			res.code = ee.ExitCode()
		} else {
			r.t.Fatalf("%s: terraform %s: %v", r.name, strings.Join(args, " "), err)
		}
	}
	r.t.Logf("%s: terraform %s: exit %d in %s", r.name, strings.Join(args, " "), res.code, res.took.Round(time.Millisecond))
	return res
}

// must runs terraform and fails the test unless it exits 0.
func (r *tfRunner) must(args ...string) tfResult {
	r.t.Helper()
	res := r.run(args...)
	if res.code != 0 {
		r.t.Fatalf("%s: terraform %s: exit %d\n%s", r.name, strings.Join(args, " "), res.code, res)
	}
	return res
}

// pipelineConfig is the quickstart as a pipeline keeps it: relative paths
// (the CA directory, when local, and the kits), a backend block, and the
// project's ca settings. Clients are flare_client resources with a kit each.
func pipelineConfig(backend, ca string, clients ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `terraform {
  required_providers {
    flare = { source = "flarekit/flare" }
  }
%s
}

resource "flare_project" "p" {
  name = "quickstart"
  ca   = %s
}

resource "flare_server" "server1" {
  project_id     = flare_project.p.id
  name           = "server1"
  org            = "nvidia"
  fed_learn_port = 8002
  admin_port     = 8003
}

resource "flare_admin" "admin" {
  project_id = flare_project.p.id
  name       = "admin@nvidia.com"
  org        = "nvidia"
  role       = "project_admin"
}

resource "flare_startup_kit" "server" {
  participant = flare_server.server1.descriptor
  output_dir  = "kits"
}

resource "flare_startup_kit" "admin" {
  participant = flare_admin.admin.descriptor
  server      = flare_server.server1.descriptor
  output_dir  = "kits"
}
`, backend, ca)
	for _, c := range clients {
		fmt.Fprintf(&b, `
resource "flare_client" %[1]q {
  project_id = flare_project.p.id
  name       = %[2]q
  org        = "nvidia"
}

resource "flare_startup_kit" %[1]q {
  participant = flare_client.%[1]s.descriptor
  server      = flare_server.server1.descriptor
  output_dir  = "kits"
}
`, resourceName(c), c)
	}
	return b.String()
}

// tfState is the part of `terraform show -json` the tests read.
type tfState struct {
	Values struct {
		RootModule struct {
			Resources []struct {
				Address         string         `json:"address"`
				AttributeValues map[string]any `json:"values"`
			} `json:"resources"`
		} `json:"root_module"`
	} `json:"values"`
}

func showState(t *testing.T, r *tfRunner) tfState {
	t.Helper()
	res := r.must("show", "-json")
	var st tfState
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil {
		t.Fatalf("%s: terraform show -json: %v", r.name, err)
	}
	return st
}

// fingerprintOfFile is the hex SHA-256 of the DER of a PEM certificate file.
func fingerprintOfFile(t *testing.T, p string) string {
	t.Helper()
	c, err := readCert(p)
	if err != nil {
		t.Fatal(err)
	}
	return pki.CertFingerprint(c)
}
