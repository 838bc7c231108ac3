package launch

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/internal/cvm"
	"github.com/flarekit/terraform-provider-flare/internal/kit"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// testKit writes a kit folder with tiny files and returns it and its
// manifest.
func testKit(t *testing.T) (string, *cvm.Manifest) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "site-1", "cvm_0a1b2c3d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"OVMF.fd": []byte("firmware"), "vmlinuz": []byte("kernel"), "initrd.img": []byte("initrd"),
		"root.qcow2": qcow2Header("root"), "applog.qcow2": qcow2Header("applog")}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f := func(n string) cvm.File { return cvm.File{File: n, Size: int64(len(files[n])), SHA256: sum(files[n])} }
	initrd := f("initrd.img")
	m := &cvm.Manifest{Version: 1, ID: "0a1b2c3d", Serial: 1, Participant: "site-1", Role: "server", VCPUs: 2, VCPUType: "EPYC-v4", MemoryMiB: 2048,
		Firmware: f("OVMF.fd"), Kernel: f("vmlinuz"), Initrd: &initrd, KernelCmdline: "console=ttyS0 root=/dev/vda rw", KernelHashes: true,
		GuestPolicy: "0x30000", GuestFeatures: "0x1", HostData: strings.Repeat("ab", 32), ExpectedMeasurement: strings.Repeat("cd", 48),
		AllowedPorts: []int{8002}}
	for _, d := range []string{"root", "applog"} {
		m.Drives = append(m.Drives, cvm.Drive{Name: d, File: d + ".qcow2", Format: "qcow2", Serial: d,
			FileSize: int64(len(files[d+".qcow2"])), SHA256: sum(files[d+".qcow2"])})
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "launch.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, m
}

// qcow2Header is a minimal qcow2 version 3 image header (no backing file,
// no extensions) followed by tail.
func qcow2Header(tail string) []byte {
	h := make([]byte, 112)
	copy(h, "QFI\xfb")
	be := binary.BigEndian
	be.PutUint32(h[4:], 3)
	be.PutUint32(h[20:], 16)
	be.PutUint64(h[24:], 1<<20)
	be.PutUint32(h[96:], 4)
	be.PutUint32(h[100:], 104)
	return append(h, tail...)
}

func opts(mode string) Options {
	return Options{Mode: mode, CBitPos: 51, ReducedPhysBits: 1, Name: "flare-x", QMPSocket: "/run/f/qmp.sock",
		AttestSocket: "/run/f/attest.sock", ConsoleLog: "/run/f/console.log", PIDFile: "/run/f/qemu.pid",
		Network: "user", ForwardAddress: "127.0.0.1"}
}

func TestArgsSNP(t *testing.T) {
	dir, m := testKit(t)
	a, err := Args(m, dir, opts(api.ModeSNP))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(a, " ")
	for _, want := range []string{
		"-accel kvm",
		"-machine q35,confidential-guest-support=sev0,memory-backend=ram1,vmport=off",
		"-cpu EPYC-v4 -smp 2 -m 2048M",
		"-object memory-backend-memfd,id=ram1,size=2048M,share=true,prealloc=false",
		// host-data is the base64 of the 32 bytes 0xab...
		"-object sev-snp-guest,id=sev0,policy=0x30000,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on,host-data=q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=",
		"-bios " + dir + "/OVMF.fd -kernel " + dir + "/vmlinuz -initrd " + dir + "/initrd.img",
		"-drive if=none,id=root,file=" + dir + "/root.qcow2,format=qcow2,cache=writeback -device virtio-blk-pci,disable-legacy=on,iommu_platform=true,drive=root,serial=root",
		"-device virtserialport,bus=flare-vser0.0,chardev=flare-attest-chr,id=flare-attest,name=org.flare.attest",
		"-netdev user,id=net0,hostfwd=tcp:127.0.0.1:8002-:8002",
		"-qmp unix:/run/f/qmp.sock,server=on,wait=off",
		"-no-reboot", "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("SNP argv lacks %q:\n%s", want, got)
		}
	}
	i := indexOf(a, "-append")
	if i < 0 || a[i+1] != m.KernelCmdline {
		t.Errorf("-append is not one argument with the kit's command line: %q", a)
	}
}

