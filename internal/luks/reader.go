package luks

import (
	"crypto/aes"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/xts"
)

func newXTS(key []byte) (*xts.Cipher, error) {
	if len(key) != 32 && len(key) != 64 {
		return nil, fmt.Errorf("aes-xts key of %d bytes", len(key))
	}
	return xts.NewCipher(aes.NewCipher, key)
}

// ivSector is the plain64 IV of payload sector n (in SectorSize units):
// dm-crypt counts 512-byte sectors unless iv_large_sectors is set.
func (v *Volume) ivSector(n uint64) uint64 {
	if v.IVLargeSectors {
		return n
	}
	return n * uint64(v.SectorSize/512)
}

// DecryptSector decrypts payload sector n (counted in SectorSize units
// from PayloadOffset) from src into dst; both are SectorSize long and
// may be the same slice.
func (v *Volume) DecryptSector(dst, src []byte, n uint64) error {
	if v.SectorSize < 512 || len(src) != v.SectorSize || len(dst) != v.SectorSize {
		return fmt.Errorf("luks: sector of %d bytes, want %d", len(src), v.SectorSize)
	}
	c, err := newXTS(v.Key)
	if err != nil {
		return err
	}
	c.Decrypt(dst, src, v.ivSector(n))
	return nil
}

// NewReader returns the decrypted payload of the volume on dev, the view
// dm-crypt gives the guest (for host-side checks; it re-keys AES on
// every call to ReadAt and is not fast).
func (v *Volume) NewReader(dev io.ReaderAt) io.ReaderAt {
	return &reader{v: v, dev: dev}
}

type reader struct {
	v   *Volume
	dev io.ReaderAt
}

func (r *reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("luks: negative offset")
	}
	if r.v.PayloadSize > 0 {
		if off >= r.v.PayloadSize {
			return 0, io.EOF
		}
		p = p[:min(int64(len(p)), r.v.PayloadSize-off)]
	}
	c, err := newXTS(r.v.Key)
	if err != nil {
		return 0, err
	}
	ss := int64(r.v.SectorSize)
	buf := make([]byte, ss)
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		sec := pos / ss
		got, err := r.dev.ReadAt(buf, r.v.PayloadOffset+sec*ss)
		if got < len(buf) {
			if err == nil || err == io.EOF {
				err = io.EOF // a partial sector cannot be decrypted
			}
			return n, err
		}
		c.Decrypt(buf, buf, r.v.ivSector(uint64(sec)))
		n += copy(p[n:], buf[pos-sec*ss:])
	}
	clear(buf)
	if r.v.PayloadSize > 0 && off+int64(n) == r.v.PayloadSize {
		return n, io.EOF
	}
	return n, nil
}
