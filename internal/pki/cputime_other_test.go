//go:build !unix

package pki

import "time"

func processCPU() time.Duration { return 0 }
