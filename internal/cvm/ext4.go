package cvm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// tools are the Debian programs the images are made with.
type tools struct {
	mkfs, debugfs, qemuImg string
}

// sbinDirs are searched after PATH: an unprivileged PATH often lacks them.
var sbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}

// lookTool finds a program on PATH or in the sbin directories.
func lookTool(name, pkg string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH or in %s: install the Debian package %s (make cvm-deps)", name, strings.Join(sbinDirs, ", "), pkg)
}

// findTools locates mkfs.ext4 and debugfs (e2fsprogs) and qemu-img
// (qemu-utils).
func findTools() (*tools, error) {
	var t tools
	var errs []error
	var err error
	if t.mkfs, err = lookTool("mkfs.ext4", "e2fsprogs"); err != nil {
		errs = append(errs, err)
	}
	if t.debugfs, err = lookTool("debugfs", "e2fsprogs"); err != nil {
		errs = append(errs, err)
	}
	if t.qemuImg, err = lookTool("qemu-img", "qemu-utils"); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &t, nil
}

// fakeTime is the time mkfs and debugfs stamp on what they create
// (superblock, lost+found), so the same inputs give the same image.
const fakeTime = "1577836800" // 2020-01-01T00:00:00Z

func run(ctx context.Context, name string, args ...string) (stdout, stderr []byte, err error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME="+fakeTime, "LC_ALL=C")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		msg := strings.TrimSpace(e.String())
		if msg == "" {
			msg = strings.TrimSpace(o.String())
		}
		return o.Bytes(), e.Bytes(), fmt.Errorf("%s %s: %v: %s", filepath.Base(name), strings.Join(args, " "), err, lastLines(msg, 5))
	}
	return o.Bytes(), e.Bytes(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// driveSpec describes one ext4 drive.
type driveSpec struct {
	name  string // root, applog, user_config, user_data
	label string // ext4 label, at most 16 bytes
	size  int64  // bytes
	uuid  string // file system UUID (also the directory hash seed)
	tree  *tree  // contents; nil for an empty file system
	// luksKey, when set, makes the drive a LUKS1 container holding the file
	// system, encrypted with this passphrase.
	luksKey []byte
	// luksIterTimeMS is the PBKDF2 time for the LUKS key slot (0: qemu's
	// default, 2000 ms).
	luksIterTimeMS int
}

// qemuOpt escapes a value inside a QEMU option string.
func qemuOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// makeDrive writes spec as a qcow2 image at out; scratch files go to work.
func (t *tools) makeDrive(ctx context.Context, work string, spec driveSpec, out string) error {
	raw := filepath.Join(work, spec.name+".raw")
	defer os.Remove(raw)
	src := spec.tree
	if src == nil {
		dir := filepath.Join(work, spec.name+".empty")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		src = newTree(dir, 0)
	}
	if spec.size%4096 != 0 {
		return fmt.Errorf("%s drive: size %d is not a multiple of 4096", spec.name, spec.size)
	}
	// Room for the files plus ext4's own metadata (inode tables, journal).
	if need := src.bytes + int64(len(src.meta))*4096; need > spec.size*9/10 {
		return fmt.Errorf("%s_drive_size is too small: the files need about %d MiB but the drive has %d MiB", spec.name, need>>20, spec.size>>20)
	}
	inodes := spec.size / 16384 // mke2fs's default ratio
	if want := int64(len(src.meta))*5/4 + 64; want > inodes {
		inodes = want
	}
	ext := "hash_seed=" + spec.uuid + ",root_owner=0:0,lazy_itable_init=1"
	if spec.luksKey != nil {
		// Zeroes written into the container become ciphertext; an
		// unwritten journal costs nothing in the image.
		ext += ",lazy_journal_init=1"
	}
	args := []string{"-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0",
		"-L", spec.label, "-U", spec.uuid, "-N", strconv.FormatInt(inodes, 10), "-E", ext,
		"-d", src.dir, raw, strconv.FormatInt(spec.size/1024, 10) + "k"}
	if _, _, err := run(ctx, t.mkfs, args...); err != nil {
		if strings.Contains(err.Error(), "Could not allocate block") || strings.Contains(err.Error(), "No space left") {
			return fmt.Errorf("%s_drive_size is too small for its files (%d MiB): %w", spec.name, src.bytes>>20, err)
		}
		return fmt.Errorf("%s drive: %w", spec.name, err)
	}
	if err := t.fixup(ctx, work, spec.name, raw, src); err != nil {
		return err
	}
	if spec.luksKey == nil {
		_, _, err := run(ctx, t.qemuImg, "convert", "-q", "-f", "raw", "-O", "qcow2", raw, out)
		return wrapDrive(spec.name, err)
	}
	return wrapDrive(spec.name, t.luks(ctx, work, spec, raw, out))
}

func wrapDrive(name string, err error) error {
	if err != nil {
		return fmt.Errorf("%s drive: %w", name, err)
	}
	return nil
}

// luks encrypts raw into a LUKS1 container in user space (qemu-img's luks
// driver: aes-256-xts-plain64, PBKDF2-SHA256) and stores the container as
// qcow2. Only what mkfs wrote is encrypted (-S 0 keeps written zeroes;
// --target-is-zero skips never-written space), so the image stays small.
func (t *tools) luks(ctx context.Context, work string, spec driveSpec, raw, out string) error {
	key := filepath.Join(work, spec.name+".key")
	if err := os.WriteFile(key, spec.luksKey, 0o600); err != nil {
		return err
	}
	defer os.Remove(key)
	container := filepath.Join(work, spec.name+".luks")
	defer os.Remove(container)
	secret := "secret,id=sec0,file=" + qemuOpt(key)
	opts := "key-secret=sec0"
	if spec.luksIterTimeMS > 0 {
		opts += ",iter-time=" + strconv.Itoa(spec.luksIterTimeMS)
	}
	// qemu-img times PBKDF2 with the thread's CPU clock and gives up with
	// "Unable to get accurate CPU usage" when a round reads as 0 ms, which
	// happens now and then on a fast CPU; another try succeeds.
	for try := 1; ; try++ {
		_, _, err := run(ctx, t.qemuImg, "create", "-q", "-f", "luks", "--object", secret, "-o", opts, container, strconv.FormatInt(spec.size, 10))
		if err == nil {
			break
		}
		if try == 5 || !strings.Contains(err.Error(), "accurate CPU usage") {
			return err
		}
		os.Remove(container)
	}
	if _, _, err := run(ctx, t.qemuImg, "convert", "-q", "-n", "--target-is-zero", "-S", "0", "-f", "raw", "--object", secret,
		raw, "--target-image-opts", "driver=luks,key-secret=sec0,file.filename="+qemuOpt(container)); err != nil {
		return err
	}
	_, _, err := run(ctx, t.qemuImg, "convert", "-q", "-f", "raw", "-O", "qcow2", container, out)
	return err
}

// Linux i_mode type bits.
var kindBits = map[byte]uint32{
	kindDir: 0o040000, kindFile: 0o100000, kindSymlink: 0o120000,
	kindChar: 0o020000, kindBlock: 0o060000, kindFifo: 0o010000,
}

func imode(m *inodeMeta) uint32 {
	v := kindBits[m.kind] | uint32(m.perm.Perm())
	if m.perm&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m.perm&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m.perm&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return v
}

// debugfsQuote quotes a path for debugfs's command parser, which doubles
// a quote inside quotes.
func debugfsQuote(p string) (string, error) {
	if strings.ContainsAny(p, "\n\r\x00") {
		return "", fmt.Errorf("file name %q cannot be written into the image (line break)", p)
	}
	return `"` + strings.ReplaceAll(p, `"`, `""`) + `"`, nil
}

// fixupScript is the debugfs script that gives every entry of tree its
// recorded owner, mode, timestamps, and creates its device nodes.
func fixupScript(t *tree) ([]byte, error) {
	euid, egid := os.Geteuid(), os.Getegid()
	root, err := os.OpenRoot(t.dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	keys := sortedKeys(t.meta)
	// Parents first (mknod needs its directory).
	sort.SliceStable(keys, func(i, j int) bool { return strings.Count(keys[i], "/") < strings.Count(keys[j], "/") })
	var b bytes.Buffer
	done := map[*inodeMeta]bool{}
	for _, k := range keys {
		m := t.meta[k]
		p, err := debugfsQuote("/" + k)
		if err != nil {
			return nil, err
		}
		staged := false
		switch m.kind {
		case kindChar, kindBlock, kindFifo:
			parent := path.Dir(k)
			if fi, err := root.Lstat(parent); k != "" && parent != "." && (err != nil || !fi.IsDir()) {
				continue
			}
			// mknod links its name argument into the current directory
			// verbatim, slashes and all: change into the parent first.
			qd, _ := debugfsQuote(path.Dir("/" + k))
			qb, _ := debugfsQuote(path.Base(k))
			fmt.Fprintf(&b, "cd %s\n", qd)
			if m.kind == kindFifo {
				fmt.Fprintf(&b, "mknod %s p\n", qb)
			} else {
				fmt.Fprintf(&b, "mknod %s %c %d %d\n", qb, m.kind, m.major, m.minor)
			}
			b.WriteString("cd /\n")
		default:
			name := k
			if name == "" {
				name = "."
			}
			if _, err := root.Lstat(name); err != nil {
				continue // gone, or reached only through a symlink
			}
			staged = true
		}
		if done[m] {
			continue // another name of a hardlinked inode
		}
		done[m] = true
		if m.kind != kindSymlink && (!staged || k == "" || stagedPerm(m.kind, m.perm) != m.perm) {
			fmt.Fprintf(&b, "sif %s mode 0%o\n", p, imode(m))
		}
		if !staged || m.uid != euid || k == "" {
			fmt.Fprintf(&b, "sif %s uid %d\n", p, m.uid)
		}
		if !staged || m.gid != egid || k == "" {
			fmt.Fprintf(&b, "sif %s gid %d\n", p, m.gid)
		}
		for _, f := range []string{"mtime", "atime", "ctime"} {
			fmt.Fprintf(&b, "sif %s %s @%d\n", p, f, m.mtime)
		}
	}
	return b.Bytes(), nil
}

// fixup applies the tree's metadata to the image with debugfs -w.
func (t *tools) fixup(ctx context.Context, work, name, img string, src *tree) error {
	script, err := fixupScript(src)
	if err != nil {
		return fmt.Errorf("%s drive: %w", name, err)
	}
	sp := filepath.Join(work, name+".debugfs")
	if err := os.WriteFile(sp, script, 0o600); err != nil {
		return err
	}
	defer os.Remove(sp)
	_, stderr, err := run(ctx, t.debugfs, "-w", "-f", sp, img)
	if err != nil {
		return fmt.Errorf("%s drive: %w", name, err)
	}
	// debugfs reports failed commands on stderr but exits 0.
	var bad []string
	sc := bufio.NewScanner(bytes.NewReader(stderr))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "debugfs ") {
			continue
		}
		bad = append(bad, l)
	}
	if len(bad) > 0 {
		if len(bad) > 5 {
			bad = append(bad[:5], fmt.Sprintf("and %d more", len(bad)-5))
		}
		return fmt.Errorf("%s drive: setting owners and modes with debugfs: %s", name, strings.Join(bad, " | "))
	}
	return nil
}

// imageInfo is the part of `qemu-img info --output=json` we read.
type imageInfo struct {
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
}

func (t *tools) info(ctx context.Context, p string) (*imageInfo, error) {
	out, _, err := run(ctx, t.qemuImg, "info", "--output=json", "-f", "qcow2", p)
	if err != nil {
		return nil, err
	}
	var ii imageInfo
	if err := json.Unmarshal(out, &ii); err != nil {
		return nil, fmt.Errorf("qemu-img info %s: %w", p, err)
	}
	return &ii, nil
}
