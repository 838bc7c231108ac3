package cvm

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func TestValidateAcceptsGuideExample(t *testing.T) {
	fx := newFixture(t)
	if errs := fx.in.Config.Validate(); len(errs) != 0 {
		t.Fatalf("valid config rejected: %v", ValidationError(errs))
	}
	// The guide's minimal form: defaults fill the rest.
	c := fx.in.Config
	c.ComputeEnv, c.CCCPUMechanism, c.VCPUType, c.GuestPolicy, c.CCAttestation, c.HostData = "", "", "", 0, nil, ""
	c.CCIssuers[0].TokenExpiration = 599
	if errs := c.Validate(); len(errs) != 0 {
		t.Fatalf("defaults rejected: %v", ValidationError(errs))
	}
	d := c.WithDefaults()
	if d.GuestPolicy != 0x30000 || d.CheckFrequency() != 600 || d.VCPUType != "EPYC-v4" || d.KernelCmdline != DefaultKernelCmdline {
		t.Errorf("defaults %+v", d)
	}
	if c.CCAttestation != nil {
		t.Error("WithDefaults changed its receiver")
	}
	mi := fx.in.Config.MeasureInput()
	if mi.Firmware != fx.in.Config.Firmware || mi.VCPUs != 2 || mi.Cmdline != DefaultKernelCmdline || mi.GuestFeatures != 1 {
		t.Errorf("measure input %+v", mi)
	}
}

