package cvm

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func checkFlattened(t *testing.T, dest string, cfg *ImageConfig) {
	t.Helper()
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(dest, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
		}
		return string(b)
	}
	gone := func(p string) {
		if _, err := os.Lstat(filepath.Join(dest, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s should be gone (err %v)", p, err)
		}
	}
	if got := read("etc/passwd"); !strings.Contains(got, "flare:x:1000") {
		t.Errorf("etc/passwd from the upper layer expected, got %q", got)
	}
	gone("removeme.txt")  // whiteout
	gone("opt/old/a.txt") // opaque dir
	gone("opt/old/sub")   // opaque dir, a subdirectory
	read("opt/old/c.txt") // made by the opaque layer itself
	read("opt/old/d.txt")
	if fi, err := os.Stat(filepath.Join(dest, "opt/fresh")); err != nil || !fi.IsDir() {
		t.Errorf("opt/fresh: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dest, "opt/fresh/.wh..wh..opq")); err == nil {
		t.Error("a whiteout marker was materialized")
	}
	read("with space/quote\"d") // odd names survive
	if l, err := os.Readlink(filepath.Join(dest, "bin/link")); err != nil || l != "sh" {
		t.Errorf("bin/link: %q %v", l, err)
	}
	if l, err := os.Readlink(filepath.Join(dest, "etc/alt")); err != nil || l != "/etc/passwd" {
		t.Errorf("etc/alt: %q %v", l, err)
	}
	a, _ := os.Stat(filepath.Join(dest, "bin/sh"))
	b, _ := os.Stat(filepath.Join(dest, "bin/hl"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Errorf("bin/hl is not a hardlink of bin/sh")
	} else if a.Sys().(*syscall.Stat_t).Nlink != 2 {
		t.Errorf("bin/sh has %d links", a.Sys().(*syscall.Stat_t).Nlink)
	}
	if a != nil && a.Mode().Perm() != 0o755 {
		t.Errorf("bin/sh mode %v", a.Mode())
	}
	if fi, err := os.Stat(filepath.Join(dest, "etc/passwd")); err != nil || !fi.ModTime().Equal(layerTime) {
		t.Errorf("etc/passwd mtime %v, want %v", fi.ModTime(), layerTime)
	}
	if cfg.WorkingDir != "/workspace" || !reflect.DeepEqual(cfg.Entrypoint, []string{testEntrypoint, "--verify"}) ||
		!reflect.DeepEqual(cfg.Cmd, []string{"--site", "x"}) || len(cfg.Env) != 2 || cfg.Architecture != "amd64" ||
		!strings.HasPrefix(cfg.ConfigDigest, "sha256:") {
		t.Errorf("image config %+v", cfg)
	}
}

func TestFlattenDockerSave(t *testing.T) {
	for _, gzipped := range []bool{false, true} {
		t.Run(map[bool]string{false: "tar", true: "tar.gz"}[gzipped], func(t *testing.T) {
			d := t.TempDir()
			arch := writeDockerSave(t, d, testLayers(t), gzipped)
			if err := InspectArchive(arch); err != nil {
				t.Fatalf("InspectArchive: %v", err)
			}
			dest := filepath.Join(d, "rootfs")
			cfg, err := Flatten(context.Background(), arch, dest)
			if err != nil {
				t.Fatal(err)
			}
			checkFlattened(t, dest, cfg)
			if !reflect.DeepEqual(cfg.RepoTags, []string{"flare/test:latest"}) {
				t.Errorf("repo tags %v", cfg.RepoTags)
			}
			// Only the decompressed copy's directory sees temp files; none remain.
			left, _ := filepath.Glob(filepath.Join(d, "docker-archive-*"))
			if len(left) > 0 {
				t.Errorf("temp files left: %v", left)
			}
		})
	}
}

func TestFlattenOCILayout(t *testing.T) {
	d := t.TempDir()
	arch := writeOCILayout(t, d, testLayers(t))
	if err := InspectArchive(arch); err != nil {
		t.Fatalf("InspectArchive: %v", err)
	}
	dest := filepath.Join(d, "rootfs")
	cfg, err := Flatten(context.Background(), arch, dest)
	if err != nil {
		t.Fatal(err)
	}
	checkFlattened(t, dest, cfg)
}

// docker save writes a layer shared with another image as a symlink.
func TestFlattenSymlinkedLayer(t *testing.T) {
	d := t.TempDir()
	l := testLayers(t)
	extra := makeTar(t, []tarEntry{file("extra.txt", "x\n", 0o644)})
	cfg := imageConfigJSON(t, "amd64")
	man := `[{"Config":"c.json","RepoTags":null,"Layers":["a/layer.tar","b/layer.tar","c/layer.tar"]}]`
	arch := filepath.Join(d, "img.tar")
	os.WriteFile(arch, makeTar(t, []tarEntry{
		file("a/layer.tar", string(l[0]), 0o644),
		file("x/layer.tar", string(l[1]), 0o644),
		symlink("b/layer.tar", "../x/layer.tar"),
		file("c/layer.tar", string(extra), 0o644),
		file("c.json", string(cfg), 0o644),
		file("manifest.json", man, 0o644),
	}), 0o644)
	dest := filepath.Join(d, "rootfs")
	ic, err := Flatten(context.Background(), arch, dest)
	if err != nil {
		t.Fatal(err)
	}
	checkFlattened(t, dest, ic)
	if _, err := os.Stat(filepath.Join(dest, "extra.txt")); err != nil {
		t.Error(err)
	}
}

func TestFlattenRefusesTraversal(t *testing.T) {
	outside := t.TempDir()
	cases := map[string][]tarEntry{
		"dotdot":          {file("../evil", "x", 0o644)},
		"dotdot inside":   {dir("a/", 0o755), file("a/../../evil", "x", 0o644)},
		"absolute":        {file("/evil", "x", 0o644)},
		"hardlink out":    {hardlink("hl", "../../etc/passwd")},
		"hardlink abs":    {hardlink("hl", "/etc/passwd")},
		"symlink abs dir": {symlink("lnk", outside), file("lnk/evil", "x", 0o644)},
		"symlink rel dir": {symlink("lnk", "../../../../../../../.."+outside), file("lnk/evil", "x", 0o644)},
		"whiteout out":    {file("../.wh.evil", "", 0o644)},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			arch := writeDockerSave(t, d, [][]byte{makeTar(t, entries)}, false)
			_, err := Flatten(context.Background(), arch, filepath.Join(d, "rootfs"))
			var pe *PathError
			if !errors.As(err, &pe) {
				t.Fatalf("want a PathError, got %v", err)
			}
			if !strings.Contains(err.Error(), "path traversal") {
				t.Errorf("unclear error: %v", err)
			}
			t.Log(err)
			if _, err := os.Lstat(filepath.Join(outside, "evil")); err == nil {
				t.Fatal("a file was written outside the staging directory")
			}
		})
	}
}

