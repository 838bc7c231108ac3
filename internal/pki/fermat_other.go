//go:build !amd64 || purego

package pki

const useADX = false

func montSqrADX(t *[32]uint64, x, n *[16]uint64, nInv uint64) (top uint64) {
	panic("montSqrADX: amd64 only")
}
