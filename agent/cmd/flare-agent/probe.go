package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/launch"
	"github.com/flarekit/terraform-provider-flare/agent/server"
)

// runtimeEnv is what `flare-agent probe` checks about the user and the
// files the agent runs with: the systemd unit runs it (and so QEMU) as the
// unprivileged flare-agent user with the kvm group, /dev/kvm and /dev/sev
// only, and a writable state directory. Fields are variables for tests.
type runtimeEnv struct {
	UID, GID  int
	Groups    []int // supplementary groups
	KVMDevice string
	SEVDevice string
	StateDir  string // "" when unknown (no --config, no --state-dir)
	KitDir    string // "" when unknown
	Mode      string // configured mode: auto, snp or simulated
	QEMU      string // "" skips the sandbox check
}

// runtimeReport is the "runtime" part of probe's output.
type runtimeReport struct {
	User     string   `json:"user"`
	UID      int      `json:"uid"`
	Groups   []string `json:"groups"`
	StateDir string   `json:"state_dir,omitempty"`
	Sandbox  string   `json:"qemu_sandbox"` // "ok", "not checked" or the error
	// Problems stop launches (or SEV-SNP in mode snp); Warnings do not.
	Problems []string `json:"problems"`
	Warnings []string `json:"warnings"`
}

func currentEnv() runtimeEnv {
	groups, _ := os.Getgroups()
	return runtimeEnv{UID: os.Geteuid(), GID: os.Getegid(), Groups: groups, KVMDevice: "/dev/kvm", SEVDevice: "/dev/sev"}
}

func (e runtimeEnv) inGroup(gid int) bool { return e.GID == gid || slices.Contains(e.Groups, gid) }

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

func groupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return strconv.Itoa(gid)
}

// deviceAccess explains why dev cannot be opened read-write ("" when it
// can): missing, or its owner, group and mode against this user's ids.
func (e runtimeEnv) deviceAccess(dev string) (missing bool, why string) {
	st, err := os.Stat(dev)
	if err != nil {
		return true, fmt.Sprintf("%s is missing", dev)
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err == nil {
		f.Close()
		return false, ""
	}
	why = fmt.Sprintf("%s is not usable by user %s (%v)", dev, userName(e.UID), cleanErr(err))
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		owner, group := int(sys.Uid), int(sys.Gid)
		why += fmt.Sprintf(": it is %s:%s %04o", userName(owner), groupName(group), st.Mode().Perm())
		switch {
		case errors.Is(err, fs.ErrPermission) && st.Mode().Perm()&0o060 == 0o060 && !e.inGroup(group):
			why += fmt.Sprintf(" and the user is not in group %s (adduser %s %s; the systemd unit adds it with SupplementaryGroups)",
				groupName(group), userName(e.UID), groupName(group))
		case errors.Is(err, fs.ErrPermission) && st.Mode().Perm()&0o060 != 0o060:
			why += " and its group may not read and write it (the flare-agent package's udev rule makes /dev/sev flare-agent:0660)"
		}
	}
	return false, why
}

func cleanErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// checkRuntime reports what the agent lacks when run as this user.
func checkRuntime(ctx context.Context, e runtimeEnv) runtimeReport {
	r := runtimeReport{User: userName(e.UID), UID: e.UID, StateDir: e.StateDir, Problems: []string{}, Warnings: []string{}}
	for _, g := range append([]int{e.GID}, e.Groups...) {
		if n := groupName(g); !slices.Contains(r.Groups, n) {
			r.Groups = append(r.Groups, n)
		}
	}
	problem := func(f string, a ...any) { r.Problems = append(r.Problems, fmt.Sprintf(f, a...)) }
	warn := func(f string, a ...any) { r.Warnings = append(r.Warnings, fmt.Sprintf(f, a...)) }

	if e.UID == 0 {
		warn("running as root: QEMU runs as root too, so a guest that escapes QEMU's device emulation owns the host; run the agent as the unprivileged flare-agent user (the systemd unit and the Debian package do)")
	}
	if missing, why := e.deviceAccess(e.KVMDevice); missing {
		problem("%s is missing: no KVM on this host (load kvm_amd); guests can only run under TCG emulation in simulated mode, and SEV-SNP is impossible", e.KVMDevice)
	} else if why != "" {
		problem("%s; guests would run under slow TCG emulation and SEV-SNP is impossible", why)
	}
	sevMissing, sevWhy := e.deviceAccess(e.SEVDevice)
	var sevMsg string
	switch {
	case sevMissing:
		sevMsg = fmt.Sprintf("%s is missing: no SEV-SNP launches on this host (the AMD secure processor driver, ccp, is not loaded or this is no SEV host)", e.SEVDevice)
	case sevWhy != "":
		sevMsg = sevWhy + ": SEV-SNP launches will fail"
	}
	if sevMsg != "" {
		if e.Mode == api.ModeSNP {
			problem("%s (mode snp)", sevMsg)
		} else {
			warn("%s", sevMsg)
		}
	}
	if e.StateDir != "" {
		if err := checkWritable(e.StateDir); err != nil {
			problem("state_dir %s is not writable by user %s: %v (the systemd unit's StateDirectory=flare-agent makes /var/lib/flare-agent)", e.StateDir, r.User, err)
		} else if st, err := os.Stat(e.StateDir); err == nil && st.Mode().Perm()&0o077 != 0 {
			warn("state_dir %s is mode %04o: other users can reach CVM sockets, logs and kit copies; make it 0700", e.StateDir, st.Mode().Perm())
		}
	}
	if e.KitDir != "" {
		if _, err := server.LoadIdentity(e.KitDir); err != nil {
			problem("the agent kit %s cannot be loaded by user %s: %v (make the kit readable by the flare-agent group: chgrp -R flare-agent %s; chmod -R g+rX %s)", e.KitDir, r.User, err, e.KitDir, e.KitDir)
		}
	}
	r.Sandbox = "not checked"
	if e.QEMU != "" {
		if err := checkSandbox(ctx, e.QEMU); err != nil {
			r.Sandbox = err.Error()
			problem("QEMU does not start with -sandbox %s: %v", launch.SandboxArg, err)
		} else {
			r.Sandbox = "ok"
		}
	}
	return r
}

// checkWritable creates and removes a file in dir; a dir that does not
// exist yet must be creatable (the agent makes it at start).
func checkWritable(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		parent := filepath.Dir(dir)
		for {
			if _, err := os.Stat(parent); err == nil || parent == filepath.Dir(parent) {
				break
			}
			parent = filepath.Dir(parent)
		}
		if err := syscall.Access(parent, 0x2 /* W_OK */); err != nil {
			return fmt.Errorf("it does not exist and %s is not writable (%v)", parent, err)
		}
		return nil
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return cleanErr(err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// checkSandbox starts QEMU (no machine, no guest) the way the agent does,
// under -sandbox launch.SandboxArg, and stops it once QMP answers.
func checkSandbox(ctx context.Context, qemu string) error {
	if _, err := exec.LookPath(qemu); err != nil {
		return fmt.Errorf("%s not found", qemu)
	}
	dir, err := os.MkdirTemp("", "flare-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sock, pidFile := filepath.Join(dir, "qmp.sock"), filepath.Join(dir, "qemu.pid")
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pid, err := launch.Start(ctx, qemu, []string{"-machine", "none", "-accel", "tcg", "-nodefaults", "-display", "none",
		"-qmp", "unix:" + sock + ",server=on,wait=off", "-pidfile", pidFile, "-sandbox", launch.SandboxArg}, pidFile)
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "QEMU failed to start: "))
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	launch.WaitExit(ctx, pid, sock, 5*time.Second)
	return nil
}
