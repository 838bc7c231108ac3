//go:build linux

package devmapper

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ControlPath is the device-mapper control node, MapperDir where device
// nodes are made by name (udev's job elsewhere; the guest has no udev).
var (
	ControlPath = "/dev/mapper/control"
	MapperDir   = "/dev/mapper"
)

// control opens the control node, making it first when devtmpfs has not
// (misc major 10, MAPPER_CTRL_MINOR 236).
func control() (*os.File, error) {
	f, err := os.OpenFile(ControlPath, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(ControlPath), 0o755); err != nil {
			return nil, err
		}
		if err := unix.Mknod(ControlPath, unix.S_IFCHR|0o600, int(unix.Mkdev(10, 236))); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("devmapper: making %s: %w", ControlPath, err)
		}
		f, err = os.OpenFile(ControlPath, os.O_RDWR, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("devmapper: %w (is dm-mod loaded?)", err)
	}
	return f, nil
}

// call runs one command with buf (an encoded dm_ioctl and payload) and
// returns the reply header; the reply payload is in buf.
func call(f *os.File, cmd uint, buf []byte) (dmIoctl, error) {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(ioctlNumber(cmd)), uintptr(unsafe.Pointer(&buf[0])))
	runtime.KeepAlive(f)
	if e != 0 {
		return dmIoctl{}, e
	}
	return decodeHeader(buf)
}

// Device is a device-mapper device as DM_DEV_STATUS reports it.
type Device struct {
	Name         string
	Major, Minor uint32
	OpenCount    int
	Active       bool // a live table is loaded
	ReadOnly     bool
	Suspended    bool
}

func device(h dmIoctl) Device {
	d := Device{
		Name: unix.ByteSliceToString(h.Name[:]), OpenCount: int(h.OpenCount),
		Active: h.Flags&flagActive != 0, ReadOnly: h.Flags&flagReadOnly != 0, Suspended: h.Flags&flagSuspend != 0,
	}
	d.Major, d.Minor = decodeDev(h.Dev)
	return d
}

// Version returns the kernel's device-mapper interface version.
func Version() ([3]uint32, error) {
	f, err := control()
	if err != nil {
		return [3]uint32{}, err
	}
	defer f.Close()
	h, err := call(f, cmdVersion, encode(dmIoctl{Version: dmVersion}, nil, 0))
	if err != nil {
		return [3]uint32{}, fmt.Errorf("devmapper: DM_VERSION: %w", err)
	}
	return h.Version, nil
}

// Create makes device name with the given table, activates it and
// makes its node in MapperDir. uuid may be empty.
func Create(name, uuid string, readOnly bool, targets ...Target) (Device, error) {
	params := make([][]byte, len(targets))
	for i, t := range targets {
		params[i] = []byte(t.Params)
	}
	return create(name, uuid, readOnly, targets, params)
}

// create is Create with the parameters as byte slices, which it wipes.
func create(name, uuid string, readOnly bool, targets []Target, params [][]byte) (dev Device, err error) {
	defer func() {
		for _, p := range params {
			clear(p)
		}
	}()
	h, err := header(name)
	if err != nil {
		return dev, err
	}
	if len(uuid) >= len(h.UUID) {
		return dev, fmt.Errorf("devmapper: uuid %q too long", uuid)
	}
	copy(h.UUID[:], uuid)
	table, err := encodeTable(targets, params)
	if err != nil {
		return dev, err
	}
	defer clear(table)
	f, err := control()
	if err != nil {
		return dev, err
	}
	defer f.Close()

	out, err := call(f, cmdDevCreate, encode(h, nil, 0))
	if err != nil {
		return dev, fmt.Errorf("devmapper: DM_DEV_CREATE %s: %w", name, err)
	}
	defer func() {
		if err != nil { // leave nothing half made
			r, _ := header(name)
			call(f, cmdDevRemove, encode(r, nil, 0))
		}
	}()

	load, _ := header(name)
	load.TargetCount = uint32(len(targets))
	load.Flags = flagSecureData
	if readOnly {
		load.Flags |= flagReadOnly
	}
	buf := encode(load, table, 0)
	_, err = call(f, cmdTableLoad, buf)
	clear(buf)
	if err != nil {
		return dev, fmt.Errorf("devmapper: DM_TABLE_LOAD %s: %w (dmesg has the target's reason)", name, err)
	}
	// DM_DEV_SUSPEND without DM_SUSPEND_FLAG is "resume": it swaps the
	// loaded (inactive) table in.
	resume, _ := header(name)
	if out, err = call(f, cmdDevSuspend, encode(resume, nil, 0)); err != nil {
		return dev, fmt.Errorf("devmapper: resuming %s: %w", name, err)
	}
	dev = device(out)
	if err = makeNode(filepath.Join(MapperDir, name), dev.Major, dev.Minor); err != nil {
		return dev, err
	}
	return dev, nil
}

