//go:build !linux

package devmapper

import "errors"

// ErrUnsupported: device-mapper is Linux only.
var ErrUnsupported = errors.New("devmapper: only on Linux")

// Device is a device-mapper device (see dm_linux.go).
type Device struct {
	Name         string
	Major, Minor uint32
	OpenCount    int
	Active       bool
	ReadOnly     bool
	Suspended    bool
}

func Version() ([3]uint32, error) { return [3]uint32{}, ErrUnsupported }
func Create(name, uuid string, readOnly bool, t ...Target) (Device, error) {
	return Device{}, ErrUnsupported
}
func CreateCrypt(name, uuid string, c Crypt) (Device, error) { return Device{}, ErrUnsupported }
func Status(name string) (Device, error)                     { return Device{}, ErrUnsupported }
func Table(name string) ([]Target, error)                    { return nil, ErrUnsupported }
func Remove(name string) error                               { return ErrUnsupported }
