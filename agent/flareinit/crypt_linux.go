package flareinit

import (
	"context"

	"github.com/flarekit/terraform-provider-flare/internal/cryptroot"
)

// openCrypt opens the LUKS container on dev with the released key and maps
// it as /dev/mapper/<name> (pure Go: no cryptsetup in the initrd).
func openCrypt(ctx context.Context, name, dev string, key []byte) (string, error) {
	return cryptroot.Unlock(ctx, name, dev, key)
}

func closeCrypt(name string) { _ = cryptroot.Close(context.Background(), name) }
