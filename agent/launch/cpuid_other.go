//go:build !amd64

package launch

func cpuidSEV() (eax, ebx uint32, ok bool) { return 0, 0, false }
