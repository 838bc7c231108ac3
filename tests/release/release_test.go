// Package release tests what `make release` (mk/release.mk,
// scripts/release.sh) writes, installed the way users install it: the
// provider from a filesystem mirror with plain `terraform init` (no
// dev_overrides), and flare-agent's Debian package with dpkg.
//
// FLARE_RELEASE_DIR is the release folder (default build/release-host, what
// `make release-host` writes), FLARE_RELEASE_VERSION its version (default:
// read from the manifest's name). Without a release the tests skip, or
// fail when RELEASE_REQUIRE is set (`make test` sets it after making one).
package release

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/dirhash"
)

const name = "terraform-provider-flare"

func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("RELEASE_REQUIRE") != "" {
		t.Fatalf("RELEASE_REQUIRE is set: "+format, args...)
	}
	t.Skipf(format, args...)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// release finds the release folder and its version.
func release(t *testing.T) (dir, version string) {
	t.Helper()
	dir = os.Getenv("FLARE_RELEASE_DIR")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), "build", "release-host")
	}
	version = os.Getenv("FLARE_RELEASE_VERSION")
	if version == "" {
		m, _ := filepath.Glob(filepath.Join(dir, name+"_*_manifest.json"))
		if len(m) != 1 {
			skipOrFail(t, "no release in %s: run make release-host", dir)
		}
		version = strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m[0]), name+"_"), "_manifest.json")
	}
	if _, err := os.Stat(filepath.Join(dir, name+"_"+version+"_SHA256SUMS")); err != nil {
		skipOrFail(t, "no release %s in %s: run make release-host", version, dir)
	}
	return dir, version
}

func sha(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func hostPlatform() string { return runtime.GOOS + "_" + runtime.GOARCH }

// TestReleaseLayout: the registry's file set, checksums, signature and
// zips, and the mirror holding the same zips for both registry hosts.
func TestReleaseLayout(t *testing.T) {
	dir, v := release(t)
	prefix := name + "_" + v + "_"
	sums, err := os.ReadFile(filepath.Join(dir, prefix+"SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			t.Fatalf("SHA256SUMS line %q", line)
		}
		listed[f[1]] = f[0]
	}
	if _, ok := listed[prefix+"manifest.json"]; !ok {
		t.Errorf("SHA256SUMS does not list the manifest: %v", listed)
	}
	zips, _ := filepath.Glob(filepath.Join(dir, prefix+"*.zip"))
	if len(zips) == 0 {
		t.Fatal("no zips")
	}
	if len(listed) != len(zips)+1 {
		t.Errorf("SHA256SUMS lists %d files, there are %d zips and the manifest", len(listed), len(zips))
	}
	host := false
	for _, z := range zips {
		base := filepath.Base(z)
		if got := sha(t, z); listed[base] != got {
			t.Errorf("%s: SHA256SUMS says %s, the file is %s", base, listed[base], got)
		}
		platform := strings.TrimSuffix(strings.TrimPrefix(base, prefix), ".zip")
		host = host || platform == hostPlatform()
		exe := name + "_v" + v
		if strings.HasPrefix(platform, "windows_") {
			exe += ".exe"
		}
		r, err := zip.OpenReader(z)
		if err != nil {
			t.Fatal(err)
		}
		// The provider, and flare-init (the CVM's /init, linux/amd64 and
		// static on every platform) beside it for guest_init's default.
		if len(r.File) != 2 || r.File[0].Name != exe || r.File[1].Name != "flare-init" {
			t.Errorf("%s holds %d files, want %s and flare-init", base, len(r.File), exe)
		} else {
			if !strings.HasPrefix(platform, "windows_") && r.File[0].Mode().Perm()&0o111 == 0 {
				t.Errorf("%s: %s is not executable (%v)", base, exe, r.File[0].Mode())
			}
			if err := checkGuestInit(r.File[1]); err != nil {
				t.Errorf("%s: flare-init: %v", base, err)
			}
		}
		r.Close()
		for _, h := range []string{"registry.terraform.io", "registry.opentofu.org"} {
			m := filepath.Join(dir, "mirror", h, "flarekit", "flare", base)
			if _, err := os.Stat(m); err != nil || sha(t, m) != listed[base] {
				t.Errorf("mirror %s lacks %s or differs: %v", h, base, err)
			}
		}
	}
	if !host {
		t.Errorf("no zip for this platform %s", hostPlatform())
	}
	want, _ := os.ReadFile(filepath.Join(repoRoot(t), "terraform-registry-manifest.json"))
	if got, _ := os.ReadFile(filepath.Join(dir, prefix+"manifest.json")); !bytes.Equal(got, want) {
		t.Errorf("manifest differs from terraform-registry-manifest.json:\n%s", got)
	}

	// The detached signature, checked with only the exported public key.
	gpg, err := exec.LookPath("gpg")
	if err != nil {
		skipOrFail(t, "no gpg to check the signature")
	}
	home, err := os.MkdirTemp("", "fgpg")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		c := exec.Command("gpgconf", "--kill", "all")
		c.Env = append(os.Environ(), "GNUPGHOME="+home)
		_ = c.Run()
		os.RemoveAll(home)
	}()
	g := func(args ...string) ([]byte, error) {
		c := exec.Command(gpg, append([]string{"--batch"}, args...)...)
		c.Env = append(os.Environ(), "GNUPGHOME="+home)
		return c.CombinedOutput()
	}
	if out, err := g("--import", filepath.Join(dir, "release-signing-key.asc")); err != nil {
		t.Fatalf("import the release key: %v\n%s", err, out)
	}
	sumsPath := filepath.Join(dir, prefix+"SHA256SUMS")
	if out, err := g("--verify", sumsPath+".sig", sumsPath); err != nil || !strings.Contains(string(out), "Good signature") {
		t.Errorf("SHA256SUMS.sig does not verify: %v\n%s", err, out)
	}
	tampered := filepath.Join(home, "SHA256SUMS")
	os.WriteFile(tampered, append(sums, "0000  extra.zip\n"...), 0o600)
	if out, err := g("--verify", sumsPath+".sig", tampered); err == nil {
		t.Errorf("the signature verifies a changed SHA256SUMS:\n%s", out)
	}
}

