package devmapper

import (
	"errors"
	"fmt"
	"strconv"
)

// Crypt describes a dm-crypt mapping (Documentation/admin-guide/
// device-mapper/dm-crypt.rst): Length 512-byte sectors of Device,
// starting Offset sectors in, encrypted with Cipher under Key.
type Crypt struct {
	Cipher         string // e.g. "aes-xts-plain64"
	Key            []byte
	Device         string // "major:minor" or a path
	Offset, Length uint64 // in 512-byte sectors
	SectorSize     int    // encryption unit: 512 (or 0) up to 4096
	IVLargeSectors bool   // plain64 IV counts SectorSize units
	ReadOnly       bool
}

func (c Crypt) check() error {
	switch {
	case c.Cipher == "" || len(c.Key) == 0 || c.Device == "":
		return errors.New("devmapper: crypt needs a cipher, a key and a device")
	case c.SectorSize != 0 && (c.SectorSize < 512 || c.SectorSize > 4096 || c.SectorSize&(c.SectorSize-1) != 0):
		return fmt.Errorf("devmapper: crypt sector size %d", c.SectorSize)
	case c.Length == 0 || c.Length%uint64(max(c.SectorSize, 512)/512) != 0:
		return fmt.Errorf("devmapper: crypt length %d sectors is not a whole number of %d-byte sectors", c.Length, c.SectorSize)
	}
	for _, s := range []string{c.Cipher, c.Device} {
		for _, r := range s {
			if r <= ' ' || r == 0x7f {
				return fmt.Errorf("devmapper: crypt parameter %q has a space or control character", s)
			}
		}
	}
	return nil
}

// params is the crypt target's parameter line
//
//	<cipher> <key> <iv_offset> <device> <offset> [<#opt> <opt>...]
//
// built in one byte slice the caller wipes (key is the hex key or a
// keyring reference).
func (c Crypt) params(key []byte) []byte {
	p := make([]byte, 0, 256)
	p = append(p, c.Cipher...)
	p = append(p, ' ')
	p = append(p, key...)
	p = append(p, " 0 "...) // iv_offset: LUKS segments start their IVs at 0
	p = append(p, c.Device...)
	p = append(p, ' ')
	p = strconv.AppendUint(p, c.Offset, 10)
	var opts []string
	if c.SectorSize > 512 {
		opts = append(opts, "sector_size:"+strconv.Itoa(c.SectorSize))
	}
	if c.IVLargeSectors {
		opts = append(opts, "iv_large_sectors")
	}
	if len(opts) > 0 {
		p = append(p, ' ')
		p = strconv.AppendInt(p, int64(len(opts)), 10)
		for _, o := range opts {
			p = append(p, ' ')
			p = append(p, o...)
		}
	}
	return p
}
