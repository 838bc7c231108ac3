// Package luks opens LUKS1 and LUKS2 volumes in pure Go: it reads the
// header, derives the volume key from a passphrase and says where the
// encrypted payload is and how its sectors are encrypted. The guest init
// (static Go, no cryptsetup) uses it to unlock the CVM's encrypted root
// and hands the result to device-mapper (internal/devmapper); tests on the
// host use NewReader to decrypt a payload without dm.
//
// Only what the CVM kits need is supported: cipher aes-xts-plain64 (what
// qemu-img's luks driver and cryptsetup write by default), PBKDF2 and
// Argon2 key slots, the LUKS1 anti-forensic splitter and PBKDF2 digests.
// All cryptography is the standard library's or golang.org/x/crypto's;
// this package only composes it as the LUKS on-disk format specifications
// (LUKS1 1.2.3, LUKS2 1.1.x) describe.
//
// The header is not authenticated by anything but the key slots: someone
// who can write the disk but does not know the passphrase cannot make a
// slot that opens with it, but can change the LUKS2 segment (offset,
// sector size) so the payload decrypts to garbage. XTS has no integrity
// either, so that adds nothing an attacker with write access lacks.
package luks

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"

	"golang.org/x/crypto/argon2"
)

// ErrPassphrase is returned (possibly joined with the reasons single slots
// were skipped) when no key slot yields a volume key that matches the
// header's digest.
var ErrPassphrase = errors.New("luks: no key slot opens with this passphrase")

// CipherAESXTSPlain64 is the only payload cipher supported, in dm-crypt's
// notation.
const CipherAESXTSPlain64 = "aes-xts-plain64"

// Volume is an opened LUKS volume: the volume key and the payload layout,
// everything dm-crypt's table needs.
type Volume struct {
	Version int    // 1 or 2
	UUID    string // the header's UUID, as written (with dashes)
	Cipher  string // dm-crypt cipher spec, always "aes-xts-plain64"
	Key     []byte // volume (master) key: 32 or 64 bytes
	// PayloadOffset is where the encrypted data starts on the device, in
	// bytes; PayloadSize its length in bytes, 0 meaning "to the end of
	// the device" (LUKS1 always, LUKS2 "dynamic").
	PayloadOffset int64
	PayloadSize   int64
	// SectorSize is the encryption unit in bytes (512 for LUKS1; 512 to
	// 4096 for LUKS2). The plain64 IV of a unit is its offset in 512-byte
	// sectors, unless IVLargeSectors says it counts SectorSize units
	// (dm-crypt's iv_large_sectors). LUKS never sets it: cryptsetup uses
	// it for plain mode only, and a LUKS2 volume with 4096-byte sectors
	// made by cryptsetup decrypts with IV = offset/512 (tools_test.go).
	SectorSize     int
	IVLargeSectors bool
}

// Wipe overwrites the volume key (best effort: Go may have copied it).
func (v *Volume) Wipe() { clear(v.Key) }

// limits bound the work a header can ask for. Open uses the formats'
// own maxima; the fuzz target uses small ones so a mutated header cannot
// stall it.
type limits struct {
	iterations uint64 // PBKDF2 iterations
	argon2Time uint64 // Argon2 passes
	memoryKiB  uint64 // Argon2 memory
}

var specLimits = limits{
	iterations: math.MaxUint32,
	argon2Time: math.MaxUint32,
	memoryKiB:  4 << 20, // 4 GiB, LUKS2's (and cryptsetup's) maximum
}

// Open reads the LUKS header at the start of r and unlocks it with
// passphrase (the exact bytes; a key file's trailing newline counts, as
// with cryptsetup --key-file).
func Open(r io.ReaderAt, passphrase []byte) (*Volume, error) {
	return open(r, passphrase, specLimits)
}

func open(r io.ReaderAt, passphrase []byte, lim limits) (*Volume, error) {
	var head [8]byte
	if _, err := r.ReadAt(head[:], 0); err != nil {
		return nil, fmt.Errorf("luks: reading header: %w", err)
	}
	if !bytes.Equal(head[:6], magic1) {
		return nil, errors.New("luks: no LUKS header (magic)")
	}
	switch v := binary.BigEndian.Uint16(head[6:]); v {
	case 1:
		return open1(r, passphrase, lim)
	case 2:
		return open2(r, passphrase, lim)
	default:
		return nil, fmt.Errorf("luks: header version %d not supported", v)
	}
}

var (
	magic1 = []byte("LUKS\xba\xbe") // primary header (both versions)
	magic2 = []byte("SKUL\xba\xbe") // LUKS2 secondary header
)

// newHash maps a LUKS hash name to its constructor.
func newHash(name string) (func() hash.Hash, error) {
	switch name {
	case "sha1":
		return sha1.New, nil
	case "sha256":
		return sha256.New, nil
	case "sha384":
		return sha512.New384, nil
	case "sha512":
		return sha512.New, nil
	}
	return nil, fmt.Errorf("hash %q not supported", name)
}

