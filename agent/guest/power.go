package guest

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Linux input event codes.
const (
	evKey         = 1
	keyPower      = 116
	inputEventLen = 24 // struct input_event on 64-bit: timeval, type, code, value
)

// WatchPowerButton powers the guest off when the ACPI power button is
// pressed (QMP system_powerdown), for minimal guests that run no acpid or
// systemd-logind: it reads every /dev/input/event* device (the ACPI
// "button" driver reports KEY_POWER there) and on a press syncs and calls
// reboot(POWER_OFF). It returns when ctx ends.
func WatchPowerButton(ctx context.Context, log *slog.Logger) {
	seen := map[string]bool{}
	pressed := make(chan string, 1)
	for ctx.Err() == nil {
		devs, _ := filepath.Glob("/dev/input/event*")
		for _, d := range devs {
			if seen[d] {
				continue
			}
			f, err := os.Open(d)
			if err != nil {
				continue
			}
			seen[d] = true
			go func(dev string, f *os.File) {
				defer f.Close()
				buf := make([]byte, inputEventLen)
				for {
					if _, err := io.ReadFull(f, buf); err != nil {
						return
					}
					typ := binary.LittleEndian.Uint16(buf[16:])
					code := binary.LittleEndian.Uint16(buf[18:])
					val := int32(binary.LittleEndian.Uint32(buf[20:]))
					if typ == evKey && code == keyPower && val == 1 {
						select {
						case pressed <- dev:
						default:
						}
					}
				}
			}(d, f)
		}
		select {
		case <-ctx.Done():
			return
		case dev := <-pressed:
			log.Warn("power button pressed: powering off", "device", dev)
			syscall.Sync()
			if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
				log.Error("power off failed", "err", err)
			}
		case <-time.After(2 * time.Second): // look for devices that appeared late
		}
	}
}
