package cvm

import (
	"archive/tar"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// fuzzDockerSave wraps layer (a tar, or any bytes) as the only layer of a
// docker-save archive.
func fuzzDockerSave(t testing.TB, layer []byte) []byte {
	cfg := imageConfigJSON(t, "amd64")
	man, _ := json.Marshal([]dockerManifest{{Config: "c.json", Layers: []string{"l/layer.tar"}}})
	return makeTar(t, []tarEntry{file("c.json", string(cfg), 0o644), file("l/layer.tar", string(layer), 0o644),
		file("manifest.json", string(man), 0o644)})
}

func dirNames(t *testing.T, d string) []string {
	ents, err := os.ReadDir(d)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// FuzzDockerArchive: docker_archive comes from whoever supplies the
// image and is read on the operator's machine. With wrap false the input
// is the whole archive (docker save or OCI layout, plain, gzip or bzip2);
// with wrap true it is the one layer of a well-formed docker save, so the
// fuzzer reaches the flattener directly. InspectArchive and Flatten must
// not panic, must write nothing outside dest (a folder beside it stays
// empty; the decompressed copy is removed), and must leave in dest only
// directories, regular files and symlinks, without setuid/setgid bits.
func FuzzDockerArchive(f *testing.F) {
	d := f.TempDir()
	for _, p := range []string{writeDockerSave(f, d, testLayers(f), false), writeOCILayout(f, d, testLayers(f))} {
		if _, err := Flatten(context.Background(), p, filepath.Join(f.TempDir(), "root")); err != nil {
			f.Fatalf("the seed %s does not flatten: %v", filepath.Base(p), err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
	}
	gzipped, err := os.ReadFile(writeDockerSave(f, d, testLayers(f)[:1], true))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(gzipped, false)
	for _, l := range testLayers(f) {
		f.Add(l, true)
	}
	// Escapes the flattener must refuse or confine: a symlink to the
	// folder beside dest, then a file through it; a hardlink out; "..".
	f.Add(makeTar(f, []tarEntry{symlink("x", "../../outside"), file("x/pwned", "p", 0o644)}), true)
	f.Add(makeTar(f, []tarEntry{symlink("y", "/"), file("y/tmp/pwned", "p", 0o644)}), true)
	f.Add(makeTar(f, []tarEntry{hardlink("h", "../../outside/h"), file("../outside/z", "z", 0o644)}), true)
	f.Add(makeTar(f, []tarEntry{dir("a/", 0o755), symlink("a/b", ".."), file("a/b/../../outside/q", "q", 0o644)}), true)
	f.Add(makeTar(f, []tarEntry{file(".wh...", "", 0o644), file("a/.wh..wh..opq", "", 0o644), {name: "p", typ: tar.TypeFifo}}), true)
	f.Add([]byte("BZh91AY&SY"), false)

	f.Fuzz(func(t *testing.T, data []byte, wrap bool) {
		archive := data
		if wrap {
			archive = fuzzDockerSave(t, data)
		}
		parent := t.TempDir()
		in := filepath.Join(parent, "in.tar")
		if err := os.WriteFile(in, archive, 0o600); err != nil {
			t.Fatal(err)
		}
		outside := filepath.Join(parent, "outside")
		if err := os.Mkdir(outside, 0o755); err != nil {
			t.Fatal(err)
		}
		_ = InspectArchive(in)
		work := filepath.Join(parent, "work")
		dest := filepath.Join(work, "root")
		_, err := Flatten(context.Background(), in, dest)

		if got := dirNames(t, parent); strings.Join(got, ",") != "in.tar,outside,work" {
			t.Fatalf("files beside the archive: %v (err %v)", got, err)
		}
		if got := dirNames(t, work); strings.Join(got, ",") != "root" {
			t.Fatalf("files beside dest (a decompressed copy left?): %v (err %v)", got, err)
		}
		if got := dirNames(t, outside); len(got) != 0 {
			t.Fatalf("Flatten wrote outside dest: %v (err %v)", got, err)
		}
		filepath.WalkDir(dest, func(p string, de fs.DirEntry, werr error) error {
			if werr != nil {
				t.Fatalf("walk: %v", werr)
			}
			fi, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			switch m := fi.Mode(); {
			case m&(fs.ModeSetuid|fs.ModeSetgid) != 0:
				t.Fatalf("%s has mode %v", p, m)
			case m.IsDir(), m.IsRegular(), m&fs.ModeSymlink != 0:
			default:
				t.Fatalf("%s is a %v", p, m.Type())
			}
			return nil
		})
	})
}