// pbkdf2Key derives n bytes. crypto/pbkdf2 takes the password as a string,
// a copy we cannot wipe; the derived keys it protects are wiped by callers.
func pbkdf2Key(h func() hash.Hash, pass, salt []byte, iter uint64, n int, lim limits) ([]byte, error) {
	if iter == 0 || iter > lim.iterations || iter > math.MaxInt32 {
		return nil, fmt.Errorf("iterations %d out of range", iter)
	}
	return pbkdf2.Key(h, string(pass), salt, int(iter), n)
}

// argon2Key derives n bytes with Argon2i or Argon2id (memory in KiB).
func argon2Key(id bool, pass, salt []byte, time, memKiB, cpus uint64, n int, lim limits) ([]byte, error) {
	switch {
	case time == 0 || time > lim.argon2Time:
		return nil, fmt.Errorf("argon2 time %d out of range", time)
	case memKiB < 8*cpus || memKiB > lim.memoryKiB:
		return nil, fmt.Errorf("argon2 memory %d KiB out of range", memKiB)
	case cpus == 0 || cpus > 255:
		return nil, fmt.Errorf("argon2 cpus %d out of range", cpus)
	}
	if id {
		return argon2.IDKey(pass, salt, uint32(time), uint32(memKiB), uint8(cpus), uint32(n)), nil
	}
	return argon2.Key(pass, salt, uint32(time), uint32(memKiB), uint8(cpus), uint32(n)), nil
}

// afMerge undoes the anti-forensic split (LUKS1 spec §2.4): the key is
// the last stripe XORed with the diffused XOR chain of all earlier ones.
func afMerge(split []byte, keyLen, stripes int, h func() hash.Hash) []byte {
	d := make([]byte, keyLen)
	for i := 0; i < stripes-1; i++ {
		subtle.XORBytes(d, d, split[i*keyLen:(i+1)*keyLen])
		diffuse(d, h)
	}
	key := make([]byte, keyLen)
	subtle.XORBytes(key, d, split[(stripes-1)*keyLen:stripes*keyLen])
	clear(d)
	return key
}

// diffuse replaces each digest-sized block i of d (the last one possibly
// shorter) with H(be32(i) || block), truncated to the block's length.
func diffuse(d []byte, newH func() hash.Hash) {
	h := newH()
	var idx [4]byte
	var sum []byte
	for i, off := 0, 0; off < len(d); i, off = i+1, off+h.Size() {
		end := min(off+h.Size(), len(d))
		h.Reset()
		binary.BigEndian.PutUint32(idx[:], uint32(i))
		h.Write(idx[:])
		h.Write(d[off:end])
		sum = h.Sum(sum[:0])
		copy(d[off:end], sum)
	}
}

// slot is one key slot, whatever the version: how to derive the slot
// key, where its split key material is and how to merge it.
type slot struct {
	name    string // "key slot 3"
	derive  func(pass []byte, n int) ([]byte, error)
	keyLen  int   // volume key length (bytes)
	areaOff int64 // key material offset on the device (bytes)
	areaLen int64 // bytes available there
	slotKey int   // length of the key that encrypts the area
	stripes int
	afHash  func() hash.Hash
}

// unlock tries slot with passphrase and returns the candidate volume key
// (the caller checks the digest).
func (s slot) unlock(r io.ReaderAt, pass []byte) ([]byte, error) {
	need := int64(s.keyLen) * int64(s.stripes)
	need = (need + 511) &^ 511 // whole 512-byte sectors
	if need > s.areaLen {
		return nil, fmt.Errorf("%s: key material (%d bytes) larger than its area (%d)", s.name, need, s.areaLen)
	}
	if s.slotKey != 32 && s.slotKey != 64 {
		return nil, fmt.Errorf("%s: area key size %d not supported", s.name, s.slotKey)
	}
	buf := make([]byte, need)
	if _, err := r.ReadAt(buf, s.areaOff); err != nil {
		return nil, fmt.Errorf("%s: reading key material: %w", s.name, err)
	}
	k, err := s.derive(pass, s.slotKey)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	c, err := newXTS(k)
	clear(k)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	// Key material is always encrypted in 512-byte sectors, IV from 0.
	for i := int64(0); i < need; i += 512 {
		c.Decrypt(buf[i:i+512], buf[i:i+512], uint64(i/512))
	}
	key := afMerge(buf, s.keyLen, s.stripes, s.afHash)
	clear(buf)
	return key, nil
}

// tryAll returns the first key from slots that check accepts, or
// ErrPassphrase joined with the reasons slots could not be tried.
func tryAll(r io.ReaderAt, pass []byte, slots []slot, check func(key []byte) (bool, error)) ([]byte, error) {
	var errs []error
	for _, s := range slots {
		key, err := s.unlock(r, pass)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ok, err := check(key)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
		}
		if ok {
			return key, nil
		}
		clear(key)
	}
	return nil, errors.Join(append([]error{ErrPassphrase}, errs...)...)
}

// cstring returns b up to its first NUL.
func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
