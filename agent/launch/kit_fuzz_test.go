package launch

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/internal/cvm"
)

// fuzzManifest is a launch.json CheckManifest accepts, for seeds: the
// files are tiny, their names and hashes those fuzzKitFiles makes.
func fuzzManifest() (*cvm.Manifest, map[string][]byte) {
	files := map[string][]byte{"OVMF.fd": []byte("firmware"), "vmlinuz": []byte("kernel"), "initrd.img": []byte("initrd"),
		"root.qcow2": []byte("root"), "applog.qcow2": []byte("applog")}
	f := func(n string) cvm.File {
		s := sha256.Sum256(files[n])
		return cvm.File{File: n, Size: int64(len(files[n])), SHA256: hex.EncodeToString(s[:])}
	}
	initrd := f("initrd.img")
	m := &cvm.Manifest{Version: cvm.ManifestVersion, ID: "0a1b2c3d", Participant: "site-1", Role: "client", VCPUs: 2,
		VCPUType: "EPYC-v4", MemoryMiB: 512, Firmware: f("OVMF.fd"), Kernel: f("vmlinuz"), Initrd: &initrd,
		KernelCmdline: "console=ttyS0 root=/dev/vda rw", KernelHashes: true, GuestPolicy: "0x30000", GuestFeatures: "0x1",
		HostData: strings.Repeat("ab", 32), ExpectedMeasurement: strings.Repeat("cd", 48), AllowedPorts: []int{8002}}
	for _, d := range []string{"root", "applog"} {
		s := sha256.Sum256(files[d+".qcow2"])
		// raw: these few bytes are no qcow2 image.
		m.Drives = append(m.Drives, cvm.Drive{Name: d, File: d + ".qcow2", Format: "raw", Serial: d,
			FileSize: int64(len(files[d+".qcow2"])), SHA256: hex.EncodeToString(s[:])})
	}
	m.Serial = 1 // launch.json "serial", >= 1
	return m, files
}

// optKeys splits a QEMU option list ("a=1,b=2", ",," an escaped comma)
// into its keys; a part without "=" is returned as is (e.g. a model).
func optKeys(s string) []string {
	var keys []string
	for _, part := range strings.Split(strings.ReplaceAll(s, ",,", "\x00"), ",") {
		k, _, _ := strings.Cut(part, "=")
		keys = append(keys, k)
	}
	return keys
}

// FuzzParseManifest: launch.json comes from a kit folder or an upload.
// Whatever it holds, ParseManifest must not panic, and what it accepts
// must be safe to launch: file names stay in the kit folder, and the
// QEMU argv built from it has no injected option (every -drive and block
// -device carries exactly the keys the launcher writes).
func FuzzParseManifest(f *testing.F) {
	m, _ := fuzzManifest()
	good, _ := json.MarshalIndent(m, "", "  ")
	if _, err := ParseManifest(good); err != nil {
		f.Fatalf("the seed launch.json is refused: %v", err)
	}
	f.Add(good)
	m.Initrd = nil
	m.Drives[0].Format = "qcow2"
	noInitrd, _ := json.Marshal(m)
	f.Add(noInitrd)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"version":1,"id":"0a1b2c3d","drives":[{"name":"root","file":"../../etc/shadow"}]}`))
	f.Add([]byte(`{"version":1,"unknown_field":true}`))
	f.Add([]byte(`null`))

	const kitDir = "/var/lib/flare-agent/kits/k"
	drive := map[string]bool{"if": true, "id": true, "file": true, "format": true, "cache": true}
	blk := map[string]bool{"virtio-blk-pci": true, "disable-legacy": true, "iommu_platform": true, "drive": true, "serial": true}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		if err := CheckManifest(m); err != nil {
			t.Fatalf("ParseManifest accepted what CheckManifest refuses: %v", err)
		}
		for _, kf := range Files(m) {
			p := filepath.Join(kitDir, kf.Name)
			if filepath.Dir(p) != kitDir {
				t.Fatalf("file %q resolves to %s, outside the kit folder", kf.Name, p)
			}
		}
		for _, mode := range []string{api.ModeSNP, api.ModeSimulated} {
			a, err := Args(m, kitDir, Options{Mode: mode, CBitPos: 51, ReducedPhysBits: 1, Name: "flare-x",
				QMPSocket: "/run/f/qmp.sock", AttestSocket: "/run/f/attest.sock", ConsoleLog: "/run/f/console.log",
				PIDFile: "/run/f/qemu.pid", Network: "user", ForwardAddress: "127.0.0.1"})
			if err != nil {
				continue // e.g. a host limit; refusing is safe
			}
			for i, arg := range a {
				if strings.ContainsAny(arg, "\x00\n\r") {
					t.Fatalf("argv[%d] %q holds a NUL or line break", i, arg)
				}
				if i == 0 {
					continue
				}
				switch prev := a[i-1]; {
				case prev == "-bios" || prev == "-kernel" || prev == "-initrd":
					if filepath.Dir(arg) != kitDir {
						t.Fatalf("%s %s is outside the kit folder", prev, arg)
					}
				case prev == "-drive":
					files := 0
					for _, k := range optKeys(arg) {
						if !drive[k] {
							t.Fatalf("-drive %q has an injected option %q", arg, k)
						}
						if k == "file" {
							files++
						}
					}
					_, rest, _ := strings.Cut(arg, ",file=")
					path, _, _ := strings.Cut(strings.ReplaceAll(rest, ",,", "\x00"), ",")
					if files != 1 || filepath.Dir(strings.ReplaceAll(path, "\x00", ",")) != kitDir {
						t.Fatalf("-drive %q: file outside the kit folder or given twice", arg)
					}
				case prev == "-device" && strings.HasPrefix(arg, "virtio-blk-pci"):
					for _, k := range optKeys(arg) {
						if !blk[k] {
							t.Fatalf("-device %q has an injected option %q", arg, k)
						}
					}
				}
			}
		}
	})
}