// TestMirrorInstall: `terraform init` installs the provider from the
// release's filesystem mirror with nothing but provider_installation
// (no dev_overrides, no network for flarekit/flare), the lock file holds
// the zip's registry hash, and `apply` of examples/quickstart writes the
// kits. Works for terraform (registry.terraform.io) and OpenTofu
// (registry.opentofu.org): the mirror has both.
func TestMirrorInstall(t *testing.T) {
	dir, v := release(t)
	tf := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if tf == "" {
		var err error
		if tf, err = exec.LookPath("terraform"); err != nil {
			skipOrFail(t, "no terraform (TF_ACC_TERRAFORM_PATH)")
		}
	}
	zipPath := filepath.Join(dir, name+"_"+v+"_"+hostPlatform()+".zip")
	if _, err := os.Stat(zipPath); err != nil {
		skipOrFail(t, "no zip for %s in the release", hostPlatform())
	}
	work := t.TempDir()
	mirror := filepath.Join(dir, "mirror")
	rc := filepath.Join(work, "mirror.tfrc")
	os.WriteFile(rc, []byte(`provider_installation {
  filesystem_mirror {
    path    = "`+mirror+`"
    include = ["flarekit/flare"]
  }
  direct {
    exclude = ["flarekit/flare"]
  }
}
`), 0o600)
	cfg := filepath.Join(work, "quickstart")
	os.Mkdir(cfg, 0o755)
	main, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "quickstart", "main.tf"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(cfg, "main.tf"), main, 0o644)

	run := func(args ...string) string {
		t.Helper()
		c := exec.Command(tf, append(args, "-no-color", "-input=false")...)
		c.Dir = cfg
		env := []string{"TF_CLI_CONFIG_FILE=" + rc, "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1", "HOME=" + work}
		for _, e := range os.Environ() {
			if k, _, _ := strings.Cut(e, "="); !strings.HasPrefix(k, "TF_") && k != "HOME" {
				env = append(env, e)
			}
		}
		c.Env = env
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(tf), args[0], err, out)
		}
		if strings.Contains(string(out), "development overrides") {
			t.Errorf("%s %s used dev_overrides:\n%s", filepath.Base(tf), args[0], out)
		}
		return string(out)
	}
	out := run("init")
	if !strings.Contains(out, "Installing flarekit/flare v"+v) || !strings.Contains(out, "Installed flarekit/flare v"+v) {
		t.Errorf("init did not install flarekit/flare v%s from the mirror:\n%s", v, out)
	}
	lock, err := os.ReadFile(filepath.Join(cfg, ".terraform.lock.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	// Installed from a mirror, the lock file records the h1: hash of the
	// package's contents (what a registry install would record too).
	h1, err := dirhash.HashZip(zipPath, dirhash.Hash1)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`version\s+= "`+regexp.QuoteMeta(v)+`"`).Match(lock) || !strings.Contains(string(lock), `"`+h1+`"`) {
		t.Errorf("lock file lacks version %s or the zip's hash %s:\n%s", v, h1, lock)
	}
	installed, _ := filepath.Glob(filepath.Join(cfg, ".terraform", "providers", "*", "flarekit", "flare", v, hostPlatform(), name+"_v"+v))
	if len(installed) != 1 {
		t.Errorf("provider binary not installed under .terraform/providers/<host>/flarekit/flare/%s/%s/", v, hostPlatform())
	}
	run("apply", "-auto-approve")
	for _, k := range []string{"server1", "site-1", "site-2", "admin@nvidia.com"} {
		if _, err := os.Stat(filepath.Join(cfg, "kits", k, "startup")); err != nil {
			t.Errorf("apply wrote no kit for %s: %v", k, err)
		}
	}
	run("destroy", "-auto-approve")
}

