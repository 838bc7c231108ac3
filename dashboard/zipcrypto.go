package dashboard

// ZipCrypto: the traditional PKWARE encryption of PKZIP (APPNOTE.TXT §6.1),
// which NVFlare's Dashboard uses for kit downloads (`zip -P <pin>`), so that
// `unzip -P <pin>` opens ours too. It is a weak legacy cipher, kept only for
// that compatibility: the PIN protects a kit in transit to a browser no
// better than NVFlare's does. No module on the Go module proxy reachable
// here provides a ZipCrypto writer (github.com/yeka/zip is refused by the
// proxy), so this is its stream cipher on top of archive/zip's CreateRaw.

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"crypto/rand"
	"hash/crc32"
	"io"
	"io/fs"
	"time"
)

// zipCrypto holds the cipher's three keys.
type zipCrypto struct{ k0, k1, k2 uint32 }

func crc32Update(crc uint32, b byte) uint32 {
	return crc32.IEEETable[byte(crc)^b] ^ (crc >> 8)
}

func newZipCrypto(password []byte) *zipCrypto {
	z := &zipCrypto{0x12345678, 0x23456789, 0x34567890}
	for _, b := range password {
		z.update(b)
	}
	return z
}

func (z *zipCrypto) update(b byte) {
	z.k0 = crc32Update(z.k0, b)
	z.k1 = (z.k1+(z.k0&0xff))*134775813 + 1
	z.k2 = crc32Update(z.k2, byte(z.k1>>24))
}

func (z *zipCrypto) stream() byte {
	t := (z.k2 | 2) & 0xffff
	return byte((t * (t ^ 1)) >> 8)
}

func (z *zipCrypto) encrypt(buf []byte) {
	for i, p := range buf {
		buf[i] = p ^ z.stream()
		z.update(p)
	}
}

func (z *zipCrypto) decrypt(buf []byte) {
	for i, c := range buf {
		p := c ^ z.stream()
		buf[i] = p
		z.update(p)
	}
}

// zipEntry is one file or directory (Name ending in "/") of an archive.
type zipEntry struct {
	Name string
	Mode fs.FileMode
	Data []byte
}

// writeEncryptedZip writes entries as a zip whose files are deflated and
// ZipCrypto-encrypted with password (directories are stored plain, as
// `zip -P` does).
func writeEncryptedZip(w io.Writer, entries []zipEntry, password string, modified time.Time) error {
	zw := zip.NewWriter(w)
	for _, e := range entries {
		fh := &zip.FileHeader{Name: e.Name, Modified: modified}
		if len(e.Name) > 0 && e.Name[len(e.Name)-1] == '/' {
			fh.SetMode(fs.ModeDir | 0o755)
			if _, err := zw.CreateHeader(fh); err != nil {
				return err
			}
			continue
		}
		fh.SetMode(e.Mode)
		var comp bytes.Buffer
		fw, err := flate.NewWriter(&comp, flate.BestCompression)
		if err != nil {
			return err
		}
		if _, err := fw.Write(e.Data); err != nil {
			return err
		}
		if err := fw.Close(); err != nil {
			return err
		}
		crc := crc32.ChecksumIEEE(e.Data)
		// The 12-byte encryption header: 11 random bytes and the CRC's high
		// byte (the check byte when no data descriptor follows), encrypted
		// in the same stream as the data.
		body := make([]byte, 12+comp.Len())
		if _, err := rand.Read(body[:11]); err != nil {
			return err
		}
		body[11] = byte(crc >> 24)
		copy(body[12:], comp.Bytes())
		newZipCrypto([]byte(password)).encrypt(body)

		fh.Method = zip.Deflate
		fh.Flags |= 0x1 // encrypted; no 0x8: sizes and CRC are in the local header
		fh.CRC32 = crc
		fh.CompressedSize64 = uint64(len(body))
		fh.UncompressedSize64 = uint64(len(e.Data))
		raw, err := zw.CreateRaw(fh)
		if err != nil {
			return err
		}
		if _, err := raw.Write(body); err != nil {
			return err
		}
	}
	return zw.Close()
}
