package cvm

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/guestconfig"
	"github.com/flarekit/terraform-provider-flare/internal/kit"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

const (
	testMeasurement = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	testHostData    = "aa00000000000000000000000000000000000000000000000000000000000055"
	mib             = 1 << 20
)

// fixture is a complete, valid input with tiny drives (sizes in MiB).
type fixture struct {
	dir string
	in  BuildInput
	ca  pki.CA // signs the kit
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	d := t.TempDir()
	w := func(p, data string, mode os.FileMode) string {
		full := filepath.Join(d, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(full, mode)
		return full
	}
	// A fake startup kit, shaped like internal/kit's server kit.
	w("kit/startup/fed_server.json", `{"format_version": 2}`+"\n", 0o644)
	w("kit/startup/server.key", "-----BEGIN PRIVATE KEY-----\n", 0o600)
	w("kit/startup/sub_start.sh", "#!/bin/bash\n", 0o755)
	w("kit/local/resources.json.default", "{}\n", 0o644)
	os.MkdirAll(filepath.Join(d, "kit/transfer"), 0o755)
	extra := w("extra.conf", "key=value\n", 0o640)
	w("certs/ca.pem", "CA\n", 0o644)
	w("certs/sub/inner.txt", "inner\n", 0o600)

	cfg := Config{
		ComputeEnv: "onprem_cvm", CCCPUMechanism: "amd_sev_snp", Role: "server",
		RootDriveSizeGB: 32, AppLogDriveSizeGB: 16, UserConfigDriveSizeGB: 16, UserDataDriveSizeGB: 16,
		DockerArchive:   writeDockerSave(t, d, testLayers(t), true),
		UserConfig:      map[string]string{"extra.conf": extra, "certs": filepath.Join(d, "certs")},
		AllowedPorts:    []int{8002, 8003},
		AllowedOutPorts: []int{443, 8999},
		HostsEntries:    map[string]string{"server1": "10.0.0.5"},
		CCIssuers: []Issuer{{ID: "snp_authorizer", Path: "nvflare.app_opt.confidential_computing.snp_authorizer.SNPAuthorizer",
			TokenExpiration: 100, Args: map[string]any{"snpguest_binary": "/host/bin/snpguest"}}},
		CCAttestation: &Attestation{CheckFrequency: 120, FailureAction: "stop_job"},
		VCPUs:         2, VCPUType: "EPYC-v4", MemoryMiB: 2048,
		Firmware: w("fw/OVMF.amdsev.fd", strings.Repeat("F", 8192), 0o644),
		Kernel:   w("boot/vmlinuz-test", "KERNEL", 0o644),
		Initrd:   w("boot/initrd-test", "INITRD", 0o644),
		HostData: testHostData,
	}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRootCA(key, "cvm-test", pki.ValidityFor(time.Now(), 1), pki.Profile{})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{dir: d, ca: pki.CA{Cert: root, Signer: key}, in: BuildInput{
		Config: cfg, StartupKitDir: filepath.Join(d, "kit"), OutputDir: filepath.Join(d, "out"),
		ParticipantName: "server1", ExpectedMeasurement: testMeasurement, driveUnit: mib, Signer: key,
	}}
}

func TestBuild(t *testing.T) {
	tl := needTools(t)
	fx := newFixture(t)
	ctx := context.Background()
	res, err := Build(ctx, fx.in)
	if err != nil {
		t.Fatal(err)
	}

	// Layout.
	if ok, _ := regexp.MatchString(`^[0-9a-f]{8}$`, res.ID); !ok {
		t.Fatalf("id %q", res.ID)
	}
	wantDir := filepath.Join(fx.in.OutputDir, "server1", "cvm_"+res.ID)
	if res.Dir != wantDir {
		t.Fatalf("dir %s, want %s", res.Dir, wantDir)
	}
	wantFiles := []string{"OVMF.fd", "README.txt", "applog.qcow2", "initrd.img", "launch.json", "launch_vm.sh",
		"root.qcow2", "signature.json", "user_config.qcow2", "user_data.qcow2", "vmlinuz"}
	if !reflect.DeepEqual(res.Files, wantFiles) {
		t.Fatalf("files %v", res.Files)
	}
	siblings, _ := os.ReadDir(filepath.Dir(res.Dir))
	var names []string
	for _, s := range siblings {
		names = append(names, s.Name())
	}
	if !reflect.DeepEqual(names, []string{"cvm_" + res.ID, "server1.tgz"}) {
		t.Errorf("participant folder holds %v (temp files left?)", names)
	}
	if d, err := kit.DigestTree(res.Dir); err != nil || d != res.Digest {
		t.Errorf("digest %s, kit.DigestTree %s (%v)", res.Digest, d, err)
	}
	if res.RootEncrypted || res.RootKey != nil {
		t.Error("root reported encrypted")
	}
	if !containsPrefix(res.Notes, "root drive is NOT encrypted: ") {
		t.Errorf("notes lack the encryption note: %v", res.Notes)
	}

	// launch.json.
	b, err := os.ReadFile(filepath.Join(res.Dir, "launch.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&m, res.Manifest) {
		t.Errorf("launch.json differs from Result.Manifest")
	}
	checkManifest(t, tl, res.Dir, &m, res.ID)

	// Drives, opened with debugfs.
	images := map[string]string{}
	for _, d := range m.Drives {
		images[d.Name] = rawImage(t, tl, filepath.Join(res.Dir, d.File))
		fsck(t, images[d.Name])
	}
	checkRootDrive(t, tl, images["root"], &m)
	checkUserConfigDrive(t, tl, images["user_config"])
	if ls := debugfs(t, tl, images["user_data"], "ls /"); strings.Contains(ls, "ext_mount.conf") || !strings.Contains(ls, "lost+found") {
		t.Errorf("user_data: %s", ls)
	}
	if ls := debugfs(t, tl, images["applog"], "ls /"); !strings.Contains(ls, "lost+found") {
		t.Errorf("applog: %s", ls)
	}

	for file, want := range map[string]os.FileMode{res.Archive: 0o600, filepath.Join(res.Dir, "root.qcow2"): 0o600} {
		if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s holds the participant's key in plaintext: mode %v, want %v (%v)", filepath.Base(file), fi.Mode().Perm(), want, err)
		}
	}
	checkScript(t, res.Dir, &m)
	checkArchive(t, res)
	checkSignature(t, res.Dir, fx.ca)

	// README.
	readme, _ := os.ReadFile(filepath.Join(res.Dir, "README.txt"))
	for _, s := range []string{"root drive is NOT encrypted", "./launch_vm.sh", testMeasurement, "/user_config/extra.conf", "user_config.qcow2"} {
		if !strings.Contains(string(readme), s) {
			t.Errorf("README.txt lacks %q", s)
		}
	}

	// Same inputs: same folder, same bytes.
	tgz1, _ := os.ReadFile(res.Archive)
	res2, err := Build(ctx, fx.in)
	if err != nil {
		t.Fatal(err)
	}
	if res2.ID != res.ID || res2.Digest != res.Digest {
		t.Errorf("rebuild: id %s digest %s, first %s %s", res2.ID, res2.Digest, res.ID, res.Digest)
	}
	if tgz2, _ := os.ReadFile(res2.Archive); sha(tgz1) != sha(tgz2) {
		t.Errorf("rebuild: %s changed", filepath.Base(res.Archive))
	}
	// A changed command line is another kit.
	in := fx.in
	in.Config.KernelCmdline = "console=ttyS0 root=/dev/vda ro quiet"
	if id, err := ShortID(in); err != nil || id == res.ID {
		t.Errorf("changed cmdline kept id %s (%v)", id, err)
	}
	// The paths do not count, only the contents.
	moved := filepath.Join(fx.dir, "moved.tar.gz")
	os.Link(fx.in.Config.DockerArchive, moved)
	in = fx.in
	in.Config.DockerArchive = moved
	if id, err := ShortID(in); err != nil || id != res.ID {
		t.Errorf("same archive elsewhere changed the id: %s (%v)", id, err)
	}
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func fsck(t *testing.T, img string) {
	t.Helper()
	e2fsck, err := lookTool("e2fsck", "e2fsprogs")
	if err != nil {
		t.Skip(err)
	}
	if out, err := exec.Command(e2fsck, "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn %s: %v\n%s", filepath.Base(img), err, out)
	}
}

func checkManifest(t *testing.T, tl *tools, dir string, m *Manifest, id string) {
	t.Helper()
	if m.Version != ManifestVersion || m.ID != id || m.Participant != "server1" || m.Role != "server" ||
		m.ComputeEnv != "onprem_cvm" || m.CCCPUMechanism != "amd_sev_snp" {
		t.Errorf("header %+v", m)
	}
	if m.VCPUs != 2 || m.VCPUType != "EPYC-v4" || m.MemoryMiB != 2048 || m.GuestPolicy != "0x30000" ||
		m.GuestFeatures != "0x1" || m.HostData != testHostData || m.ExpectedMeasurement != testMeasurement ||
		m.KernelCmdline != DefaultKernelCmdline || !m.KernelHashes {
		t.Errorf("launch parameters %+v", m)
	}
	if !reflect.DeepEqual(m.AllowedPorts, []int{8002, 8003}) || !reflect.DeepEqual(m.AllowedOutPorts, []int{443, 8999}) ||
		!reflect.DeepEqual(m.HostsEntries, map[string]string{"server1": "10.0.0.5"}) {
		t.Errorf("network %v %v %v", m.AllowedPorts, m.AllowedOutPorts, m.HostsEntries)
	}
	if len(m.CCIssuers) != 1 || m.CCIssuers[0].TokenExpiration != 100 || m.CheckFrequency != 120 || m.FailureAction != "stop_job" {
		t.Errorf("cc %+v %d", m.CCIssuers, m.CheckFrequency)
	}
	if m.Image.WorkingDir != "/workspace" || m.Image.Entrypoint[0] != testEntrypoint {
		t.Errorf("image %+v", m.Image)
	}
	for _, f := range append([]File{m.Firmware, m.Kernel}, *m.Initrd) {
		n, sum, err := hashFile(filepath.Join(dir, f.File))
		if err != nil || n != f.Size || sum != f.SHA256 {
			t.Errorf("%s: size %d sha %s (%v), manifest %+v", f.File, n, sum, err, f)
		}
	}
	if m.Firmware.File != "OVMF.fd" || m.Kernel.File != "vmlinuz" || m.Initrd.File != "initrd.img" || m.Kernel.Size != 6 {
		t.Errorf("boot files %+v %+v %+v", m.Firmware, m.Kernel, m.Initrd)
	}
	wantSizes := map[string]int{"root": 32, "applog": 16, "user_config": 16, "user_data": 16}
	var order []string
	for _, d := range m.Drives {
		order = append(order, d.Name)
		if d.SizeGB != wantSizes[d.Name] || d.Format != "qcow2" || d.Serial != d.Name || d.Filesystem != "ext4" || d.Encrypted {
			t.Errorf("drive %+v", d)
		}
		n, sum, err := hashFile(filepath.Join(dir, d.File))
		if err != nil || n != d.FileSize || sum != d.SHA256 {
			t.Errorf("%s: size %d sha %s (%v), manifest %+v", d.File, n, sum, err, d)
		}
		// qemu-img's own view.
		var info struct {
			Format      string `json:"format"`
			VirtualSize int64  `json:"virtual-size"`
		}
		if err := json.Unmarshal([]byte(runOut(t, tl.qemuImg, "info", "--output=json", filepath.Join(dir, d.File))), &info); err != nil {
			t.Fatal(err)
		}
		if info.Format != "qcow2" || info.VirtualSize != int64(wantSizes[d.Name])*mib || info.VirtualSize != d.VirtualSize {
			t.Errorf("%s: qemu-img info %+v, manifest virtual size %d", d.File, info, d.VirtualSize)
		}
	}
	if !reflect.DeepEqual(order, []string{"root", "applog", "user_config", "user_data"}) {
		t.Errorf("drive order %v", order)
	}
}

// statOf returns "mode uid gid links" of a path from debugfs stat.
func statOf(t *testing.T, tl *tools, img, p string) string {
	t.Helper()
	q, _ := debugfsQuote(p)
	out := debugfs(t, tl, img, "stat "+q)
	re := regexp.MustCompile(`Type: (.+?)\s+Mode:\s+(\d+)[\s\S]*?User:\s+(\d+)\s+Group:\s+(\d+)[\s\S]*?Links: (\d+)`)
	s := re.FindStringSubmatch(out)
	if s == nil {
		return "missing: " + out
	}
	mt := regexp.MustCompile(`mtime: 0x([0-9a-f]+)`).FindStringSubmatch(out)
	ct := regexp.MustCompile(`ctime: 0x([0-9a-f]+)`).FindStringSubmatch(out)
	times := ""
	if mt != nil && ct != nil && mt[1] == ct[1] {
		times = " t=" + mt[1]
	}
	return fmt.Sprintf("%s %s %s:%s n=%s%s", s[1], s[2], s[3], s[4], s[5], times)
}

func checkRootDrive(t *testing.T, tl *tools, img string, m *Manifest) {
	t.Helper()
	lt := fmt.Sprintf(" t=%x", layerTime.Unix())
	if got := debugfs(t, tl, img, "cat /etc/passwd"); !strings.Contains(got, "flare:x:1000") {
		t.Errorf("/etc/passwd: %q", got)
	}
	for p, want := range map[string]string{
		"/etc/passwd":          "regular 0644 0:0 n=1" + lt,
		"/etc/shadow":          "regular 0000 0:0 n=1" + lt,
		"/bin/sh":              "regular 0755 0:0 n=2" + lt,
		"/bin/su":              "regular 04755 0:0 n=1" + lt,
		"/bin/link":            "symlink 0777 0:0 n=1" + lt,
		"/home/user/file":      "regular 0640 1000:1001 n=1" + lt,
		"/tmp":                 "directory 01777 0:0 n=2" + lt,
		"/dev/null":            "character special 0666 0:0 n=1" + lt,
		"/dev/fifo":            "FIFO 0600 0:0 n=1" + lt,
		"/opt/old/c.txt":       "regular 0644 0:0 n=1" + lt,
		"/with space/quote\"d": "regular 0644 0:0 n=1" + lt,
	} {
		if got := statOf(t, tl, img, p); got != want {
			t.Errorf("root %s: %s, want %s", p, got, want)
		}
	}
	ft := fmt.Sprintf(" t=%x", fixedTime.Unix())
	kitDir := guestconfig.StartupKitOnRoot
	if got := debugfs(t, tl, img, "cat "+kitDir+"/startup/fed_server.json"); got != `{"format_version": 2}`+"\n" {
		t.Errorf("startup kit on root: fed_server.json: %q", got)
	}
	for p, want := range map[string]string{
		kitDir:                           "directory 0755 0:0 n=5" + ft,
		kitDir + "/startup/server.key":   "regular 0600 0:0 n=1" + ft,
		kitDir + "/startup/sub_start.sh": "regular 0755 0:0 n=1" + ft,
		kitDir + "/transfer":             "directory 0755 0:0 n=2" + ft,
	} {
		if got := statOf(t, tl, img, p); got != want {
			t.Errorf("root %s: %s, want %s", p, got, want)
		}
	}
	if w, err := guestconfig.ParseWorkload([]byte(debugfs(t, tl, img, "cat "+guestconfig.WorkloadPath))); err != nil {
		t.Errorf("workload: %v", err)
	} else if !reflect.DeepEqual(w.Argv(), append(append([]string{}, m.Image.Entrypoint...), m.Image.Cmd...)) || w.User != m.Image.User {
		t.Errorf("workload %+v, image %+v", w, m.Image)
	}
	if got := debugfs(t, tl, img, "stat /dev/null"); !strings.Contains(got, "Device major/minor number: 01:03") {
		t.Errorf("/dev/null: %s", got)
	}
	for _, p := range []string{"/removeme.txt", "/opt/old/a.txt", "/opt/old/sub"} {
		if got := debugfs(t, tl, img, "stat "+p); !strings.Contains(got, "not found") {
			t.Errorf("%s should be gone: %s", p, got)
		}
	}
	if got := debugfs(t, tl, img, "stat /bin/link"); !strings.Contains(got, `Fast link dest: "sh"`) {
		t.Errorf("/bin/link: %s", got)
	}
	var gc GuestConfig
	if err := json.Unmarshal([]byte(debugfs(t, tl, img, "cat /.flare/cvm.json")), &gc); err != nil {
		t.Fatalf("/.flare/cvm.json: %v", err)
	}
	if gc.Participant != "server1" || gc.Image.Entrypoint[0] != testEntrypoint || len(gc.Drives) != 3 ||
		gc.Drives[1].Serial != "user_config" || gc.Drives[1].MountPoint != "/user_config" || gc.HostsEntries["server1"] != "10.0.0.5" {
		t.Errorf("guest config %+v", gc)
	}
	if got := debugfs(t, tl, img, "stats"); !strings.Contains(got, "Filesystem UUID:          "+m.Drives[0].UUID) ||
		!strings.Contains(got, "Filesystem volume name:   root") {
		t.Errorf("root superblock: %s", got)
	}
}

func checkUserConfigDrive(t *testing.T, tl *tools, img string) {
	t.Helper()
	ft := fmt.Sprintf(" t=%x", fixedTime.Unix())
	// The startup kit is on the root drive; user_config has only its mount
	// point, so the host-readable drive holds no private key.
	for p, want := range map[string]string{
		"/nvflare":             "directory 0755 0:0 n=2" + ft,
		"/extra.conf":          "regular 0640 0:0 n=1" + ft,
		"/certs/sub/inner.txt": "regular 0600 0:0 n=1" + ft,
	} {
		if got := statOf(t, tl, img, p); got != want {
			t.Errorf("user_config %s: %s, want %s", p, got, want)
		}
	}
	if ls := debugfs(t, tl, img, "ls /nvflare"); strings.Contains(ls, "startup") {
		t.Errorf("user_config /nvflare is not empty: %s", ls)
	}
	if got := debugfs(t, tl, img, "cat /extra.conf"); got != "key=value\n" {
		t.Errorf("extra.conf: %q", got)
	}
}

// checkScript runs launch_vm.sh against fake QEMUs.
func checkScript(t *testing.T, dir string, m *Manifest) {
	t.Helper()
	script := filepath.Join(dir, "launch_vm.sh")
	if out, err := exec.Command("bash", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	fake := func(version string) string {
		p := filepath.Join(t.TempDir(), "qemu")
		os.WriteFile(p, []byte("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'QEMU emulator version "+version+"'; exit 0; fi\nfor a; do printf '%s\\n' \"$a\"; done\n"), 0o755)
		return p
	}
	cmd := exec.Command(script)
	cmd.Env = append(os.Environ(), "QEMU="+fake("7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)"))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "need QEMU 9.1 or newer") {
		t.Errorf("old QEMU: %v\n%s", err, out)
	}
	cmd = exec.Command(script, "-S")
	cmd.Env = append(os.Environ(), "QEMU="+fake("9.1.0"))
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("launch_vm.sh with QEMU 9.1: %v\n%s", err, out)
	}
	args := strings.Split(strings.TrimSpace(string(out)), "\n")
	hd := base64.StdEncoding.EncodeToString(mustHex(testHostData))
	want := []string{
		"-enable-kvm", "-cpu", "EPYC-v4", "-smp", "2", "-m", "2048M",
		"-machine", "q35,confidential-guest-support=sev0,memory-backend=ram1,vmport=off",
		"-object", "memory-backend-memfd,id=ram1,size=2048M,share=true,prealloc=false",
		"-object", "sev-snp-guest,id=sev0,policy=0x30000,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on,host-data=" + hd,
		"-bios", "OVMF.fd", "-kernel", "vmlinuz", "-initrd", "initrd.img", "-append", DefaultKernelCmdline,
		"-drive", "if=none,id=root,file=root.qcow2,format=qcow2",
		"-device", "virtio-blk-pci,drive=root,serial=root,disable-legacy=on,iommu_platform=true",
		"-drive", "if=none,id=applog,file=applog.qcow2,format=qcow2",
		"-device", "virtio-blk-pci,drive=applog,serial=applog,disable-legacy=on,iommu_platform=true",
		"-drive", "if=none,id=user_config,file=user_config.qcow2,format=qcow2",
		"-device", "virtio-blk-pci,drive=user_config,serial=user_config,disable-legacy=on,iommu_platform=true",
		"-drive", "if=none,id=user_data,file=user_data.qcow2,format=qcow2",
		"-device", "virtio-blk-pci,drive=user_data,serial=user_data,disable-legacy=on,iommu_platform=true",
		"-netdev", "user,id=net0,hostfwd=tcp::8002-:8002,hostfwd=tcp::8003-:8003",
		"-device", "virtio-net-pci,netdev=net0,disable-legacy=on,iommu_platform=true,romfile=",
		"-nographic", "-no-reboot", "-S",
	}
	if !reflect.DeepEqual(args, want) {
		t.Errorf("QEMU arguments:\n got %q\nwant %q", args, want)
	}
}