// installedTraces lists what the package leaves on the host: its paths,
// its user and group, and the kvm group's members.
func installedTraces(t *testing.T) []string {
	t.Helper()
	var tr []string
	for _, p := range []string{"/usr/bin/flare-agent", "/usr/lib/systemd/system/flare-agent.service", "/lib/systemd/system/flare-agent.service",
		"/usr/lib/udev/rules.d/60-flare-agent.rules", "/usr/share/doc/flare-agent", "/etc/flare-agent", "/var/lib/flare-agent",
		"/etc/systemd/system/multi-user.target.wants/flare-agent.service", "/var/lib/systemd/deb-systemd-helper-enabled/flare-agent.service.dsh-also"} {
		if _, err := os.Lstat(p); err == nil {
			tr = append(tr, p)
		}
	}
	for _, f := range []string{"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"} {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "flare-agent") {
				tr = append(tr, f+": "+line)
			}
		}
	}
	if m, _ := filepath.Glob("/var/lib/dpkg/info/flare-agent.*"); len(m) > 0 {
		tr = append(tr, m...)
	}
	return tr
}

// dpkg runs dpkg, waiting while another dpkg or apt holds the lock.
func dpkg(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out []byte
	var err error
	for i := 0; i < 60; i++ {
		out, err = exec.Command("dpkg", args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "lock") {
			break
		}
		exec.Command("sleep", "2").Run()
	}
	return string(out), err
}

