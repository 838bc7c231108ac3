// Package kmod picks kernel modules for an initrd: the files that make a
// set of modules available, dependencies first, from a kernel's
// modules.dep and modules.builtin (as depmod writes them).
package kmod

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Module is a module file to load.
type Module struct {
	Name string // normalised: dm_crypt
	Path string // absolute path of the .ko, .ko.xz, .ko.zst or .ko.gz
}

// Name normalises a module name or file name the way the kernel does
// (dashes and underscores are the same; no directory or extension).
func Name(s string) string {
	s = filepath.Base(s)
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	return strings.ReplaceAll(s, "-", "_")
}

// Resolve returns, in load order, the module files that make names
// available in the kernel whose modules live in dir (/lib/modules/<ver>).
// Built-in modules need no file and are skipped; a name that is neither
// built in nor in modules.dep is an error naming it.
func Resolve(dir string, names []string) ([]Module, error) {
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[Name(l)] = true
		}
	}
	paths := map[string]string{}
	deps := map[string][]string{}
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("kernel modules: %w (run depmod for this kernel)", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		mod, ds, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n := Name(mod)
		p := mod
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, mod)
		}
		paths[n] = p
		for _, d := range strings.Fields(ds) {
			deps[n] = append(deps[n], Name(d))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kernel modules: modules.dep: %w", err)
	}
	var order []Module
	seen := map[string]bool{}
	var visit func(n string) error
	visit = func(n string) error {
		if seen[n] || builtin[n] {
			return nil
		}
		seen[n] = true
		// modules.dep lists the deepest dependency last.
		ds := deps[n]
		for i := len(ds) - 1; i >= 0; i-- {
			if err := visit(ds[i]); err != nil {
				return err
			}
		}
		p, ok := paths[n]
		if !ok {
			return fmt.Errorf("kernel module %s is neither built into the kernel of %s nor in its modules.dep", n, dir)
		}
		order = append(order, Module{Name: n, Path: p})
		return nil
	}
	for _, n := range names {
		if err := visit(Name(n)); err != nil {
			return nil, err
		}
	}
	return order, nil
}