func mustHex(s string) []byte {
	b := make([]byte, len(s)/2)
	fmt.Sscanf(s, "%x", &b)
	return b
}

func checkArchive(t *testing.T, res *Result) {
	t.Helper()
	if res.Archive != filepath.Join(filepath.Dir(res.Dir), "server1.tgz") {
		t.Errorf("archive %s", res.Archive)
	}
	f, err := os.Open(res.Archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Typeflag == tar.TypeReg {
			data, _ := io.ReadAll(tr)
			rel := strings.TrimPrefix(h.Name, "server1/cvm_"+res.ID+"/")
			want, _ := os.ReadFile(filepath.Join(res.Dir, rel))
			if string(data) != string(want) {
				t.Errorf("archive member %s differs from the folder", h.Name)
			}
			if rel == "launch_vm.sh" && h.Mode != 0o755 {
				t.Errorf("launch_vm.sh mode %o in the archive", h.Mode)
			}
		}
	}
	want := []string{"server1/", "server1/cvm_" + res.ID + "/"}
	for _, f := range res.Files {
		want = append(want, "server1/cvm_"+res.ID+"/"+f)
	}
	sort.Strings(names)
	sort.Strings(want)
	if !reflect.DeepEqual(names, want) {
		t.Errorf("archive holds %v, want %v", names, want)
	}
}

