package luks

import (
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"
)

// LUKS1 on-disk header (LUKS1 spec §2.4, big-endian), 592 bytes.
const (
	l1Size        = 592
	l1CipherName  = 8   // char[32]
	l1CipherMode  = 40  // char[32]
	l1HashSpec    = 72  // char[32]
	l1PayloadOff  = 104 // u32, 512-byte sectors
	l1KeyBytes    = 108 // u32
	l1MKDigest    = 112 // [20]
	l1MKSalt      = 132 // [32]
	l1MKIter      = 164 // u32
	l1UUID        = 168 // char[40]
	l1Slots       = 208 // 8 × 48 bytes
	l1SlotSize    = 48
	l1SlotActive  = 0x00AC71F3
	l1SlotDead    = 0x0000DEAD
	l1DigestBytes = 20
)

func open1(r io.ReaderAt, pass []byte, lim limits) (*Volume, error) {
	h := make([]byte, l1Size)
	if _, err := r.ReadAt(h, 0); err != nil {
		return nil, fmt.Errorf("luks1: reading header: %w", err)
	}
	u32 := func(off int) uint32 { return binary.BigEndian.Uint32(h[off:]) }

	if c, m := cstring(h[l1CipherName:l1CipherName+32]), cstring(h[l1CipherMode:l1CipherMode+32]); c != "aes" || m != "xts-plain64" {
		return nil, fmt.Errorf("luks1: cipher %s-%s not supported (only %s)", c, m, CipherAESXTSPlain64)
	}
	hashName := cstring(h[l1HashSpec : l1HashSpec+32])
	hf, err := newHash(hashName)
	if err != nil {
		return nil, fmt.Errorf("luks1: hash-spec: %w", err)
	}
	keyLen := int(u32(l1KeyBytes))
	if keyLen != 32 && keyLen != 64 {
		return nil, fmt.Errorf("luks1: key-bytes %d not supported for aes-xts (32 or 64)", keyLen)
	}
	payload := int64(u32(l1PayloadOff)) * 512
	if payload < 4096 {
		// 0 would be a detached header; anything below the header is corrupt.
		return nil, fmt.Errorf("luks1: payload-offset %d sectors is inside the header", payload/512)
	}
	mkIter := uint64(u32(l1MKIter))
	mkSalt := h[l1MKSalt : l1MKSalt+32]
	mkDigest := h[l1MKDigest : l1MKDigest+l1DigestBytes]

	var slots []slot
	for i := range 8 {
		s := h[l1Slots+i*l1SlotSize : l1Slots+(i+1)*l1SlotSize]
		switch binary.BigEndian.Uint32(s) {
		case l1SlotDead:
			continue
		case l1SlotActive:
		default:
			return nil, fmt.Errorf("luks1: key slot %d: active field %#x is neither enabled nor disabled", i, binary.BigEndian.Uint32(s))
		}
		iter := uint64(binary.BigEndian.Uint32(s[4:]))
		salt := s[8:40]
		off := int64(binary.BigEndian.Uint32(s[40:])) * 512
		stripes := int(binary.BigEndian.Uint32(s[44:]))
		if stripes < 1 || stripes > 4000 {
			return nil, fmt.Errorf("luks1: key slot %d: stripes %d out of range", i, stripes)
		}
		if off < l1Size || off >= payload {
			return nil, fmt.Errorf("luks1: key slot %d: key-material-offset %d sectors outside the header", i, off/512)
		}
		slots = append(slots, slot{
			name: fmt.Sprintf("key slot %d", i),
			derive: func(pass []byte, n int) ([]byte, error) {
				return pbkdf2Key(hf, pass, salt, iter, n, lim)
			},
			keyLen: keyLen, areaOff: off, areaLen: payload - off,
			slotKey: keyLen, stripes: stripes, afHash: hf,
		})
	}
	if len(slots) == 0 {
		return nil, fmt.Errorf("luks1: no active key slot")
	}
	key, err := tryAll(r, pass, slots, func(key []byte) (bool, error) {
		d, err := pbkdf2Key(hf, key, mkSalt, mkIter, l1DigestBytes, lim)
		if err != nil {
			return false, fmt.Errorf("mk-digest-iter: %w", err)
		}
		return subtle.ConstantTimeCompare(d, mkDigest) == 1, nil
	})
	if err != nil {
		return nil, err
	}
	return &Volume{
		Version: 1, UUID: cstring(h[l1UUID : l1UUID+40]), Cipher: CipherAESXTSPlain64, Key: key,
		PayloadOffset: payload, SectorSize: 512,
	}, nil
}
