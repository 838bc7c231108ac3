package luks

import (
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
)

func testPlain(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*13 + i>>9)
	}
	return p
}

// checkPayload decrypts the whole payload through NewReader and compares.
func checkPayload(t *testing.T, v *Volume, img, plain []byte) {
	t.Helper()
	got := make([]byte, len(plain))
	if n, err := v.NewReader(bytes.NewReader(img)).ReadAt(got, 0); n != len(plain) || (err != nil && err != io.EOF) {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	if !bytes.Equal(got, plain) {
		t.Fatal("decrypted payload differs from the plaintext")
	}
	// An unaligned read across a sector boundary.
	part := make([]byte, 700)
	if _, err := v.NewReader(bytes.NewReader(img)).ReadAt(part, int64(v.SectorSize)-100); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(part, plain[v.SectorSize-100:][:700]) {
		t.Fatal("unaligned read differs")
	}
}

func TestOpenWritten(t *testing.T) {
	pass := []byte("correct horse")
	plain := testPlain(16 << 10)
	for _, tc := range []struct {
		name       string
		img        []byte
		version    int
		sectorSize int
	}{
		{"luks1", format1(t, pass, plain, 1000, 3), 1, 512},
		{"luks1-1stripe", format1(t, pass, plain, 1000, 1), 1, 512},
		{"luks2-pbkdf2", format2(t, pass, plain, luks2Opts{}), 2, 512},
		{"luks2-argon2id-4k", format2(t, pass, plain, luks2Opts{argon2: true, sectorSize: 4096}), 2, 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Open(bytes.NewReader(tc.img), pass)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(v.Key, testKey) || v.Version != tc.version || v.SectorSize != tc.sectorSize ||
				v.IVLargeSectors || v.Cipher != "aes-xts-plain64" {
				t.Fatalf("volume %+v", v)
			}
			checkPayload(t, v, tc.img, plain)
			if _, err := Open(bytes.NewReader(tc.img), []byte("correct horse\n")); !errors.Is(err, ErrPassphrase) ||
				err.Error() != "luks: no key slot opens with this passphrase" {
				t.Fatalf("wrong passphrase: %v", err)
			}
		})
	}
}

// TestAFDiffuse pins diffuse for a key longer than the digest with a
// partial last block (sha1: 20+20+4 bytes), where implementations differ
// most easily. The expected value is H(be32(i)||block) per block.
func TestAFDiffuse(t *testing.T) {
	d := bytes.Repeat([]byte{0x5a}, 44)
	diffuse(d, sha1.New)
	want := make([]byte, 0, 44)
	for i, n := range []int{20, 20, 4} {
		var idx [4]byte
		binary.BigEndian.PutUint32(idx[:], uint32(i))
		s := sha1.Sum(append(idx[:], bytes.Repeat([]byte{0x5a}, n)...))
		want = append(want, s[:n]...)
	}
	if !bytes.Equal(d, want) {
		t.Fatalf("diffuse = %s, want %s", hex.EncodeToString(d), hex.EncodeToString(want))
	}
}