func TestInspectArchiveErrors(t *testing.T) {
	d := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(d, name)
		os.WriteFile(p, data, 0o644)
		return p
	}
	cases := map[string]struct {
		path string
		want string
	}{
		"not tar":      {write("junk", []byte("this is not a tar archive at all, just text; long enough to fill a block?")), "not a readable tar"},
		"no manifest":  {write("nomani.tar", makeTar(t, []tarEntry{file("x", "y", 0o644)})), "no manifest.json"},
		"two images":   {write("two.tar", makeTar(t, []tarEntry{file("manifest.json", `[{"Config":"a","Layers":["l"]},{"Config":"b","Layers":["l"]}]`, 0o644)})), "save exactly one image"},
		"zstd":         {write("z.tar.zst", []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0}), "zstd"},
		"empty":        {write("empty.tar", makeTar(t, nil)), "empty"},
		"gz not a tar": {write("g.gz", gz(t, []byte("hello"))), "not a readable tar"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := InspectArchive(c.path)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want %q, got %v", c.want, err)
			}
		})
	}
}

func TestFlattenRejectsForeignArch(t *testing.T) {
	d := t.TempDir()
	cfg := imageConfigJSON(t, "arm64")
	arch := filepath.Join(d, "img.tar")
	os.WriteFile(arch, makeTar(t, []tarEntry{
		file("l.tar", string(makeTar(t, []tarEntry{file("a", "b", 0o644)})), 0o644),
		file("c.json", string(cfg), 0o644),
		file("manifest.json", `[{"Config":"c.json","Layers":["l.tar"]}]`, 0o644),
	}), 0o644)
	_, err := Flatten(context.Background(), arch, filepath.Join(d, "r"))
	if err == nil || !strings.Contains(err.Error(), "arm64") {
		t.Fatalf("got %v", err)
	}
}
