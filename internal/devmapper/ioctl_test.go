package devmapper

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// The layout facts below are from include/uapi/linux/dm-ioctl.h
// (interface 4.x) on a 64-bit little-endian kernel: offsets of struct
// dm_ioctl's fields, sizeof(struct dm_ioctl) = 312 and
// sizeof(struct dm_target_spec) = 40.
func TestLayout(t *testing.T) {
	if sizeofIoctl != 312 || sizeofSpec != 40 {
		t.Fatalf("sizes %d, %d; want 312, 40", sizeofIoctl, sizeofSpec)
	}
	h, err := header("crypt_root")
	if err != nil {
		t.Fatal(err)
	}
	h.TargetCount, h.OpenCount, h.Flags, h.EventNr, h.Dev = 0x11, 0x22, 0x33, 0x44, 0x0000_0000_0010_fd05
	copy(h.UUID[:], "CRYPT-LUKS1-x")
	b := encode(h, []byte("payload"), 400)
	if len(b) != 400 {
		t.Fatalf("buffer %d bytes", len(b))
	}
	u32 := func(off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
	for _, c := range []struct {
		field string
		got   uint64
		want  uint64
	}{
		{"version[0]", uint64(u32(0)), 4},
		{"data_size", uint64(u32(12)), 400},
		{"data_start", uint64(u32(16)), 312},
		{"target_count", uint64(u32(20)), 0x11},
		{"open_count", uint64(u32(24)), 0x22},
		{"flags", uint64(u32(28)), 0x33},
		{"event_nr", uint64(u32(32)), 0x44},
		{"dev", binary.LittleEndian.Uint64(b[40:]), 0x10fd05},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.field, c.got, c.want)
		}
	}
	if !bytes.HasPrefix(b[48:], []byte("crypt_root\x00")) || !bytes.HasPrefix(b[176:], []byte("CRYPT-LUKS1-x\x00")) ||
		!bytes.HasPrefix(b[312:], []byte("payload")) {
		t.Fatal("name at 48, uuid at 176 or payload at 312 misplaced")
	}
	back, err := decodeHeader(b)
	if err != nil || back != func() dmIoctl { h.DataSize, h.DataStart = 400, 312; return h }() {
		t.Fatalf("decode: %v %+v", err, back)
	}
	// huge_encode_dev(MKDEV(253, 5)) = 0xfd05; minor 300 spills into bits 20+.
	if ma, mi := decodeDev(0xfd05); ma != 253 || mi != 5 {
		t.Fatalf("dev 253:5 decoded as %d:%d", ma, mi)
	}
	if ma, mi := decodeDev(0x10fd2c); ma != 253 || mi != 300 {
		t.Fatalf("dev 253:300 decoded as %d:%d", ma, mi)
	}
}

// _IOWR(0xfd, cmd, struct dm_ioctl), as strace prints them.
func TestIoctlNumbers(t *testing.T) {
	for cmd, want := range map[uint]uint{
		cmdVersion: 0xc138fd00, cmdDevCreate: 0xc138fd03, cmdDevRemove: 0xc138fd04,
		cmdDevSuspend: 0xc138fd06, cmdDevStatus: 0xc138fd07, cmdTableLoad: 0xc138fd09, cmdTableStatus: 0xc138fd0c,
	} {
		if got := ioctlNumber(cmd); got != want {
			t.Errorf("cmd %d: %#x, want %#x", cmd, got, want)
		}
	}
}

func TestTable(t *testing.T) {
	c := Crypt{Cipher: "aes-xts-plain64", Key: bytes.Repeat([]byte{0xab}, 64), Device: "254:0", Offset: 32768,
		Length: 1 << 20, SectorSize: 4096}
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
	p := c.params([]byte(":64:logon:flare-dm:root"))
	if got := string(p); got != "aes-xts-plain64 :64:logon:flare-dm:root 0 254:0 32768 1 sector_size:4096" {
		t.Fatalf("params %q", got)
	}
	c.SectorSize, c.IVLargeSectors = 512, true
	if got := string(c.params([]byte("00ff"))); got != "aes-xts-plain64 00ff 0 254:0 32768 1 iv_large_sectors" {
		t.Fatalf("params %q", got)
	}
	targets := []Target{{Start: 0, Length: 8, Type: "crypt"}, {Start: 8, Length: 16, Type: "linear"}}
	params := [][]byte{[]byte("abc"), []byte("8:0 2048")}
	b, err := encodeTable(targets, params)
	if err != nil {
		t.Fatal(err)
	}
	// Spec 1 at 0: 40 + "abc\0" padded to 48; spec 2 at 48: 40 + 9 → 56.
	if len(b) != 48+56 || binary.LittleEndian.Uint32(b[20:]) != 48 || binary.LittleEndian.Uint64(b[48+8:]) != 16 ||
		!bytes.HasPrefix(b[48+24:], []byte("linear\x00")) || !bytes.HasPrefix(b[48+40:], []byte("8:0 2048\x00")) {
		t.Fatalf("table layout:\n%x", b)
	}
	// Replies give next from the payload start, so spec 2's offset is
	// already absolute in spec 1; decodeTable reads it back.
	got, err := decodeTable(b, 2)
	if err != nil || len(got) != 2 || got[1].Type != "linear" || got[1].Params != "8:0 2048" || got[0].Params != "abc" {
		t.Fatalf("decodeTable: %v %+v", err, got)
	}
	for _, bad := range []Crypt{
		{Cipher: "aes-xts-plain64", Key: []byte{1}, Device: "/dev/vd a", Length: 8},
		{Cipher: "aes-xts-plain64", Key: []byte{1}, Device: "254:0", Length: 9, SectorSize: 4096},
		{Cipher: "aes-xts-plain64", Device: "254:0", Length: 8},
	} {
		if err := bad.check(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := header(strings.Repeat("x", 128)); err == nil {
		t.Error("128-byte name accepted")
	}
	if _, err := decodeTable(b[:60], 2); err == nil {
		t.Error("truncated table accepted")
	}
}