func TestBuildEncryptedRoot(t *testing.T) {
	tl := needTools(t)
	fx := newFixture(t)
	fx.in.Config.EncryptRoot = true
	fx.in.Config.UserDataExtMount = "nfs.example.com:/training_data"
	fx.in.luksIterTimeMS = 10
	res, err := Build(context.Background(), fx.in)
	if err != nil {
		t.Fatal(err)
	}
	if !res.RootEncrypted || len(res.RootKey) != 64 {
		t.Fatalf("encrypted %v key %d bytes; notes %v", res.RootEncrypted, len(res.RootKey), res.Notes)
	}
	d := res.Manifest.Drives[0]
	if d.File != "crypt_root.qcow2" || !d.Encrypted || res.Manifest.KernelCmdline != DefaultKernelCmdlineEncrypted {
		t.Fatalf("root drive %+v cmdline %q", d, res.Manifest.KernelCmdline)
	}
	if d.VirtualSize <= 32*mib {
		t.Errorf("virtual size %d should be the LUKS header plus 32 MiB", d.VirtualSize)
	}
	// The kit must not carry the key.
	filepath.Walk(res.Dir, func(p string, fi os.FileInfo, err error) error {
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			if strings.Contains(string(b), string(res.RootKey)) {
				t.Errorf("%s contains the root key", p)
			}
		}
		return nil
	})
	container := rawImage(t, tl, filepath.Join(res.Dir, d.File))
	if cs, err := lookTool("cryptsetup", "cryptsetup-bin"); err == nil {
		out := runOut(t, cs, "luksDump", container)
		if !strings.Contains(out, "Version:       \t1") && !strings.Contains(out, "Version:") {
			t.Errorf("luksDump: %s", out)
		}
		if !strings.Contains(out, "xts-plain64") {
			t.Errorf("luksDump cipher: %s", out)
		}
	} else {
		t.Logf("cryptsetup not installed; LUKS header checked by qemu-img only: %v", err)
	}
	// Open the container in user space and read the file system.
	key := filepath.Join(t.TempDir(), "key")
	os.WriteFile(key, res.RootKey, 0o600)
	plain := filepath.Join(t.TempDir(), "plain.raw")
	runOut(t, tl.qemuImg, "convert", "--object", "secret,id=sec0,file="+key, "--image-opts",
		"driver=luks,key-secret=sec0,file.filename="+container, "-O", "raw", plain)
	fsck(t, plain)
	if got := debugfs(t, tl, plain, "cat /etc/passwd"); !strings.Contains(got, "flare:x:1000") {
		t.Errorf("decrypted /etc/passwd: %q", got)
	}
	if got := statOf(t, tl, plain, "/bin/su"); !strings.HasPrefix(got, "regular 04755 0:0") {
		t.Errorf("decrypted /bin/su: %s", got)
	}
	// Without the key the container shows no file system.
	if out, err := exec.Command(tl.debugfs, "-R", "ls /", container).CombinedOutput(); err == nil && strings.Contains(string(out), "etc") {
		t.Errorf("the encrypted container is readable without the key:\n%s", out)
	}
	ud := rawImage(t, tl, filepath.Join(res.Dir, "user_data.qcow2"))
	if got := debugfs(t, tl, ud, "cat /ext_mount.conf"); got != "nfs.example.com:/training_data\n" {
		t.Errorf("ext_mount.conf: %q", got)
	}
	readme, _ := os.ReadFile(filepath.Join(res.Dir, "README.txt"))
	if !strings.Contains(string(readme), "root drive is encrypted") {
		t.Errorf("README.txt lacks the encryption note")
	}
}

