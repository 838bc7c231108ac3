package launch

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/flarekit/terraform-provider-flare/internal/cvm"
	"github.com/flarekit/terraform-provider-flare/internal/kit"
)

var (
	hexRE      = regexp.MustCompile(`^[0-9a-f]*$`)
	plainName  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	serialRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,20}$`)
	kitIDRE    = regexp.MustCompile(`^[0-9a-f]{8}$`)
	vcpuTypeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

// VerifySignature checks that the kit's signature.json signs its own files
// (cvm.SignedFiles: launch.json, which binds every other file by SHA-256,
// and the script and README) with the key of root, the project's root CA
// from the site's startup kit. Only flare_cvm_kit, holding that key, can
// make a kit this agent launches.
func VerifySignature(kitDir string, root *x509.Certificate) error {
	if root == nil {
		return errors.New("no project root certificate to check the kit's signature.json against")
	}
	err := kit.VerifyFiles(kitDir, cvm.SignedFiles, root)
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(filepath.Join(kitDir, kit.SignatureFile)); serr != nil {
			return fmt.Errorf("kit %s has no %s: only kits signed with project %q's root CA launch (flare_cvm_kit signs them)", kitDir, kit.SignatureFile, root.Subject.CommonName)
		}
	}
	if err != nil {
		return fmt.Errorf("kit %s is not signed by project %q's root CA: %w", kitDir, root.Subject.CommonName, err)
	}
	return nil
}

// ReadManifest loads and checks <kitDir>/launch.json. Unknown fields are
// rejected, so a manifest from a newer layout is not half-understood.
func ReadManifest(kitDir string) (*cvm.Manifest, error) {
	b, err := os.ReadFile(filepath.Join(kitDir, cvm.ManifestFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s has no %s: not a CVM kit folder", kitDir, cvm.ManifestFile)
		}
		return nil, err
	}
	return ParseManifest(b)
}

// ParseManifest decodes and checks launch.json.
func ParseManifest(b []byte) (*cvm.Manifest, error) {
	var m cvm.Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("launch.json: %w", err)
	}
	if err := CheckManifest(&m); err != nil {
		return nil, err
	}
	return &m, nil
}

// CheckManifest rejects a manifest the launcher cannot use safely: file
// names must be plain names inside the kit folder, and the values that go
// onto QEMU's command line must have their expected shape.
func CheckManifest(m *cvm.Manifest) error {
	var errs []string
	add := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	if m.Version != cvm.ManifestVersion {
		add("version %d is not supported (this agent reads version %d)", m.Version, cvm.ManifestVersion)
	}
	if !kitIDRE.MatchString(m.ID) {
		add("id %q is not 8 hex digits", m.ID)
	}
	if m.VCPUs < 1 || m.VCPUs > cvm.MaxVCPUs {
		add("vcpus %d out of range", m.VCPUs)
	}
	if m.MemoryMiB < 1 {
		add("memory_mib %d out of range", m.MemoryMiB)
	}
	if !vcpuTypeRE.MatchString(m.VCPUType) {
		add("vcpu_type %q is not a QEMU CPU model", m.VCPUType)
	}
	checkFile := func(what string, f *cvm.File) {
		if !plainName.MatchString(f.File) {
			add("%s file %q is not a plain file name in the kit folder", what, f.File)
		}
		if len(f.SHA256) != 64 || !hexRE.MatchString(f.SHA256) {
			add("%s sha256 %q is not 64 lower-case hex digits", what, f.SHA256)
		}
	}
	checkFile("firmware", &m.Firmware)
	checkFile("kernel", &m.Kernel)
	if m.Initrd != nil {
		checkFile("initrd", m.Initrd)
	}
	if strings.ContainsAny(m.KernelCmdline, "\x00\n\r") {
		add("kernel_cmdline contains a NUL or line break")
	}
	if _, err := ParsePolicy(m.GuestPolicy); err != nil {
		add("guest_policy: %v", err)
	}
	if m.HostData != "" {
		if b, err := hex.DecodeString(m.HostData); err != nil || len(b) != 32 {
			add("host_data %q is not 32 bytes in hex", m.HostData)
		}
	}
	if m.ExpectedMeasurement != "" {
		if b, err := hex.DecodeString(m.ExpectedMeasurement); err != nil || len(b) != 48 {
			add("expected_measurement %q is not 48 bytes in hex", m.ExpectedMeasurement)
		}
	}
	if len(m.Drives) == 0 {
		add("no drives")
	}
	seen := map[string]bool{}
	for i, d := range m.Drives {
		if !plainName.MatchString(d.File) {
			add("drives[%d] file %q is not a plain file name in the kit folder", i, d.File)
		}
		if !serialRE.MatchString(d.Serial) || !serialRE.MatchString(d.Name) {
			add("drives[%d] name %q / serial %q: use letters, digits, _ and - (at most 20)", i, d.Name, d.Serial)
		}
		if seen[d.Name] {
			add("drives[%d] name %q is used twice", i, d.Name)
		}
		seen[d.Name] = true
		if d.Format != "qcow2" && d.Format != "raw" {
			add("drives[%d] format %q: only qcow2 and raw", i, d.Format)
		}
		if len(d.SHA256) != 64 || !hexRE.MatchString(d.SHA256) {
			add("drives[%d] sha256 %q is not 64 lower-case hex digits", i, d.SHA256)
		}
	}
	for i, p := range m.AllowedPorts {
		if p < 1 || p > 65535 {
			add("allowed_ports[%d] %d out of range", i, p)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("launch.json: %s", strings.Join(errs, "; "))
	}
	return nil
}

// ParsePolicy reads the 0x-hex guest policy.
func ParsePolicy(s string) (uint64, error) {
	h, ok := strings.CutPrefix(s, "0x")
	if !ok || h == "" {
		return 0, fmt.Errorf("%q is not 0x-prefixed hex", s)
	}
	return strconv.ParseUint(h, 16, 64)
}

// KitFile is one file launch.json lists.
type KitFile struct {
	Name   string
	Size   int64
	SHA256 string
	Drive  bool // a disk image: the guest writes to it while it runs
}

// Files lists the files launch.json names, with their recorded size and
// SHA-256.
func Files(m *cvm.Manifest) []KitFile {
	fs := []KitFile{{m.Firmware.File, m.Firmware.Size, m.Firmware.SHA256, false}, {m.Kernel.File, m.Kernel.Size, m.Kernel.SHA256, false}}
	if m.Initrd != nil {
		fs = append(fs, KitFile{m.Initrd.File, m.Initrd.Size, m.Initrd.SHA256, false})
	}
	for _, d := range m.Drives {
		fs = append(fs, KitFile{d.File, d.FileSize, d.SHA256, true})
	}
	return fs
}

// VerifyFiles checks the files of the kit against launch.json: each must be
// a regular file (not a symlink) with the recorded size and SHA-256. With
// drives false, disk images are only checked to exist: a kit folder that
// ran before has drives the guest wrote to (applog, user_data), whereas
// firmware, kernel and initrd are measured and must never change.
func VerifyFiles(kitDir string, m *cvm.Manifest, drives bool) error {
	var errs []string
	for _, f := range Files(m) {
		p := filepath.Join(kitDir, f.Name)
		fi, err := os.Lstat(p)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", f.Name, cleanErr(err)))
			continue
		}
		if !fi.Mode().IsRegular() {
			errs = append(errs, fmt.Sprintf("%s is not a regular file", f.Name))
			continue
		}
		if f.Drive && !drives {
			continue
		}
		if fi.Size() != f.Size {
			errs = append(errs, fmt.Sprintf("%s is %d bytes, launch.json says %d", f.Name, fi.Size(), f.Size))
			continue
		}
		sum, err := hashFile(p)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", f.Name, err))
			continue
		}
		if sum != f.SHA256 {
			errs = append(errs, fmt.Sprintf("%s has SHA-256 %s, launch.json says %s", f.Name, sum, f.SHA256))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("kit %s does not match its launch.json: %s", kitDir, strings.Join(errs, "; "))
	}
	return nil
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
