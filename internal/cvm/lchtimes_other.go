//go:build !unix

package cvm

import "time"

// lchtimes is a no-op where symlink times cannot be set; the image tools
// that consume the staging tree run on Linux anyway.
func lchtimes(string, time.Time) error { return nil }
