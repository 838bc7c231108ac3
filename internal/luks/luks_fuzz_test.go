package luks

import (
	"bytes"
	"testing"
)

// FuzzOpen feeds Open damaged headers (the host controls the disk): it
// must return an error, never panic or allocate without bound. The KDF
// costs are capped low so each input stays fast; key slots and digests
// are otherwise checked exactly as Open does.
func FuzzOpen(f *testing.F) {
	pass := []byte("pw")
	plain := testPlain(4096)
	f.Add(format1(f, pass, plain, 1000, 2))
	f.Add(format2(f, pass, plain, luks2Opts{stripes: 1}))
	f.Add(format2(f, pass, plain, luks2Opts{argon2: true, sectorSize: 4096, stripes: 1}))
	f.Fuzz(func(t *testing.T, img []byte) {
		v, err := open(bytes.NewReader(img), pass, limits{iterations: 2000, argon2Time: 4, memoryKiB: 256})
		if err != nil {
			return
		}
		if len(v.Key) != 32 && len(v.Key) != 64 || v.SectorSize < 512 || v.PayloadOffset <= 0 {
			t.Fatalf("opened an inconsistent volume: %+v", v)
		}
		buf := make([]byte, 100)
		v.NewReader(bytes.NewReader(img)).ReadAt(buf, 3)
	})
}