// TestDebPackage installs flare-agent's package with dpkg -i, checks its
// files, user, directories and unit, runs `flare-agent probe` as the
// packaged user (QEMU under its sandbox, /dev/kvm through the kvm group),
// then dpkg -r (files gone, user and state kept) and dpkg -P (nothing
// left). Needs root and dpkg; it installs into this host.
func TestDebPackage(t *testing.T) {
	dir, v := release(t)
	if runtime.GOOS != "linux" {
		t.Skip("Debian package: linux only")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		skipOrFail(t, "no dpkg")
	}
	if os.Geteuid() != 0 {
		skipOrFail(t, "dpkg -i needs root")
	}
	archOut, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		t.Fatal(err)
	}
	deb := filepath.Join(dir, "flare-agent_"+v+"_"+strings.TrimSpace(string(archOut))+".deb")
	if _, err := os.Stat(deb); err != nil {
		skipOrFail(t, "no package %s", deb)
	}
	if exec.Command("dpkg-query", "-W", "flare-agent").Run() == nil {
		t.Fatal("flare-agent is installed on this host already: this test would replace and purge it")
	}
	if tr := installedTraces(t); len(tr) > 0 {
		t.Fatalf("flare-agent traces before the install: %q", tr)
	}
	t.Cleanup(func() { _, _ = dpkg(t, "--purge", "flare-agent") })

	if out, err := dpkg(t, "-i", deb); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	if out, _ := exec.Command("/usr/bin/flare-agent", "version").Output(); strings.TrimSpace(string(out)) != v {
		t.Errorf("flare-agent version: %q, want %s", out, v)
	}
	for _, p := range []string{"/usr/lib/systemd/system/flare-agent.service", "/usr/lib/udev/rules.d/60-flare-agent.rules",
		"/usr/share/doc/flare-agent/examples/agent.yaml"} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("package lacks %s", p)
		}
	}
	u, err := user.Lookup("flare-agent")
	if err != nil {
		t.Fatalf("no flare-agent user after install: %v", err)
	}
	if pw, _ := exec.Command("getent", "passwd", "flare-agent").Output(); !strings.Contains(string(pw), ":/var/lib/flare-agent:/usr/sbin/nologin") {
		t.Errorf("flare-agent user: %s", pw)
	}
	if uid := atoi(u.Uid); uid == 0 || uid >= 1000 {
		t.Errorf("flare-agent uid %s is not a system uid", u.Uid)
	}
	if g, err := user.LookupGroup("kvm"); err == nil {
		gids, _ := u.GroupIds()
		if !contains(gids, g.Gid) {
			t.Errorf("flare-agent is not in group kvm: %v", gids)
		}
	}
	for p, want := range map[string]string{"/var/lib/flare-agent": "drwx------ flare-agent flare-agent", "/etc/flare-agent": "drwxr-x--- root flare-agent"} {
		if out, _ := exec.Command("stat", "-c", "%A %U %G", p).Output(); strings.TrimSpace(string(out)) != want {
			t.Errorf("%s: %s, want %s", p, strings.TrimSpace(string(out)), want)
		}
	}
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		if out, err := exec.Command(sa, "verify", "/usr/lib/systemd/system/flare-agent.service").CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
		out, _ := exec.Command(sa, "security", "--offline=true", "--threshold=3", "/usr/lib/systemd/system/flare-agent.service").CombinedOutput()
		if !strings.Contains(string(out), "Overall exposure level") {
			t.Errorf("systemd-analyze security: %s", out)
		} else if i := strings.Index(string(out), "Overall exposure level"); i >= 0 {
			t.Logf("%s", strings.TrimSpace(string(out[i:])))
		}
	}
	unit, _ := os.ReadFile("/usr/lib/systemd/system/flare-agent.service")
	for _, want := range []string{"User=flare-agent", "SupplementaryGroups=kvm", "DeviceAllow=/dev/kvm rw", "DeviceAllow=/dev/sev rw",
		"NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "StateDirectory=flare-agent",
		"ExecStart=/usr/bin/flare-agent serve"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", strings.TrimSpace(want))
		}
	}
	// The agent as the unit runs it: the packaged user with its groups.
	// Its probe must find nothing missing but SEV (when this host has
	// /dev/kvm and QEMU): QEMU starts under -sandbox as that user.
	if setpriv, err := exec.LookPath("setpriv"); err == nil {
		if _, err := exec.LookPath("qemu-system-x86_64"); err == nil {
			if _, err := os.Stat("/dev/kvm"); err == nil {
				c := exec.Command(setpriv, "--reuid=flare-agent", "--regid=flare-agent", "--init-groups",
					"/usr/bin/flare-agent", "probe", "--strict", "--state-dir", "/var/lib/flare-agent")
				c.Env = append(os.Environ(), "TMPDIR=/var/lib/flare-agent")
				if out, err := c.CombinedOutput(); err != nil {
					t.Errorf("probe as flare-agent: %v\n%s", err, out)
				} else if !strings.Contains(string(out), `"qemu_sandbox": "ok"`) || !strings.Contains(string(out), `"user": "flare-agent"`) {
					t.Errorf("probe as flare-agent:\n%s", out)
				}
			}
		}
	}

	if out, err := dpkg(t, "-r", "flare-agent"); err != nil {
		t.Fatalf("dpkg -r: %v\n%s", err, out)
	}
	for _, p := range []string{"/usr/bin/flare-agent", "/usr/lib/systemd/system/flare-agent.service", "/usr/lib/udev/rules.d/60-flare-agent.rules"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("dpkg -r left %s", p)
		}
	}
	if _, err := user.Lookup("flare-agent"); err != nil {
		t.Errorf("dpkg -r removed the user (only purge should): %v", err)
	}
	if out, err := dpkg(t, "-P", "flare-agent"); err != nil {
		t.Fatalf("dpkg -P: %v\n%s", err, out)
	}
	if tr := installedTraces(t); len(tr) > 0 {
		t.Errorf("dpkg -P left traces: %q", tr)
	}
	if exec.Command("dpkg-query", "-W", "flare-agent").Run() == nil {
		t.Error("dpkg still knows flare-agent after purge")
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// checkGuestInit: an executable, static linux/amd64 ELF.
func checkGuestInit(f *zip.File) error {
	if f.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("not executable (%v)", f.Mode())
	}
	rc, err := f.Open()
	if err != nil {
		return err
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return err
	}
	e, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer e.Close()
	if e.Machine != elf.EM_X86_64 || e.OSABI != elf.ELFOSABI_NONE && e.OSABI != elf.ELFOSABI_LINUX {
		return fmt.Errorf("machine %v, OS ABI %v: want linux/amd64", e.Machine, e.OSABI)
	}
	for _, p := range e.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("dynamically linked: the initrd has no libc")
		}
	}
	return nil
}