func TestArgsSimulated(t *testing.T) {
	dir, m := testKit(t)
	o := opts(api.ModeSimulated)
	o.Network = "none"
	a, err := Args(m, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(a, " ")
	for _, bad := range []string{"sev", "memory-backend", "iommu_platform", "confidential", "-netdev"} {
		if strings.Contains(got, bad) {
			t.Errorf("simulated argv has %q:\n%s", bad, got)
		}
	}
	for _, want := range []string{"-accel tcg", "-cpu max", "-bios " + dir + "/OVMF.fd", "name=org.flare.attest"} {
		if !strings.Contains(got, want) {
			t.Errorf("simulated argv lacks %q:\n%s", want, got)
		}
	}
	o.KVM = true
	a, _ = Args(m, dir, o)
	if got := strings.Join(a, " "); !strings.Contains(got, "-accel kvm") || !strings.Contains(got, "-cpu host") {
		t.Errorf("simulated KVM argv: %s", got)
	}
	o.CPU = "EPYC"
	a, _ = Args(m, dir, o)
	if got := strings.Join(a, " "); !strings.Contains(got, "-cpu EPYC ") {
		t.Errorf("simulated_cpu not used: %s", got)
	}
	o.Firmware = "/usr/share/ovmf/OVMF.fd"
	a, _ = Args(m, dir, o)
	if got := strings.Join(a, " "); !strings.Contains(got, "-bios /usr/share/ovmf/OVMF.fd -kernel") {
		t.Errorf("simulated_firmware not used: %s", got)
	}
	snp := opts(api.ModeSNP)
	snp.Firmware = "/usr/share/ovmf/OVMF.fd"
	a, _ = Args(m, dir, snp)
	if got := strings.Join(a, " "); !strings.Contains(got, "-bios "+dir+"/OVMF.fd") {
		t.Errorf("an SNP launch must boot the kit's (measured) firmware: %s", got)
	}
	o.QMPSocket = "/" + strings.Repeat("x", 120)
	if _, err := Args(m, dir, o); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("long socket path: %v", err)
	}
}

func indexOf(a []string, s string) int {
	for i, v := range a {
		if v == s {
			return i
		}
	}
	return -1
}

func TestCheckManifestRejects(t *testing.T) {
	_, good := testKit(t)
	for name, mut := range map[string]func(m *cvm.Manifest){
		"traversal":     func(m *cvm.Manifest) { m.Kernel.File = "../../etc/passwd" },
		"absolute":      func(m *cvm.Manifest) { m.Drives[0].File = "/dev/sda" },
		"comma serial":  func(m *cvm.Manifest) { m.Drives[0].Serial = "a,file=/etc/shadow" },
		"version":       func(m *cvm.Manifest) { m.Version = 2 },
		"policy":        func(m *cvm.Manifest) { m.GuestPolicy = "30000" },
		"host data":     func(m *cvm.Manifest) { m.HostData = "abcd" },
		"format":        func(m *cvm.Manifest) { m.Drives[0].Format = "vmdk" },
		"cmdline":       func(m *cvm.Manifest) { m.KernelCmdline = "a\nb" },
		"vcpu type opt": func(m *cvm.Manifest) { m.VCPUType = "EPYC,+svm" },
	} {
		m := *good
		m.Drives = append([]cvm.Drive(nil), good.Drives...)
		mut(&m)
		if err := CheckManifest(&m); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := CheckManifest(good); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyFiles(t *testing.T) {
	dir, m := testKit(t)
	if err := VerifyFiles(dir, m, true); err != nil {
		t.Fatal(err)
	}
	// A drive the guest wrote to passes without drive hashing only.
	os.WriteFile(filepath.Join(dir, "applog.qcow2"), qcow2Header("written by the guest"), 0o644)
	if err := VerifyFiles(dir, m, false); err != nil {
		t.Fatal(err)
	}
	if err := VerifyFiles(dir, m, true); err == nil {
		t.Fatal("changed drive accepted with drives=true")
	}
	os.WriteFile(filepath.Join(dir, "vmlinuz"), []byte("kernel2"), 0o644) // same size? no: longer
	if err := VerifyFiles(dir, m, false); err == nil || !strings.Contains(err.Error(), "vmlinuz") {
		t.Fatalf("changed kernel: %v", err)
	}
	os.Remove(filepath.Join(dir, "vmlinuz"))
	os.Symlink("initrd.img", filepath.Join(dir, "vmlinuz"))
	if err := VerifyFiles(dir, m, false); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("symlinked kernel: %v", err)
	}
}

// tgz packs dir as <prefix>/<file> plus extra entries.
func tgz(t *testing.T, dir, prefix string, extra ...*tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: prefix + "/", Typeflag: tar.TypeDir, Mode: 0o755})
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		tw.WriteHeader(&tar.Header{Name: prefix + "/" + e.Name(), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))})
		tw.Write(data)
	}
	for _, h := range extra {
		tw.WriteHeader(h)
		if h.Size > 0 {
			tw.Write(bytes.Repeat([]byte{'x'}, int(h.Size)))
		}
	}
	tw.Close()
	zw.Close()
	return b.Bytes()
}

