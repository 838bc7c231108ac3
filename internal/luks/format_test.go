package luks

import (
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"hash"
	"testing"

	"golang.org/x/crypto/argon2"
)

// A minimal LUKS writer for tests: small headers with cheap KDFs and few
// stripes, for fuzz seeds and the corruption tests. The tool tests check
// the reader against cryptsetup and qemu-img, so this writer only has to
// agree with the reader.

// afSplit is the inverse of afMerge with deterministic "random" stripes.
func afSplit(key []byte, stripes int, h func() hash.Hash) []byte {
	out := make([]byte, len(key)*stripes)
	d := make([]byte, len(key))
	for i := 0; i < stripes-1; i++ {
		s := out[i*len(key) : (i+1)*len(key)]
		for j := range s {
			s[j] = byte(i*31 + j*7 + 1)
		}
		for j := range d {
			d[j] ^= s[j]
		}
		diffuse(d, h)
	}
	last := out[(stripes-1)*len(key):]
	for j := range last {
		last[j] = d[j] ^ key[j]
	}
	return out
}

func mustPBKDF2(t testing.TB, pass, salt []byte, iter, n int) []byte {
	k, err := pbkdf2.Key(sha256.New, string(pass), salt, iter, n)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// encryptArea encrypts buf in 512-byte sectors from IV 0 (key material).
func encryptArea(t testing.TB, key, buf []byte) {
	c, err := newXTS(key)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(buf); i += 512 {
		c.Encrypt(buf[i:i+512], buf[i:i+512], uint64(i/512))
	}
}

// encryptPayload writes plain encrypted as v describes into img.
func encryptPayload(t testing.TB, v *Volume, img, plain []byte) {
	c, err := newXTS(v.Key)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(plain); i += v.SectorSize {
		dst := img[v.PayloadOffset+int64(i):][:v.SectorSize]
		c.Encrypt(dst, plain[i:i+v.SectorSize], v.ivSector(uint64(i/v.SectorSize)))
	}
}

func pad512(n int) int { return (n + 511) &^ 511 }

var testKey = func() []byte {
	k := make([]byte, 64)
	for i := range k {
		k[i] = byte(0xA0 ^ i)
	}
	return k
}()

// format1 makes a LUKS1 image: one slot (slot 1, so slot 0 is disabled)
// with PBKDF2-SHA256 and plain as payload.
func format1(t testing.TB, pass, plain []byte, iter, stripes int) []byte {
	const payloadSectors = 16
	img := make([]byte, payloadSectors*512+len(plain))
	h := img[:l1Size]
	copy(h, magic1)
	binary.BigEndian.PutUint16(h[6:], 1)
	copy(h[l1CipherName:], "aes")
	copy(h[l1CipherMode:], "xts-plain64")
	copy(h[l1HashSpec:], "sha256")
	binary.BigEndian.PutUint32(h[l1PayloadOff:], payloadSectors)
	binary.BigEndian.PutUint32(h[l1KeyBytes:], uint32(len(testKey)))
	mkSalt := []byte("0123456789abcdef0123456789abcdef")
	copy(h[l1MKSalt:], mkSalt)
	binary.BigEndian.PutUint32(h[l1MKIter:], uint32(iter))
	copy(h[l1MKDigest:], mustPBKDF2(t, testKey, mkSalt, iter, l1DigestBytes))
	copy(h[l1UUID:], "11111111-2222-3333-4444-555555555555")
	for i := range 8 {
		binary.BigEndian.PutUint32(h[l1Slots+i*l1SlotSize:], l1SlotDead)
	}
	s := h[l1Slots+l1SlotSize : l1Slots+2*l1SlotSize]
	salt := []byte("slot-salt-slot-salt-slot-salt-32")
	binary.BigEndian.PutUint32(s, l1SlotActive)
	binary.BigEndian.PutUint32(s[4:], uint32(iter))
	copy(s[8:], salt)
	binary.BigEndian.PutUint32(s[40:], 8) // key material at 4096
	binary.BigEndian.PutUint32(s[44:], uint32(stripes))
	area := make([]byte, pad512(len(testKey)*stripes))
	copy(area, afSplit(testKey, stripes, sha256.New))
	encryptArea(t, mustPBKDF2(t, pass, salt, iter, len(testKey)), area)
	if 4096+len(area) > payloadSectors*512 {
		t.Fatalf("format1: %d stripes do not fit", stripes)
	}
	copy(img[4096:], area)
	encryptPayload(t, &Volume{Key: testKey, PayloadOffset: payloadSectors * 512, SectorSize: 512}, img, plain)
	return img
}

// luks2Opts tunes format2.
type luks2Opts struct {
	argon2     bool // argon2id instead of pbkdf2 for the key slot
	sectorSize int
	stripes    int
	edit       func(m map[string]any) // changes the JSON before writing
}

// format2 makes a LUKS2 image: 16 KiB header copies, key material at
// 32 KiB, payload at 64 KiB.
func format2(t testing.TB, pass, plain []byte, o luks2Opts) []byte {
	const hdr, areaOff, payload = 16 << 10, 32 << 10, 64 << 10
	if o.sectorSize == 0 {
		o.sectorSize = 512
	}
	if o.stripes == 0 {
		o.stripes = 4
	}
	salt := []byte("luks2-slot-salt-luks2-slot-salt!")
	dSalt := []byte("luks2-digest-salt-luks2-digest-s")
	kdf := map[string]any{"type": "pbkdf2", "hash": "sha256", "iterations": 1000, "salt": base64.StdEncoding.EncodeToString(salt)}
	slotKey := mustPBKDF2(t, pass, salt, 1000, 64)
	if o.argon2 {
		kdf = map[string]any{"type": "argon2id", "time": 1, "memory": 64, "cpus": 1, "salt": base64.StdEncoding.EncodeToString(salt)}
		slotKey = argon2.IDKey(pass, salt, 1, 64, 1, 64)
	}
	area := make([]byte, pad512(64*o.stripes))
	copy(area, afSplit(testKey, o.stripes, sha256.New))
	encryptArea(t, slotKey, area)
	meta := map[string]any{
		"keyslots": map[string]any{"0": map[string]any{
			"type": "luks2", "key_size": 64,
			"af":   map[string]any{"type": "luks1", "stripes": o.stripes, "hash": "sha256"},
			"area": map[string]any{"type": "raw", "offset": "32768", "size": "32768", "encryption": "aes-xts-plain64", "key_size": 64},
			"kdf":  kdf,
		}},
		"tokens": map[string]any{},
		"segments": map[string]any{"0": map[string]any{
			"type": "crypt", "offset": "65536", "size": "dynamic", "iv_tweak": "0",
			"encryption": "aes-xts-plain64", "sector_size": o.sectorSize,
		}},
		"digests": map[string]any{"0": map[string]any{
			"type": "pbkdf2", "keyslots": []string{"0"}, "segments": []string{"0"}, "hash": "sha256", "iterations": 1000,
			"salt":   base64.StdEncoding.EncodeToString(dSalt),
			"digest": base64.StdEncoding.EncodeToString(mustPBKDF2(t, testKey, dSalt, 1000, 32)),
		}},
		"config": map[string]any{"json_size": "12288", "keyslots_size": "32768"},
	}
	if o.edit != nil {
		o.edit(meta)
	}
	js, err := json.Marshal(meta)
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, payload+len(plain))
	for i, off := range []int{0, hdr} {
		h := img[off : off+hdr]
		copy(h, magic1)
		if i == 1 {
			copy(h, magic2)
		}
		binary.BigEndian.PutUint16(h[6:], 2)
		binary.BigEndian.PutUint64(h[l2HdrSize:], hdr)
		binary.BigEndian.PutUint64(h[l2SeqID:], 1)
		copy(h[l2CsumAlg:], "sha256")
		copy(h[l2UUID:], "66666666-7777-8888-9999-000000000000")
		binary.BigEndian.PutUint64(h[l2HdrOff:], uint64(off))
		if len(js) >= hdr-l2BinSize {
			t.Fatal("format2: JSON too large")
		}
		copy(h[l2BinSize:], js)
		sum := sha256.Sum256(h)
		copy(h[l2Csum:], sum[:])
	}
	copy(img[areaOff:], area)
	v := &Volume{Key: testKey, PayloadOffset: payload, SectorSize: o.sectorSize}
	encryptPayload(t, v, img, plain)
	return img
}