// makeNode makes (or checks) the block device node path.
func makeNode(path string, major, minor uint32) error {
	rdev := unix.Mkdev(major, minor)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err == nil {
		if st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == rdev {
			return nil
		}
		return fmt.Errorf("devmapper: %s exists and is not block device %d:%d", path, major, minor)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(rdev)); err != nil {
		return fmt.Errorf("devmapper: mknod %s: %w", path, err)
	}
	return nil
}

// Status returns device name's state.
func Status(name string) (Device, error) {
	h, err := header(name)
	if err != nil {
		return Device{}, err
	}
	f, err := control()
	if err != nil {
		return Device{}, err
	}
	defer f.Close()
	out, err := call(f, cmdDevStatus, encode(h, nil, 0))
	if err != nil {
		return Device{}, fmt.Errorf("devmapper: DM_DEV_STATUS %s: %w", name, err)
	}
	return device(out), nil
}

// Table returns device name's live table. The kernel shows a crypt
// key given through the keyring as its reference, a hex key in full.
func Table(name string) ([]Target, error) {
	h, err := header(name)
	if err != nil {
		return nil, err
	}
	h.Flags = flagStatusTable
	f, err := control()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	for size := 16 << 10; size <= 1<<20; size *= 4 {
		buf := encode(h, nil, size)
		out, err := call(f, cmdTableStatus, buf)
		if err != nil {
			return nil, fmt.Errorf("devmapper: DM_TABLE_STATUS %s: %w", name, err)
		}
		if out.Flags&flagBufferFull != 0 {
			continue
		}
		if out.DataStart < uint32(sizeofIoctl) || int(out.DataStart) > len(buf) {
			return nil, errors.New("devmapper: DM_TABLE_STATUS: bad data_start")
		}
		return decodeTable(buf[out.DataStart:min(int(out.DataSize), len(buf))], int(out.TargetCount))
	}
	return nil, errors.New("devmapper: table larger than 1 MiB")
}

// Remove deletes device name and the node Create made for it. It fails
// with EBUSY while the device is open (mounted).
func Remove(name string) error {
	h, err := header(name)
	if err != nil {
		return err
	}
	f, err := control()
	if err != nil {
		return err
	}
	defer f.Close()
	st, statErr := call(f, cmdDevStatus, encode(h, nil, 0))
	if _, err := call(f, cmdDevRemove, encode(h, nil, 0)); err != nil {
		return fmt.Errorf("devmapper: DM_DEV_REMOVE %s: %w", name, err)
	}
	if statErr == nil {
		d := device(st)
		path := filepath.Join(MapperDir, name)
		var s unix.Stat_t
		if unix.Stat(path, &s) == nil && s.Mode&unix.S_IFMT == unix.S_IFBLK && s.Rdev == unix.Mkdev(d.Major, d.Minor) {
			os.Remove(path)
		}
	}
	return nil
}

// CreateCrypt makes a dm-crypt device for c. The key goes to the kernel
// through the keyring (a "logon" key, which user space cannot read back,
// referenced from the table and invalidated once the table is loaded),
// so it is in no table the kernel would show; without keyring support
// it goes in the table as hex. Every buffer that held it is wiped.
func CreateCrypt(name, uuid string, c Crypt) (Device, error) {
	if err := c.check(); err != nil {
		return Device{}, err
	}
	// The thread keyring is the one dm-crypt's request_key searches from
	// the ioctl's thread: keep add_key, the table load and the
	// invalidation on one OS thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var keyRef []byte
	desc := "flare-dm:" + name // logon keys need a "prefix:" description
	if id, err := unix.AddKey("logon", desc, c.Key, unix.KEY_SPEC_THREAD_KEYRING); err == nil {
		defer unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0)
		keyRef = []byte(":" + strconv.Itoa(len(c.Key)) + ":logon:" + desc)
	} else {
		keyRef = make([]byte, hex.EncodedLen(len(c.Key)))
		hex.Encode(keyRef, c.Key)
	}
	params := c.params(keyRef)
	clear(keyRef)
	t := Target{Start: 0, Length: c.Length, Type: "crypt"}
	return create(name, uuid, c.ReadOnly, []Target{t}, [][]byte{params})
}
