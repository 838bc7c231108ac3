package flareinit

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/flarekit/terraform-provider-flare/internal/guestconfig"
)

// loadModules loads the initrd's modules in order. .ko.xz files go to the
// kernel as they are (MODULE_DECOMPRESS in Debian's 6.12 kernels).
func loadModules(log *slog.Logger, mods []guestconfig.Module) error {
	for _, m := range mods {
		err := loadModule(m.Path)
		switch {
		case err == nil:
		case m.Optional:
			log.Info("optional module not loaded", "module", m.Path, "err", err)
		default:
			return fmt.Errorf("load module %s: %w", m.Path, err)
		}
	}
	return nil
}

func loadModule(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if strings.HasSuffix(p, ".xz") || strings.HasSuffix(p, ".zst") || strings.HasSuffix(p, ".gz") {
		flags |= unix.MODULE_INIT_COMPRESSED_FILE
	}
	if err := unix.FinitModule(int(f.Fd()), "", flags); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}