// A layer that escapes the staging directory fails the build, and leaves
// no kit and no temp files.
func TestBuildRejectsTraversalLayer(t *testing.T) {
	needTools(t)
	fx := newFixture(t)
	bad := writeDockerSave(t, t.TempDir(), [][]byte{makeTar(t, []tarEntry{file("../../escape", "x", 0o644)})}, false)
	fx.in.Config.DockerArchive = bad
	_, err := Build(context.Background(), fx.in)
	var pe *PathError
	if err == nil || !errors.As(err, &pe) {
		t.Fatalf("want PathError, got %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(fx.in.OutputDir, "server1"))
	if len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

func TestBuildRootTooSmall(t *testing.T) {
	needTools(t)
	fx := newFixture(t)
	big := makeTar(t, []tarEntry{file("big.bin", strings.Repeat("x", 20*mib), 0o644)})
	fx.in.Config.DockerArchive = writeDockerSave(t, t.TempDir(), [][]byte{big}, false)
	fx.in.Config.RootDriveSizeGB = 16
	_, err := Build(context.Background(), fx.in)
	if err == nil || !strings.Contains(err.Error(), "root_drive_size is too small") {
		t.Fatalf("got %v", err)
	}
}

func TestBuildInvalidConfig(t *testing.T) {
	fx := newFixture(t)
	fx.in.Config.VCPUs = 0
	_, err := Build(context.Background(), fx.in)
	var ve ValidationError
	if !errors.As(err, &ve) || len(ve) != 1 || ve[0].Field != "vcpus" {
		t.Fatalf("got %v", err)
	}
}

type fakeMeasurer struct{ got MeasureInput }

func (f *fakeMeasurer) Measure(_ context.Context, in MeasureInput) (string, error) {
	f.got = in
	return strings.ToUpper(testMeasurement), nil
}

func TestBuildMeasurer(t *testing.T) {
	needTools(t)
	fx := newFixture(t)
	fx.in.ExpectedMeasurement = ""
	fm := &fakeMeasurer{}
	fx.in.Measurer = fm
	fx.in.Config.KernelCmdline = "console=ttyS0 root=/dev/vda ro"
	res, err := Build(context.Background(), fx.in)
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.ExpectedMeasurement != testMeasurement {
		t.Errorf("measurement %q", res.Manifest.ExpectedMeasurement)
	}
	want := MeasureInput{Firmware: fx.in.Config.Firmware, Kernel: fx.in.Config.Kernel, Initrd: fx.in.Config.Initrd,
		Cmdline: "console=ttyS0 root=/dev/vda ro", VCPUs: 2, VCPUType: "EPYC-v4", GuestFeatures: 1}
	if fm.got != want {
		t.Errorf("measurer got %+v", fm.got)
	}
	// No measurement at all: the kit says so.
	fx.in.Measurer = nil
	res, err = Build(context.Background(), fx.in)
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.ExpectedMeasurement != "" || !containsPrefix(res.Notes, "launch.json has no expected_measurement") {
		t.Errorf("measurement %q notes %v", res.Manifest.ExpectedMeasurement, res.Notes)
	}
}

// checkSignature: signature.json signs the kit's own files under the
// project root (as NVFlare signs a startup kit), and only those; a changed
// launch.json or another CA's root fails.
func checkSignature(t *testing.T, dir string, ca pki.CA) {
	t.Helper()
	if err := kit.VerifyFiles(dir, SignedFiles, ca.Cert); err != nil {
		t.Fatalf("kit signature: %v", err)
	}
	var sigs map[string]string
	b, _ := os.ReadFile(filepath.Join(dir, kit.SignatureFile))
	if err := json.Unmarshal(b, &sigs); err != nil || len(sigs) != len(SignedFiles) {
		t.Errorf("signature.json signs %v (%v), want exactly %v", sigs, err, SignedFiles)
	}
	otherKey, _ := pki.GenerateKey()
	other, _ := pki.NewRootCA(otherKey, "other", pki.ValidityFor(time.Now(), 1), pki.Profile{})
	if err := kit.VerifyFiles(dir, SignedFiles, other); err == nil {
		t.Error("the kit verifies under another project's root")
	}
	tampered := t.TempDir()
	for _, f := range append([]string{kit.SignatureFile}, SignedFiles...) {
		data, _ := os.ReadFile(filepath.Join(dir, f))
		if f == ManifestFile {
			data = []byte(strings.Replace(string(data), `"memory_mib": 2048`, `"memory_mib": 4096`, 1))
		}
		os.WriteFile(filepath.Join(tampered, f), data, 0o644)
	}
	if err := kit.VerifyFiles(tampered, SignedFiles, ca.Cert); err == nil || !strings.Contains(err.Error(), "launch.json: signature does not verify") {
		t.Errorf("tampered launch.json: %v", err)
	}
}
