//go:build !linux

package atomicfile

// ReplaceDir moves the directory dir to final; an existing final is moved
// aside first, so for a moment neither exists (no atomic exchange here).
func ReplaceDir(dir, final string) error {
	return replaceDirTwoSteps(dir, final)
}