func TestUnpack(t *testing.T) {
	dir, m := testKit(t)
	good := tgz(t, dir, "site-1/cvm_0a1b2c3d")
	out := filepath.Join(t.TempDir(), "u")
	kitDir, got, err := Unpack(bytes.NewReader(good), out, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != m.ID || kitDir != filepath.Join(out, "site-1", "cvm_0a1b2c3d") {
		t.Fatalf("unpacked %s %+v", kitDir, got.ID)
	}
	for name, data := range map[string][]byte{
		"traversal":  tgz(t, dir, "k", &tar.Header{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1}),
		"symlink":    tgz(t, dir, "k", &tar.Header{Name: "k/link", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}),
		"extra file": tgz(t, dir, "k", &tar.Header{Name: "k/evil.sh", Typeflag: tar.TypeReg, Mode: 0o755, Size: 3}),
		"two kits":   tgz(t, dir, "a", &tar.Header{Name: "b/launch.json", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2}),
		"not gzip":   []byte("hello"),
		"too big":    nil,
	} {
		max := int64(1 << 20)
		if name == "too big" {
			data, max = good, 10
		}
		if _, _, err := Unpack(bytes.NewReader(data), filepath.Join(t.TempDir(), "u"), max); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestParseVersion(t *testing.T) {
	v, text, ok := ParseVersion("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)\nCopyright")
	if !ok || v != [3]int{7, 2, 22} || text != "7.2.22" {
		t.Fatalf("%v %q %v", v, text, ok)
	}
	if VersionAtLeast(v, 9, 1) {
		t.Fatal("7.2 >= 9.1")
	}
	v, _, _ = ParseVersion("QEMU emulator version 9.1.0")
	if !VersionAtLeast(v, 9, 1) {
		t.Fatal("9.1 < 9.1")
	}
	v, _, _ = ParseVersion("QEMU emulator version 10.0.2")
	if !VersionAtLeast(v, 9, 1) {
		t.Fatal("10.0 < 9.1")
	}
}

func TestEffectiveMode(t *testing.T) {
	h := &Host{QEMUVersion: [3]int{7, 2, 22}, QEMUVersionText: "7.2.22", QEMU: "/usr/bin/qemu-system-x86_64"}
	h.SNP = h.snpSupport()
	if h.SNP.Available {
		t.Skip("this host supports SEV-SNP")
	}
	if got := strings.Join(h.SNP.Reasons, "; "); !strings.Contains(got, "QEMU 7.2.22") || !strings.Contains(got, "9.1") {
		t.Errorf("reasons: %s", got)
	}
	if m, err := h.EffectiveMode(api.ModeAuto); err != nil || m != api.ModeSimulated {
		t.Errorf("auto: %q %v", m, err)
	}
	if _, err := h.EffectiveMode(api.ModeSNP); err == nil || !strings.Contains(err.Error(), "9.1") {
		t.Errorf("snp: %v", err)
	}
	if m, _ := h.EffectiveMode(api.ModeSimulated); m != api.ModeSimulated {
		t.Errorf("simulated: %q", m)
	}
}

// TestVerifySignature: a kit launches only when signature.json signs its
// launch.json, script and README under the project's root.
func TestVerifySignature(t *testing.T) {
	dir, _ := testKit(t)
	for _, f := range []string{cvm.ScriptFile, cvm.ReadmeFile} {
		os.WriteFile(filepath.Join(dir, f), []byte(f+"\n"), 0o644)
	}
	newRoot := func(name string) pki.CA {
		key, err := pki.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		cert, err := pki.NewRootCA(key, name, pki.ValidityFor(time.Now(), 1), pki.Profile{})
		if err != nil {
			t.Fatal(err)
		}
		return pki.CA{Cert: cert, Signer: key}
	}
	project, other := newRoot("project"), newRoot("other")
	sign := func(ca pki.CA) {
		var files []kit.File
		for _, f := range cvm.SignedFiles {
			b, _ := os.ReadFile(filepath.Join(dir, f))
			files = append(files, kit.File{Path: f, Data: b})
		}
		sigs, err := kit.SignFolder(files, ca.Signer)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, kit.SignatureFile), sigs, 0o644)
	}

	if err := VerifySignature(dir, project.Cert); err == nil || !strings.Contains(err.Error(), "has no signature.json") {
		t.Errorf("unsigned kit: %v", err)
	}
	sign(project)
	if err := VerifySignature(dir, project.Cert); err != nil {
		t.Fatalf("signed kit: %v", err)
	}
	if err := VerifySignature(dir, other.Cert); err == nil || !strings.Contains(err.Error(), `not signed by project "other"`) {
		t.Errorf("kit of another project: %v", err)
	}
	if err := VerifySignature(dir, nil); err == nil {
		t.Error("no root: accepted")
	}
	// One byte of launch.json changed: more memory, say.
	p := filepath.Join(dir, cvm.ManifestFile)
	b, _ := os.ReadFile(p)
	os.WriteFile(p, bytes.Replace(b, []byte(`"memory_mib": 2048`), []byte(`"memory_mib": 2049`), 1), 0o644)
	if err := VerifySignature(dir, project.Cert); err == nil || !strings.Contains(err.Error(), "launch.json: signature does not verify") {
		t.Errorf("tampered launch.json: %v", err)
	}
}
