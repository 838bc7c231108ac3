package cryptroot

import (
	"fmt"

	"github.com/flarekit/terraform-provider-flare/internal/devmapper"
	"github.com/flarekit/terraform-provider-flare/internal/luks"
)

// crypt is the dm-crypt mapping of vol on a device of size bytes.
func crypt(vol *luks.Volume, size int64) (devmapper.Crypt, error) {
	ss := int64(max(vol.SectorSize, 512))
	length := size - vol.PayloadOffset
	if vol.PayloadSize > 0 {
		if vol.PayloadSize > length {
			return devmapper.Crypt{}, fmt.Errorf("payload (%d bytes at %d) beyond the device's end (%d)", vol.PayloadSize, vol.PayloadOffset, size)
		}
		length = vol.PayloadSize
	}
	length -= length % ss // dm-crypt maps whole encryption sectors only
	if length <= 0 {
		return devmapper.Crypt{}, fmt.Errorf("no payload: device of %d bytes, payload at %d", size, vol.PayloadOffset)
	}
	return devmapper.Crypt{
		Cipher: vol.Cipher, Key: vol.Key, Offset: uint64(vol.PayloadOffset / 512), Length: uint64(length / 512),
		SectorSize: vol.SectorSize, IVLargeSectors: vol.IVLargeSectors,
	}, nil
}

// glibc's dev_t encoding, which Stat_t.Rdev uses on Linux.
func unixMajor(dev uint64) uint64 { return (dev>>8)&0xfff | (dev>>32)&^0xfff }
func unixMinor(dev uint64) uint64 { return dev&0xff | (dev>>12)&^0xff }
