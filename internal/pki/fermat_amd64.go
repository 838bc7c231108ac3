//go:build amd64 && !purego

package pki

import "golang.org/x/sys/cpu"

// useADX selects montSqrADX (fermat_amd64.s): MULX and two carry chains
// make the squaring 1.5 times faster than the Go code.
var useADX = cpu.X86.HasADX && cpu.X86.HasBMI2

// montSqrADX squares x (< n) into t and reduces it: t[16:] with top above
// it is x²·2^-1024 mod n, below 2n. Written by gen_fermat_amd64.go.
//
//go:noescape
func montSqrADX(t *[32]uint64, x, n *[16]uint64, nInv uint64) (top uint64)
