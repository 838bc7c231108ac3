package cvm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/flarekit/terraform-provider-flare/internal/atomicfile"
	"github.com/flarekit/terraform-provider-flare/internal/guestconfig"
	"github.com/flarekit/terraform-provider-flare/internal/kit"
)

// layoutVersion enters the kit id: bump it when Build's output changes for
// the same inputs, so old and new kits do not share a folder.
const layoutVersion = 1

// generatedKeyIterTimeMS is the LUKS PBKDF2 time for a root key Build
// generates (a caller's own passphrase gets qemu-img's default).
const generatedKeyIterTimeMS = 10

// Measurer computes the expected SEV-SNP launch measurement (48 bytes, hex)
// of a launch; internal/measure provides it.
type Measurer interface {
	Measure(ctx context.Context, in MeasureInput) (string, error)
}

// BuildInput is everything a CVM kit is made from.
type BuildInput struct {
	Config Config
	// StartupKitDir is the participant's NVFlare startup kit folder (the
	// one holding startup/, local/, transfer/); it goes to /user_config/nvflare.
	StartupKitDir string
	// OutputDir gets <participant>/cvm_<id>/ and <participant>/<participant>.tgz.
	OutputDir       string
	ParticipantName string
	// ExpectedMeasurement is the SNP launch digest in hex (96 digits). If
	// empty, Measurer (when set) computes it; else launch.json has none.
	ExpectedMeasurement string
	Measurer            Measurer
	// RootKey is the LUKS passphrase of an encrypted root drive (UTF-8
	// text). When nil and Config.EncryptRoot is set, Build makes one: 32
	// random bytes in hex. It is returned in Result and never written into
	// the kit.
	RootKey []byte
	// Signer holds the project's root CA key: Build signs the kit's own
	// files (SignedFiles) into signature.json with it, as NVFlare signs a
	// startup kit, and flare-agent launches only kits that verify against
	// its project's rootCA.pem. Required.
	Signer crypto.Signer
	// Serial is launch.json's serial; 0 picks one (kitSerial).
	Serial int64

	// driveUnit is the bytes per configured drive GB (0: 1 GiB); tests use
	// MiB. luksIterTimeMS is the LUKS PBKDF2 time (0: qemu's 2 s).
	driveUnit      int64
	luksIterTimeMS int
}

// Result describes a built kit.
type Result struct {
	// ID is the short id; Dir is <output_dir>/<participant>/cvm_<ID>.
	ID  string
	Dir string
	// Archive is <output_dir>/<participant>/<participant>.tgz; its entries
	// are <participant>/cvm_<ID>/<file>.
	Archive string
	// Files are the kit folder's files, relative and sorted.
	Files    []string
	Manifest *Manifest
	// Digest is kit.DigestTree of Dir: any change to a file or mode on disk
	// changes it.
	Digest string
	// Notes are things the user should know (README.txt lists them too),
	// such as "root drive is NOT encrypted: …".
	Notes []string
	// RootEncrypted tells whether the root drive is a LUKS container;
	// RootKey is its passphrase then.
	RootEncrypted bool
	RootKey       []byte
}