// Every bad field is reported, each under its own name with a fix.
func TestValidateReportsEachField(t *testing.T) {
	fx := newFixture(t)
	d := t.TempDir()
	notTar := filepath.Join(d, "app.tar.gz")
	os.WriteFile(notTar, []byte("not an archive, just some bytes that are long enough"), 0o644)
	unreadable := filepath.Join(d, "secret")
	os.WriteFile(unreadable, []byte("x"), 0o000)

	c := fx.in.Config
	c.ComputeEnv = "azure_cvm"
	c.CCCPUMechanism = "intel_tdx"
	c.Role = "admin"
	c.RootDriveSizeGB = 0
	c.AppLogDriveSizeGB = -1
	c.UserConfigDriveSizeGB = 0
	c.UserDataDriveSizeGB = 0
	c.DockerArchive = notTar
	c.UserConfig = map[string]string{
		"nvflare": fx.in.StartupKitDir,
		"a/b":     notTar,
		"missing": filepath.Join(d, "nope"),
		"nopath":  "",
		"ok.conf": notTar,
	}
	c.AllowedPorts = []int{0, 8002, 8002, 70000}
	c.AllowedOutPorts = []int{-5}
	c.HostsEntries = map[string]string{"bad_host!": "1.2.3.4", "server1": "not-an-ip"}
	c.CCIssuers = []Issuer{
		{ID: "a", Path: "nvflare.x.Y", TokenExpiration: 120},
		{ID: "a", Path: "not a path", TokenExpiration: 0},
		{ID: "", Path: "m.C", TokenExpiration: 500},
	}
	c.CCAttestation = &Attestation{CheckFrequency: 120}
	c.VCPUs = 0
	c.VCPUType = "EPYC v4; rm -rf"
	c.MemoryMiB = 256
	c.Firmware = ""
	c.Kernel = filepath.Join(d, "no-kernel")
	c.Initrd = d // a directory
	c.KernelCmdline = "console=ttyS0\nrm"
	c.GuestPolicy = 0x10000 | 1<<30
	c.GuestFeatures = 0x20
	c.HostData = "abcd"
	c.UserDataExtMount = "no-colon"

	errs := c.Validate()
	got := map[string]FieldError{}
	for _, e := range errs {
		if e.Fix == "" {
			t.Errorf("%s: no fix given", e)
		}
		if _, dup := got[e.Field]; dup {
			t.Errorf("%s reported twice", e.Field)
		}
		got[e.Field] = e
	}
	want := map[string]string{
		"compute_env":                    `"azure_cvm" is not supported`,
		"cc_cpu_mechanism":               `"intel_tdx"`,
		"role":                           `"admin" is not a CC role`,
		"root_drive_size":                "is 0",
		"applog_drive_size":              "is -1",
		"user_config_drive_size":         "is 0",
		"user_data_drive_size":           "is 0",
		"docker_archive":                 "not a readable tar",
		"user_config.nvflare":            "reserved for the startup kit",
		"user_config.a/b":                "not a plain file name",
		"user_config.missing":            "does not exist",
		"user_config.nopath":             "has no path",
		"allowed_ports[0]":               "port 0 is out of range",
		"allowed_ports[2]":               "listed twice",
		"allowed_ports[3]":               "port 70000",
		"allowed_out_ports[0]":           "port -5",
		"hosts_entries.bad_host!":        "not a valid host name",
		"hosts_entries.server1":          "not an IP address",
		"cc_issuers[0].token_expiration": "120 s is not less than cc_attestation.check_frequency (120 s)",
		"cc_issuers[1].id":               "used twice",
		"cc_issuers[1].path":             "not a Python class path",
		"cc_issuers[1].token_expiration": "is 0",
		"cc_issuers[2].id":               "is missing",
		"cc_issuers[2].token_expiration": "500 s is not less than",
		"vcpus":                          "is 0",
		"vcpu_type":                      "not a QEMU CPU model",
		"memory_mib":                     "256 MiB",
		"firmware":                       "is missing",
		"kernel":                         "does not exist",
		"initrd":                         "not a regular file",
		"kernel_cmdline":                 "line break",
		"guest_policy":                   "reserved bit 17 must be 1, bits 26-63",
		"guest_features":                 "SNPActive",
		"host_data":                      "not 32 bytes in hex",
		"user_data_ext_mount":            "not an NFS export",
	}
	if os.Geteuid() != 0 {
		c2 := fx.in.Config
		c2.Kernel = unreadable
		if e := c2.Validate(); len(e) != 1 || !strings.Contains(e[0].Problem, "permission denied") {
			t.Errorf("unreadable kernel: %v", e)
		}
	}
	for f, sub := range want {
		e, ok := got[f]
		if !ok {
			t.Errorf("%s not reported", f)
			continue
		}
		if !strings.Contains(e.Problem, sub) {
			t.Errorf("%s: %q lacks %q", f, e.Problem, sub)
		}
	}
	var extra []string
	for f := range got {
		if _, ok := want[f]; !ok {
			extra = append(extra, got[f].Error())
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		t.Errorf("unexpected errors:\n%s", strings.Join(extra, "\n"))
	}
	if msg := ValidationError(errs).Error(); !strings.Contains(msg, "cc_issuers[0].token_expiration: 120 s is not less than") {
		t.Errorf("joined message: %s", msg)
	}
	t.Logf("%d problems, e.g. %s", len(errs), got["cc_issuers[0].token_expiration"])
}

func TestPolicyNotes(t *testing.T) {
	if n := policyNotes(0x30000); len(n) != 0 {
		t.Errorf("default policy: %v", n)
	}
	if n := policyNotes(0xb0000); len(n) != 1 || !strings.Contains(n[0], "DEBUG") {
		t.Errorf("debug policy: %v", n)
	}
	if checkPolicy(0x30000) != "" || checkPolicy(0x3f70000) != "" {
		t.Error("valid policy rejected")
	}
}

func TestMissingToolNamesPackage(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	saved := sbinDirs
	sbinDirs = []string{t.TempDir()}
	defer func() { sbinDirs = saved }()
	_, err := findTools()
	if err == nil {
		t.Fatal("tools found on an empty PATH")
	}
	for _, s := range []string{"mkfs.ext4 not found", "Debian package e2fsprogs", "qemu-img not found", "Debian package qemu-utils", "make cvm-deps"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error lacks %q: %v", s, err)
		}
	}
}
