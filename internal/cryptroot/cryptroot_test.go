package cryptroot

import (
	"strings"
	"testing"

	"github.com/flarekit/terraform-provider-flare/internal/luks"
)

func TestCryptTable(t *testing.T) {
	key := make([]byte, 64)
	for _, tc := range []struct {
		name string
		vol  luks.Volume
		size int64
		off  uint64
		len  uint64
		err  string
	}{
		{"luks1 to the end", luks.Volume{PayloadOffset: 4040 * 512, SectorSize: 512}, 4040*512 + 1<<20, 4040, 2048, ""},
		{"luks2 4k, tail cut", luks.Volume{PayloadOffset: 16 << 20, SectorSize: 4096}, 16<<20 + 10000, 32768, 16, ""},
		{"luks2 fixed size", luks.Volume{PayloadOffset: 16 << 20, PayloadSize: 8192, SectorSize: 512}, 32 << 20, 32768, 16, ""},
		{"fixed size too big", luks.Volume{PayloadOffset: 16 << 20, PayloadSize: 32 << 20, SectorSize: 512}, 32 << 20, 0, 0, "beyond"},
		{"no payload", luks.Volume{PayloadOffset: 16 << 20, SectorSize: 4096}, 16<<20 + 100, 0, 0, "no payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.vol.Cipher, tc.vol.Key = luks.CipherAESXTSPlain64, key
			c, err := crypt(&tc.vol, tc.size)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || c.Offset != tc.off || c.Length != tc.len || c.SectorSize != tc.vol.SectorSize {
				t.Fatalf("%v %+v", err, c)
			}
		})
	}
	if unixMajor(0xfd05) != 253 || unixMinor(0xfd05) != 5 {
		t.Fatal("dev_t decoding")
	}
}