// TestCorrupt: damaged headers give an error that names what is wrong.
func TestCorrupt(t *testing.T) {
	pass := []byte("pw")
	plain := testPlain(4096)
	l1 := format1(t, pass, plain, 1000, 2)
	l2 := format2(t, pass, plain, luks2Opts{})
	set := func(img []byte, off int, b ...byte) []byte {
		c := bytes.Clone(img)
		copy(c[off:], b)
		return c
	}
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	edit := func(f func(m map[string]any)) []byte { return format2(t, pass, plain, luks2Opts{edit: f}) }
	seg := func(m map[string]any) map[string]any { return m["segments"].(map[string]any)["0"].(map[string]any) }
	ks := func(m map[string]any) map[string]any { return m["keyslots"].(map[string]any)["0"].(map[string]any) }
	for _, tc := range []struct {
		name string
		img  []byte
		want string
	}{
		{"empty", nil, "reading header"},
		{"magic", set(l1, 0, 'X'), "no LUKS header"},
		{"version", set(l1, 6, 0, 3), "version 3"},
		{"l1 cipher", set(l1, l1CipherName, 's', 'e', 'r'), "cipher ser-xts-plain64"},
		{"l1 mode", set(l1, l1CipherMode, 'c', 'b', 'c', '-', 'e', 's', 's', 'i', 'v', 0), "cipher aes-cbc-essiv"},
		{"l1 hash", set(l1, l1HashSpec, 'm', 'd', '5', 0), "hash-spec"},
		{"l1 key bytes", set(l1, l1KeyBytes, u32(7)...), "key-bytes 7"},
		{"l1 payload", set(l1, l1PayloadOff, u32(1)...), "payload-offset"},
		{"l1 active", set(l1, l1Slots+l1SlotSize, u32(5)...), "key slot 1: active field"},
		{"l1 stripes", set(l1, l1Slots+l1SlotSize+44, u32(0)...), "key slot 1: stripes 0"},
		{"l1 too many stripes", set(l1, l1Slots+l1SlotSize+44, u32(4000)...), "key slot 1: key material"},
		{"l1 material offset", set(l1, l1Slots+l1SlotSize+40, u32(1<<30)...), "key-material-offset"},
		{"l1 iterations", set(l1, l1Slots+l1SlotSize+4, u32(0)...), "key slot 1: iterations 0"},
		{"l1 no slot", set(l1, l1Slots+l1SlotSize, u32(l1SlotDead)...), "no active key slot"},
		{"l1 digest", set(l1, l1MKDigest, 0), "no key slot opens"},
		{"l1 truncated", l1[:4100], "key slot 1: reading key material"},
		{"l2 both checksums", set(set(l2, 100, 1), 16<<10+100, 1), "checksum mismatch"},
		{"l2 hdr size", set(set(l2, l2HdrSize, 0, 0, 0, 0, 0, 0, 0x30, 0), 16<<10+l2HdrSize, 0, 0, 0, 0, 0, 0, 0x30, 0), "hdr_size"},
		{"l2 json", edit(func(m map[string]any) { m["segments"] = "x" }), "JSON metadata"},
		{"l2 requirements", edit(func(m map[string]any) {
			m["config"].(map[string]any)["requirements"] = map[string]any{"mandatory": []string{"online-reencrypt-v2"}}
		}), "online-reencrypt-v2"},
		{"l2 two segments", edit(func(m map[string]any) { m["segments"].(map[string]any)["1"] = seg(m) }), "2 segments"},
		{"l2 segment cipher", edit(func(m map[string]any) { seg(m)["encryption"] = "cipher_null-ecb" }), `encryption "cipher_null-ecb"`},
		{"l2 sector size", edit(func(m map[string]any) { seg(m)["sector_size"] = 1000 }), "sector_size 1000"},
		{"l2 segment offset", edit(func(m map[string]any) { seg(m)["offset"] = "-5" }), `offset "-5"`},
		{"l2 segment in header", edit(func(m map[string]any) { seg(m)["offset"] = "512" }), "offset 512 inside the header"},
		{"l2 iv tweak", edit(func(m map[string]any) { seg(m)["iv_tweak"] = "7" }), "iv_tweak"},
		{"l2 no digest", edit(func(m map[string]any) { m["digests"] = map[string]any{} }), "digests: none"},
		{"l2 digest salt", edit(func(m map[string]any) { m["digests"].(map[string]any)["0"].(map[string]any)["salt"] = "!!" }), "digest salt"},
		{"l2 missing slot", edit(func(m map[string]any) { m["keyslots"] = map[string]any{} }), "key slot 0, which does not exist"},
		{"l2 kdf", edit(func(m map[string]any) { ks(m)["kdf"].(map[string]any)["type"] = "scrypt" }), `key slot 0: kdf type "scrypt"`},
		{"l2 area", edit(func(m map[string]any) { ks(m)["area"].(map[string]any)["offset"] = "999999999" }), "area offset 999999999"},
		{"l2 argon2 memory", edit(func(m map[string]any) {
			ks(m)["kdf"] = map[string]any{"type": "argon2id", "time": 1, "memory": 1 << 40, "cpus": 1, "salt": ""}
		}), "argon2 memory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(bytes.NewReader(tc.img), pass)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestSecondaryHeader: a damaged primary LUKS2 header falls back to the
// secondary copy, as cryptsetup does.
func TestSecondaryHeader(t *testing.T) {
	pass := []byte("pw")
	img := format2(t, pass, testPlain(4096), luks2Opts{})
	img[l2BinSize+3] ^= 1 // JSON of the primary
	if _, err := Open(bytes.NewReader(img), pass); err != nil {
		t.Fatal(err)
	}
	clear(img[:8]) // the primary's magic too: still found by probing
	img[0], img[1], img[2], img[3], img[4], img[5], img[6], img[7] = 'L', 'U', 'K', 'S', 0xba, 0xbe, 0, 2
	if _, err := Open(bytes.NewReader(img), pass); err != nil {
		t.Fatal(err)
	}
}

// TestIVLargeSectors: with IVLargeSectors the plain64 IV counts
// SectorSize units (dm-crypt's iv_large_sectors, plain mode); without it,
// 512-byte sectors. The two views of one ciphertext differ after sector 0.
func TestIVLargeSectors(t *testing.T) {
	plain := testPlain(3 * 4096)
	img := make([]byte, 4096+len(plain))
	large := &Volume{Key: testKey, PayloadOffset: 4096, SectorSize: 4096, IVLargeSectors: true}
	encryptPayload(t, large, img, plain)
	checkPayload(t, large, img, plain)
	small := *large
	small.IVLargeSectors = false
	got := make([]byte, len(plain))
	small.NewReader(bytes.NewReader(img)).ReadAt(got, 0)
	if !bytes.Equal(got[:4096], plain[:4096]) || bytes.Equal(got[4096:8192], plain[4096:8192]) {
		t.Fatal("IV of sector 1 should be 8 without iv_large_sectors and 1 with it")
	}
	sec := make([]byte, 4096)
	if err := large.DecryptSector(sec, img[4096+2*4096:][:4096], 2); err != nil || !bytes.Equal(sec, plain[2*4096:]) {
		t.Fatalf("DecryptSector: %v", err)
	}
	if err := large.DecryptSector(sec[:512], sec[:512], 0); err == nil {
		t.Fatal("short sector accepted")
	}
}
