//go:build linux

// Package cryptroot maps a LUKS volume with dm-crypt, the part of
// `cryptsetup open` the guest init needs: luks opens the header,
// devmapper makes the mapping. The result is /dev/mapper/<name>.
package cryptroot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/devmapper"
	"github.com/flarekit/terraform-provider-flare/internal/luks"
)

// Unlock opens the LUKS volume on the block device with passphrase and
// maps it (OpenCrypt). The volume key is wiped before it returns.
func Unlock(ctx context.Context, name, device string, passphrase []byte) (string, error) {
	f, err := os.Open(device)
	if err != nil {
		return "", err
	}
	vol, err := luks.Open(f, passphrase)
	f.Close()
	if err != nil {
		return "", fmt.Errorf("%s: %w", device, err)
	}
	defer vol.Wipe()
	return OpenCrypt(ctx, name, device, vol)
}

// OpenCrypt maps the payload of vol, found on the block device, as
// /dev/mapper/<name> and returns that path. The dm uuid is cryptsetup's
// (CRYPT-LUKS<v>-<uuid>-<name>), so lsblk and cryptsetup status know it.
func OpenCrypt(ctx context.Context, name, device string, vol *luks.Volume) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(device, &st); err != nil {
		return "", fmt.Errorf("cryptroot: %w", err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
		return "", fmt.Errorf("cryptroot: %s is not a block device", device)
	}
	size, err := deviceSize(device)
	if err != nil {
		return "", err
	}
	c, err := crypt(vol, size)
	if err != nil {
		return "", fmt.Errorf("cryptroot: %s: %w", device, err)
	}
	// major:minor rather than the path: the kernel then needs no path
	// lookup, and the table says exactly which disk it uses.
	c.Device = fmt.Sprintf("%d:%d", unixMajor(uint64(st.Rdev)), unixMinor(uint64(st.Rdev)))
	uuid := fmt.Sprintf("CRYPT-LUKS%d-%s-%s", vol.Version, strings.ReplaceAll(vol.UUID, "-", ""), name)
	if _, err := devmapper.CreateCrypt(name, uuid, c); err != nil {
		return "", err
	}
	return filepath.Join(devmapper.MapperDir, name), nil
}

func deviceSize(device string) (int64, error) {
	f, err := os.Open(device)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}

// Close removes the mapping name, retrying while it is still busy (a
// file system just unmounted) until ctx ends.
func Close(ctx context.Context, name string) error {
	for {
		err := devmapper.Remove(name)
		if err == nil || !errors.Is(err, syscall.EBUSY) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}