var (
	participantRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9@._-]*$`)
	measurementRE = regexp.MustCompile(`^[0-9a-fA-F]{96}$`)
)

// Drive names, in attach order, with their mount points.
var driveOrder = []struct{ name, mount string }{
	{"root", "/"},
	{"applog", "/applog"},
	{"user_config", "/user_config"},
	{"user_data", "/user_data"},
}

// checkInput validates what is not the CC config.
func (in *BuildInput) check() error {
	var errs []error
	if !participantRE.MatchString(in.ParticipantName) || in.ParticipantName == "." || in.ParticipantName == ".." {
		errs = append(errs, fmt.Errorf("participant name %q cannot be a folder name", in.ParticipantName))
	}
	if in.OutputDir == "" {
		errs = append(errs, errors.New("output_dir is empty"))
	}
	if fi, err := os.Stat(in.StartupKitDir); err != nil {
		errs = append(errs, fmt.Errorf("startup kit: %w", cleanPathErr(err)))
	} else if !fi.IsDir() {
		errs = append(errs, fmt.Errorf("startup kit: %s is not a directory", in.StartupKitDir))
	}
	if in.RootKey != nil && (len(in.RootKey) == 0 || !utf8.Valid(in.RootKey) || bytes.ContainsRune(in.RootKey, 0)) {
		errs = append(errs, errors.New("root key: give a non-empty UTF-8 passphrase without NUL (qemu-img's LUKS driver takes text)"))
	}
	if in.Signer == nil {
		errs = append(errs, errors.New("signer: a CVM kit is signed with the project's root CA key (flare-agent launches only signed kits)"))
	}
	if in.ExpectedMeasurement != "" && !measurementRE.MatchString(in.ExpectedMeasurement) {
		errs = append(errs, fmt.Errorf("expected measurement %q is not 48 bytes in hex (96 digits)", in.ExpectedMeasurement))
	}
	return errors.Join(errs...)
}

// ShortID returns the id of the kit the input makes: 8 hex digits of a
// SHA-256 over the config (paths replaced by the content hashes of what
// they name), the startup kit, the participant and the measurement. It
// reads every input file.
func ShortID(in BuildInput) (string, error) {
	return shortID(in.Config.WithDefaults(), in.StartupKitDir, in.ParticipantName, strings.ToLower(in.ExpectedMeasurement))
}

func shortID(cfg Config, startupKit, participant, measurement string) (string, error) {
	files := map[string]string{}
	hashOf := func(field, p string) error {
		if p == "" {
			return nil
		}
		_, sum, err := hashFile(p)
		if err != nil {
			return fmt.Errorf("%s: %w", field, cleanPathErr(err))
		}
		files[field] = sum
		return nil
	}
	for _, f := range []struct{ field, path string }{
		{"docker_archive", cfg.DockerArchive}, {"firmware", cfg.Firmware}, {"kernel", cfg.Kernel}, {"initrd", cfg.Initrd},
	} {
		if err := hashOf(f.field, f.path); err != nil {
			return "", err
		}
	}
	dirDigest := func(field, p string) error {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%s: %w", field, cleanPathErr(err))
		}
		if !fi.IsDir() {
			return hashOf(field, p)
		}
		d, err := digestDir(p, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		files[field] = "dir:" + d
		return nil
	}
	for k, p := range cfg.UserConfig {
		if err := dirDigest("user_config."+k, p); err != nil {
			return "", err
		}
	}
	if err := dirDigest("startup_kit", startupKit); err != nil {
		return "", err
	}
	// Paths do not count, only what they hold.
	c := cfg
	c.DockerArchive, c.Firmware, c.Kernel, c.Initrd = "", "", "", ""
	c.UserConfig = nil
	b, err := json.Marshal(struct {
		Layout      int               `json:"layout"`
		Participant string            `json:"participant"`
		Config      Config            `json:"config"`
		Files       map[string]string `json:"files"`
		Measurement string            `json:"measurement"`
	}{layoutVersion, participant, c, files, measurement})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:4]), nil
}

// driveUUID derives a file system UUID from the kit id and drive name.
func driveUUID(id, name string) string {
	s := sha256.Sum256([]byte("flare-cvm/" + id + "/" + name))
	s[6] = s[6]&0x0f | 0x40 // version 4 layout
	s[8] = s[8]&0x3f | 0x80
	h := hex.EncodeToString(s[:16])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Build makes the CVM kit of BuildInput at <output_dir>/<participant>/
// cvm_<id>/ and <participant>.tgz beside it. The folder is made in a
// temporary sibling and renamed into place, so readers see the old kit or
// the new one; an error leaves what was there.
func Build(ctx context.Context, in BuildInput) (*Result, error) {
	cfg := in.Config.WithDefaults()
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, ValidationError(errs)
	}
	if err := in.check(); err != nil {
		return nil, err
	}
	t, err := findTools()
	if err != nil {
		return nil, err
	}
	ownInitrd := cfg.Initrd == ""
	if ownInitrd {
		cache, err := os.MkdirTemp("", "flare-initrd-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(cache)
		if cfg, err = cfg.WithOwnInitrd(in.ParticipantName, cache); err != nil {
			return nil, err
		}
	}
	measurement := strings.ToLower(in.ExpectedMeasurement)
	var notes []string
	if measurement == "" && in.Measurer != nil {
		m, err := in.Measurer.Measure(ctx, cfg.MeasureInput())
		if err != nil {
			return nil, fmt.Errorf("expected measurement: %w", err)
		}
		if !measurementRE.MatchString(m) {
			return nil, fmt.Errorf("expected measurement: the measurer returned %q, not 96 hex digits", m)
		}
		measurement = strings.ToLower(m)
	}
	if measurement == "" {
		notes = append(notes, "launch.json has no expected_measurement: attestation cannot check the launch digest")
	}
	notes = append(notes, policyNotes(cfg.GuestPolicy)...)

	id, err := shortID(cfg, in.StartupKitDir, in.ParticipantName, measurement)
	if err != nil {
		return nil, err
	}
	parent := filepath.Join(in.OutputDir, in.ParticipantName)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("create output directory: %w", err)
	}
	final := filepath.Join(parent, "cvm_"+id)
	tmp, err := os.MkdirTemp(parent, ".cvm_"+id+".tmp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp) // after a swap this holds the old kit
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(parent, ".cvm_"+id+".work-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	unit := in.driveUnit
	if unit == 0 {
		unit = 1 << 30
	}
	res := &Result{ID: id, Dir: final}
	m := &Manifest{
		Version: ManifestVersion, ID: id, Participant: in.ParticipantName, Role: cfg.Role,
		ComputeEnv: cfg.ComputeEnv, CCCPUMechanism: cfg.CCCPUMechanism,
		VCPUs: cfg.VCPUs, VCPUType: cfg.VCPUType, MemoryMiB: cfg.MemoryMiB,
		KernelCmdline: cfg.KernelCmdline, KernelHashes: true,
		GuestPolicy:   fmt.Sprintf("0x%x", cfg.GuestPolicy),
		GuestFeatures: fmt.Sprintf("0x%x", cfg.GuestFeatures),
		HostData:      strings.ToLower(cfg.HostData), ExpectedMeasurement: measurement,
		AllowedPorts: nonNil(cfg.AllowedPorts), AllowedOutPorts: nonNil(cfg.AllowedOutPorts),
		HostsEntries: cfg.HostsEntries, CCIssuers: cfg.CCIssuers,
		CheckFrequency: cfg.CCAttestation.CheckFrequency, FailureAction: cfg.CCAttestation.FailureAction,
	}
	if m.HostsEntries == nil {
		m.HostsEntries = map[string]string{}
	}
	if m.CCIssuers == nil {
		m.CCIssuers = []Issuer{}
	}
	sizes := map[string]int{"root": cfg.RootDriveSizeGB, "applog": cfg.AppLogDriveSizeGB,
		"user_config": cfg.UserConfigDriveSizeGB, "user_data": cfg.UserDataDriveSizeGB}
	for _, d := range driveOrder {
		m.Drives = append(m.Drives, Drive{Name: d.name, File: d.name + ".qcow2", Format: "qcow2", SizeGB: sizes[d.name],
			Serial: d.name, MountPoint: d.mount, Filesystem: "ext4", Label: d.name, UUID: driveUUID(id, d.name)})
	}

	// Root encryption.
	var rootKey []byte
	if cfg.EncryptRoot {
		// Fail closed: encrypt_root asks for a LUKS root, and a kit that
		// quietly carries a plaintext one instead is worse than no kit.
		if err := t.probeLUKS(ctx); err != nil {
			return nil, fmt.Errorf("encrypt_root is set but the root drive cannot be encrypted (%s: %w): "+
				"install a qemu-img with the luks format driver (Debian qemu-utils), or unset encrypt_root to build a plaintext root knowingly", t.qemuImg, err)
		} else {
			rootKey = in.RootKey
			if rootKey == nil && in.luksIterTimeMS == 0 {
				// A random 256-bit key needs no stretching; qemu's default 2 s
				// of PBKDF2 would cost a minute to unlock under emulation.
				in.luksIterTimeMS = generatedKeyIterTimeMS
			}
			if rootKey == nil {
				// qemu-img takes LUKS passphrases as UTF-8 text only.
				raw := make([]byte, 32)
				if _, err := rand.Read(raw); err != nil {
					return nil, err
				}
				rootKey = []byte(hex.EncodeToString(raw))
			}
			m.Drives[0].File, m.Drives[0].Encrypted = "crypt_root.qcow2", true
			notes = append(notes, "root drive is encrypted (LUKS1, aes-xts-plain64); its key is not in this kit: the CVM must obtain it after attestation")
		}
	} else {
		notes = append(notes, "root drive is NOT encrypted: encrypt_root is off, so whoever holds the kit or the host can read the participant's private key in the startup kit on it and read and change the image's files; set encrypt_root to make it a LUKS container")
	}

	// Root drive: the flattened image plus the guest config.
	stage := filepath.Join(work, "rootfs")
	if err := os.Mkdir(stage, 0o700); err != nil {
		return nil, err
	}
	img, rootTree, err := flattenImage(ctx, cfg.DockerArchive, stage, work)
	if err != nil {
		return nil, err
	}
	m.Image = *img
	gc := GuestConfig{Version: ManifestVersion, Participant: in.ParticipantName, Role: cfg.Role, Image: *img,
		AllowedPorts: m.AllowedPorts, AllowedOutPorts: m.AllowedOutPorts, HostsEntries: m.HostsEntries,
		CCIssuers: m.CCIssuers, CheckFrequency: m.CheckFrequency, FailureAction: m.FailureAction}
	for _, d := range m.Drives[1:] {
		gc.Drives = append(gc.Drives, GuestDrive{Name: d.Name, Serial: d.Serial, MountPoint: d.MountPoint, Label: d.Label, UUID: d.UUID})
	}
	gcJSON, err := json.MarshalIndent(gc, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := rootTree.addFile(GuestConfigFile, append(gcJSON, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("root drive: %w", err)
	}
	wl, err := json.MarshalIndent(guestconfig.Workload{Entrypoint: img.Entrypoint, Cmd: img.Cmd, Env: img.Env,
		WorkingDir: img.WorkingDir, User: img.User}, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := rootTree.addFile(strings.TrimPrefix(guestconfig.WorkloadPath, "/"), append(wl, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("root drive: %w", err)
	}
	// The startup kit, with the participant's private key, goes on the
	// root: encrypted, only the attested guest reads it (flare-init binds
	// it at /user_config/nvflare, where NVFlare's scripts look).
	if err := rootTree.copyIn(in.StartupKitDir, strings.TrimPrefix(guestconfig.StartupKitOnRoot, "/")); err != nil {
		return nil, fmt.Errorf("root drive: startup kit: %w", err)
	}
	if err := t.makeDrive(ctx, work, driveSpec{name: "root", label: "root", size: int64(cfg.RootDriveSizeGB) * unit,
		uuid: m.Drives[0].UUID, tree: rootTree, luksKey: rootKey, luksIterTimeMS: in.luksIterTimeMS},
		filepath.Join(tmp, m.Drives[0].File)); err != nil {
		return nil, err
	}
	os.RemoveAll(stage)
	if rootKey == nil {
		// A plaintext root carries the participant's private key.
		if err := os.Chmod(filepath.Join(tmp, m.Drives[0].File), 0o600); err != nil {
			return nil, err
		}
	}

	// user_config: the startup kit under nvflare/, then each entry.
	ucStage := filepath.Join(work, "user_config")
	if err := os.Mkdir(ucStage, 0o700); err != nil {
		return nil, err
	}
	uc := newTree(ucStage, fixedTime.Unix())
	// Only the mount point of the startup kit: the kit itself is on the root.
	if err := uc.mkdirAll(ReservedUserConfigKey); err != nil {
		return nil, fmt.Errorf("user_config drive: %w", err)
	}
	ucKeys := sortedKeys(cfg.UserConfig)
	for _, k := range ucKeys {
		if err := uc.copyIn(cfg.UserConfig[k], k); err != nil {
			return nil, fmt.Errorf("user_config.%s: %w", k, err)
		}
	}
	if err := t.makeDrive(ctx, work, driveSpec{name: "user_config", label: "user_config", size: int64(cfg.UserConfigDriveSizeGB) * unit,
		uuid: m.Drives[2].UUID, tree: uc}, filepath.Join(tmp, m.Drives[2].File)); err != nil {
		return nil, err
	}

	// user_data: empty, or ext_mount.conf.
	udStage := filepath.Join(work, "user_data")
	if err := os.Mkdir(udStage, 0o700); err != nil {
		return nil, err
	}
	ud := newTree(udStage, fixedTime.Unix())
	if cfg.UserDataExtMount != "" {
		if err := ud.addFile("ext_mount.conf", []byte(cfg.UserDataExtMount+"\n"), 0o644); err != nil {
			return nil, err
		}
	}
	if err := t.makeDrive(ctx, work, driveSpec{name: "user_data", label: "user_data", size: int64(cfg.UserDataDriveSizeGB) * unit,
		uuid: m.Drives[3].UUID, tree: ud}, filepath.Join(tmp, m.Drives[3].File)); err != nil {
		return nil, err
	}
	alStage := filepath.Join(work, "applog")
	if err := os.Mkdir(alStage, 0o700); err != nil {
		return nil, err
	}
	if err := t.makeDrive(ctx, work, driveSpec{name: "applog", label: "applog", size: int64(cfg.AppLogDriveSizeGB) * unit,
		uuid: m.Drives[1].UUID, tree: newTree(alStage, fixedTime.Unix())}, filepath.Join(tmp, m.Drives[1].File)); err != nil {
		return nil, err
	}

	known := map[string]string{}
	for i := range m.Drives {
		d := &m.Drives[i]
		p := filepath.Join(tmp, d.File)
		ii, err := t.info(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("%s drive: %w", d.Name, err)
		}
		if ii.Format != "qcow2" {
			return nil, fmt.Errorf("%s drive: qemu-img made %s, not qcow2", d.Name, ii.Format)
		}
		d.VirtualSize = ii.VirtualSize
		if d.FileSize, d.SHA256, err = hashFile(p); err != nil {
			return nil, err
		}
		known[d.File] = d.SHA256
	}

	// Firmware, kernel, initrd.
	if m.Firmware, err = copyFile(cfg.Firmware, filepath.Join(tmp, "OVMF.fd")); err != nil {
		return nil, fmt.Errorf("firmware: %w", err)
	}
	if m.Kernel, err = copyFile(cfg.Kernel, filepath.Join(tmp, "vmlinuz")); err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	known[m.Firmware.File], known[m.Kernel.File] = m.Firmware.SHA256, m.Kernel.SHA256
	if cfg.Initrd != "" {
		f, err := copyFile(cfg.Initrd, filepath.Join(tmp, "initrd.img"))
		if err != nil {
			return nil, fmt.Errorf("initrd: %w", err)
		}
		m.Initrd = &f
		known[f.File] = f.SHA256
	}

	m.Serial = kitSerial(in.Serial, filepath.Join(final, ManifestFile), m)
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	script, err := renderScript(m)
	if err != nil {
		return nil, err
	}
	readme, err := renderReadme(m, ucKeys, notes)
	if err != nil {
		return nil, err
	}
	own := []kit.File{
		{Path: ManifestFile, Data: append(mj, '\n'), Mode: 0o644},
		{Path: ScriptFile, Data: script, Mode: 0o755},
		{Path: ReadmeFile, Data: readme, Mode: 0o644},
	}
	// An unchanged kit keeps its signatures (PSS is randomized), so the
	// same inputs still give the same bytes.
	sigs, err := os.ReadFile(filepath.Join(final, kit.SignatureFile))
	if err != nil || !kit.SignaturesCover(sigs, own, in.Signer.Public()) {
		if sigs, err = kit.SignFolder(own, in.Signer); err != nil {
			return nil, fmt.Errorf("sign the kit: %w", err)
		}
	}
	for _, f := range append(own, kit.File{Path: kit.SignatureFile, Data: sigs, Mode: 0o644}) {
		p := filepath.Join(tmp, f.Path)
		if err := os.WriteFile(p, f.Data, f.Mode); err != nil {
			return nil, err
		}
		if err := os.Chmod(p, f.Mode); err != nil {
			return nil, err
		}
	}

	entries, err := os.ReadDir(tmp)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		res.Files = append(res.Files, e.Name())
	}
	sort.Strings(res.Files)
	if res.Digest, err = digestDir(tmp, known); err != nil {
		return nil, err
	}
	archMode := os.FileMode(0o644)
	if rootKey == nil {
		archMode = 0o600 // the plaintext root in it carries the private key
	}
	arch, err := writeTGZ(tmp, in.ParticipantName+"/cvm_"+id, parent, archMode)
	if err != nil {
		return nil, err
	}
	defer os.Remove(arch) // no-op once renamed
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := atomicfile.ReplaceDir(tmp, final); err != nil {
		return nil, fmt.Errorf("write CVM kit %s: %w", final, err)
	}
	res.Archive = filepath.Join(parent, in.ParticipantName+".tgz")
	if err := os.Rename(arch, res.Archive); err != nil {
		return nil, fmt.Errorf("write %s: %w", res.Archive, err)
	}
	res.Manifest, res.Notes = m, notes
	res.RootEncrypted, res.RootKey = rootKey != nil, rootKey
	return res, nil
}

// kitSerial is the serial of launch.json m (flare-agent refuses a kit
// whose serial is below the highest it ran for the participant): want
// when set; else the serial of the kit already at prev when that
// launch.json equals m but for it (an unchanged rebuild keeps its bytes);
// else the time in milliseconds, and above prev's serial.
func kitSerial(want int64, prev string, m *Manifest) int64 {
	if want > 0 {
		return want
	}
	now := time.Now().UnixMilli()
	b, err := os.ReadFile(prev)
	if err != nil {
		return now
	}
	var old Manifest
	if json.Unmarshal(b, &old) != nil || old.Serial < 1 {
		return now
	}
	same := *m
	same.Serial = old.Serial
	if sb, err := json.MarshalIndent(&same, "", "  "); err == nil && bytes.Equal(append(sb, '\n'), b) {
		return old.Serial
	}
	return max(now, old.Serial+1)
}

func nonNil(p []int) []int {
	if p == nil {
		return []int{}
	}
	return p
}

// probeLUKS checks that this qemu-img has the luks format driver.
func (t *tools) probeLUKS(ctx context.Context) error {
	out, _, _ := run(ctx, t.qemuImg, "--help")
	for _, l := range strings.Split(string(out), "\n") {
		if f, ok := strings.CutPrefix(l, "Supported formats:"); ok {
			for _, name := range strings.Fields(f) {
				if name == "luks" {
					return nil
				}
			}
			return errors.New("this qemu-img has no luks format driver, so it cannot write an encrypted drive")
		}
	}
	return errors.New("cannot tell whether qemu-img supports luks (no format list in qemu-img --help)")
}
