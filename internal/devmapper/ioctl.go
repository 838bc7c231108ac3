// Package devmapper drives the Linux device-mapper through its ioctls on
// /dev/mapper/control, as libdevmapper does, so the guest init (static
// Go, no dmsetup or cryptsetup) can create a dm-crypt device. Only the
// few commands a mapping's life needs are here: version, create, table
// load, resume, status, table and remove.
//
// The ioctl structures follow the kernel's uapi header
// include/uapi/linux/dm-ioctl.h (interface version 4). This file only
// encodes and decodes them and builds on every platform, so the layout
// is tested anywhere; the calls themselves are in dm_linux.go.
package devmapper

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// dmIoctl is struct dm_ioctl: 312 bytes, every command's header. Field
// order and sizes are the uapi's; encoding/binary lays it out packed,
// which equals the C layout because every field is naturally aligned
// there (dev at 40, name at 48, uuid at 176, data at 305).
type dmIoctl struct {
	Version     [3]uint32 // in: the interface version we speak; out: the kernel's
	DataSize    uint32    // total buffer size, this header included
	DataStart   uint32    // offset of the payload (target specs, names) from the header
	TargetCount uint32
	OpenCount   int32
	Flags       uint32
	EventNr     uint32
	_           uint32 // padding
	Dev         uint64 // kernel huge_encode_dev of the dm device
	Name        [128]byte
	UUID        [129]byte
	Data        [7]byte // padding, or the start of the payload
}

// dmTargetSpec is struct dm_target_spec: 40 bytes, followed by the
// target's parameter string (NUL-terminated) and padding to 8 bytes.
type dmTargetSpec struct {
	SectorStart uint64
	Length      uint64
	Status      int32
	Next        uint32 // see encodeTable and decodeTable: relative to different bases in and out
	TargetType  [16]byte
}

var (
	sizeofIoctl = binary.Size(dmIoctl{})      // 312
	sizeofSpec  = binary.Size(dmTargetSpec{}) // 40
)

// Interface version 4 (dm-ioctl.h DM_VERSION_MAJOR); minor 0 asks for
// nothing newer than the first 4.x kernel.
var dmVersion = [3]uint32{4, 0, 0}

// Commands (enum in dm-ioctl.h).
const (
	cmdVersion     = 0
	cmdDevCreate   = 3
	cmdDevRemove   = 4
	cmdDevSuspend  = 6
	cmdDevStatus   = 7
	cmdTableLoad   = 9
	cmdTableStatus = 12
)

// Flags (dm-ioctl.h).
const (
	flagReadOnly    = 1 << 0
	flagSuspend     = 1 << 1
	flagStatusTable = 1 << 4  // DM_TABLE_STATUS: the table, not the status
	flagActive      = 1 << 5  // out: a live table is present
	flagBufferFull  = 1 << 8  // out: the buffer was too small
	flagSecureData  = 1 << 15 // in: the kernel wipes its copy of the buffer (it holds a key)

	dmIoctlType       = 0xfd
	iocRead, iocWrite = 2, 1
)

// ioctlNumber is _IOWR(DM_IOCTL, cmd, struct dm_ioctl) in the generic
// asm-generic/ioctl.h encoding (x86, arm64, riscv).
func ioctlNumber(cmd uint) uint {
	return (iocRead|iocWrite)<<30 | uint(sizeofIoctl)<<16 | dmIoctlType<<8 | cmd
}

// Target is one line of a device-mapper table, in 512-byte sectors.
type Target struct {
	Start, Length uint64
	Type          string // "crypt", "linear", ...
	Params        string // empty when read back from the kernel with secrets
}

// header returns a dm_ioctl for the device called name.
func header(name string) (dmIoctl, error) {
	h := dmIoctl{Version: dmVersion}
	if len(name) == 0 || len(name) >= len(h.Name) || bytes.ContainsAny([]byte(name), "/\x00") {
		return h, fmt.Errorf("devmapper: device name %q: 1 to 127 bytes, no '/'", name)
	}
	copy(h.Name[:], name)
	return h, nil
}

// encode returns the header followed by payload; size is the buffer's
// total size (at least the header and payload; the kernel writes
// results up to it).
func encode(h dmIoctl, payload []byte, size int) []byte {
	size = max(size, sizeofIoctl+len(payload))
	h.DataStart = uint32(sizeofIoctl)
	h.DataSize = uint32(size)
	var b bytes.Buffer
	b.Grow(size)
	binary.Write(&b, binary.NativeEndian, &h) // cannot fail on a bytes.Buffer
	b.Write(payload)
	b.Write(make([]byte, size-b.Len()))
	return b.Bytes()
}

func decodeHeader(buf []byte) (dmIoctl, error) {
	var h dmIoctl
	if len(buf) < sizeofIoctl {
		return h, errors.New("devmapper: short reply")
	}
	err := binary.Read(bytes.NewReader(buf[:sizeofIoctl]), binary.NativeEndian, &h)
	return h, err
}

// encodeTable lays out the targets of a DM_TABLE_LOAD payload with
// params written straight from p (so a key in them is in no other
// buffer the caller cannot wipe). On input each spec's Next is the
// offset of the following spec from this spec.
func encodeTable(targets []Target, params [][]byte) ([]byte, error) {
	var out []byte
	for i, t := range targets {
		if len(t.Type) == 0 || len(t.Type) >= 16 {
			return nil, fmt.Errorf("devmapper: target type %q", t.Type)
		}
		if bytes.IndexByte(params[i], 0) >= 0 {
			return nil, errors.New("devmapper: NUL in target parameters")
		}
		n := sizeofSpec + len(params[i]) + 1
		n = (n + 7) &^ 7
		s := dmTargetSpec{SectorStart: t.Start, Length: t.Length, Next: uint32(n)}
		copy(s.TargetType[:], t.Type)
		var b bytes.Buffer
		binary.Write(&b, binary.NativeEndian, &s)
		out = append(out, b.Bytes()...)
		out = append(out, params[i]...)
		out = append(out, make([]byte, n-sizeofSpec-len(params[i]))...)
	}
	return out, nil
}

// decodeTable reads count targets from a DM_TABLE_STATUS reply payload.
// On output each spec's Next is an offset from the start of the payload.
func decodeTable(data []byte, count int) ([]Target, error) {
	var ts []Target
	off := 0
	for i := 0; i < count; i++ {
		if off < 0 || off+sizeofSpec > len(data) {
			return nil, errors.New("devmapper: table reply truncated")
		}
		var s dmTargetSpec
		binary.Read(bytes.NewReader(data[off:off+sizeofSpec]), binary.NativeEndian, &s)
		p := data[off+sizeofSpec:]
		end := bytes.IndexByte(p, 0)
		if end < 0 {
			return nil, errors.New("devmapper: table reply: unterminated parameters")
		}
		ts = append(ts, Target{
			Start: s.SectorStart, Length: s.Length,
			Type: string(bytes.TrimRight(s.TargetType[:], "\x00")), Params: string(p[:end]),
		})
		if int(s.Next) <= off {
			break
		}
		off = int(s.Next)
	}
	return ts, nil
}

// decodeDev splits the kernel's huge_encode_dev value (new_encode_dev
// in its low 32 bits).
func decodeDev(dev uint64) (major, minor uint32) {
	d := uint32(dev)
	return (d & 0xfff00) >> 8, (d & 0xff) | (d>>12)&0xfff00
}
