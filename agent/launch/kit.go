package launch

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
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
	"syscall"

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

// maxKitFileBytes bounds launch.json, launch_vm.sh, README.txt and
// signature.json: they are read into memory whole.
const maxKitFileBytes = 4 << 20

// openRegular opens p for reading without following a final symlink and
// without blocking on a FIFO, and refuses anything but a regular file, so
// what is read is a file's content and nothing a writer can feed twice.
func openRegular(p string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|oNoFollow|oNonBlock|oCloExec, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, nil, fmt.Errorf("%s is a symlink, not a regular file", p)
		}
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is not a regular file (%s)", p, fi.Mode().Type())
	}
	return f, fi, nil
}

// readRegular reads a small regular file once (openRegular).
func readRegular(p string) ([]byte, error) {
	f, fi, err := openRegular(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi.Size() > maxKitFileBytes {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d a kit's own file may have", p, fi.Size(), maxKitFileBytes)
	}
	return io.ReadAll(io.LimitReader(f, maxKitFileBytes+1))
}

// Kit is a kit folder whose own files were read once: Signed holds the
// bytes of cvm.SignedFiles and signature.json exactly as they were
// verified, and Manifest is parsed from Signed[launch.json].
type Kit struct {
	Dir      string
	Manifest *cvm.Manifest
	Signed   map[string][]byte
}

// LoadKit reads the kit's launch.json, launch_vm.sh, README.txt and
// signature.json once each (regular files only, no symlinks), checks that
// signature.json signs those bytes with the key of root (the project's
// root CA from the site's startup kit), and parses launch.json from the
// same bytes. Only flare_cvm_kit, holding that key, can make a kit this
// agent launches, and what is launched is what was signed.
func LoadKit(kitDir string, root *x509.Certificate) (*Kit, error) {
	if root == nil {
		return nil, errors.New("no project root certificate to check the kit's signature.json against")
	}
	pub, ok := root.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("project root %q has no RSA key to check kit signatures with", root.Subject.CommonName)
	}
	k := &Kit{Dir: kitDir, Signed: map[string][]byte{}}
	for _, name := range append([]string{kit.SignatureFile}, cvm.SignedFiles...) {
		b, err := readRegular(filepath.Join(kitDir, name))
		if err != nil {
			switch {
			case errors.Is(err, os.ErrNotExist) && name == kit.SignatureFile:
				return nil, fmt.Errorf("kit %s has no %s: only kits signed with project %q's root CA launch (flare_cvm_kit signs them)", kitDir, kit.SignatureFile, root.Subject.CommonName)
			case errors.Is(err, os.ErrNotExist) && name == cvm.ManifestFile:
				return nil, fmt.Errorf("%s has no %s: not a CVM kit folder", kitDir, cvm.ManifestFile)
			}
			return nil, fmt.Errorf("kit %s: %w", kitDir, cleanErr(err))
		}
		k.Signed[name] = b
	}
	var sigs map[string]string
	if err := json.Unmarshal(k.Signed[kit.SignatureFile], &sigs); err != nil {
		return nil, fmt.Errorf("kit %s is not signed by project %q's root CA: %s: %v", kitDir, root.Subject.CommonName, kit.SignatureFile, err)
	}
	for _, name := range cvm.SignedFiles {
		if err := verifyPSS(pub, sigs, name, k.Signed[name]); err != nil {
			return nil, fmt.Errorf("kit %s is not signed by project %q's root CA: %s/%w", kitDir, root.Subject.CommonName, kitDir, err)
		}
	}
	m, err := ParseManifest(k.Signed[cvm.ManifestFile])
	if err != nil {
		return nil, err
	}
	k.Manifest = m
	return k, nil
}

// verifyPSS checks one signature.json entry as NVFlare's verify does:
// RSA-PSS over SHA-256 of the content, MGF1-SHA256, any salt length.
func verifyPSS(pub *rsa.PublicKey, sigs map[string]string, name string, content []byte) error {
	b64, ok := sigs[name]
	if !ok {
		return fmt.Errorf("%s is not listed in %s", name, kit.SignatureFile)
	}
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return fmt.Errorf("%s: signature is not base64: %w", name, err)
	}
	digest := sha256.Sum256(content)
	if err := rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256}); err != nil {
		return fmt.Errorf("%s: signature does not verify: %w", name, err)
	}
	return nil
}

// VerifySignature checks that the kit's signature.json signs its own files
// (cvm.SignedFiles) with the key of root; LoadKit does this and parses
// launch.json from the verified bytes.
func VerifySignature(kitDir string, root *x509.Certificate) error {
	_, err := LoadKit(kitDir, root)
	return err
}

// ReadManifest loads and checks <kitDir>/launch.json (a regular file, read
// once). Unknown fields are rejected, so a manifest from a newer layout is
// not half-understood. It does not check the signature: LoadKit does.
func ReadManifest(kitDir string) (*cvm.Manifest, error) {
	b, err := readRegular(filepath.Join(kitDir, cvm.ManifestFile))
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
	if m.Serial < 1 {
		add("serial %d: a kit needs a serial of 1 or more, so the agent can refuse an older kit of the participant once a newer one ran (flare_cvm_kit writes one; rebuild the kit)", m.Serial)
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

// VerifyFiles checks the files of the kit against launch.json: each must
// be a regular file (not a symlink) with the recorded size and SHA-256,
// and no drive image may name another file (CheckImage). Each file is
// opened once and checked through that descriptor. With drives false, disk
// images are not hashed: the drives of a CVM's own copy of its kit change
// as the guest writes to them, whereas firmware, kernel and initrd are
// measured and must never change.
func VerifyFiles(kitDir string, m *cvm.Manifest, drives bool) error {
	var errs []string
	for _, f := range Files(m) {
		if err := verifyFile(filepath.Join(kitDir, f.Name), f, m, drives || !f.Drive); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("kit %s does not match its launch.json: %s", kitDir, strings.Join(errs, "; "))
	}
	return nil
}

func verifyFile(p string, f KitFile, m *cvm.Manifest, hash bool) error {
	fd, fi, err := openRegular(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %v", f.Name, cleanErr(err))
		}
		return fmt.Errorf("%s: %v", f.Name, err)
	}
	defer fd.Close()
	if f.Drive {
		if err := CheckImage(fd, f.Name, driveFormat(m, f.Name)); err != nil {
			return err
		}
	}
	if !hash {
		return nil
	}
	if fi.Size() != f.Size {
		return fmt.Errorf("%s is %d bytes, launch.json says %d", f.Name, fi.Size(), f.Size)
	}
	h := sha256.New()
	if _, err := io.Copy(h, fd); err != nil {
		return fmt.Errorf("%s: %v", f.Name, err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != f.SHA256 {
		return fmt.Errorf("%s has SHA-256 %s, launch.json says %s", f.Name, sum, f.SHA256)
	}
	return nil
}

func driveFormat(m *cvm.Manifest, file string) string {
	for _, d := range m.Drives {
		if d.File == file {
			return d.Format
		}
	}
	return ""
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
