package cvm

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var layerTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// tarEntry is one member of a test tar.
type tarEntry struct {
	name     string
	typ      byte
	mode     int64
	body     string
	link     string
	uid, gid int
	major    int64
	minor    int64
}

func dir(name string, mode int64) tarEntry { return tarEntry{name: name, typ: tar.TypeDir, mode: mode} }
func file(name, body string, mode int64) tarEntry {
	return tarEntry{name: name, typ: tar.TypeReg, mode: mode, body: body}
}
func symlink(name, target string) tarEntry {
	return tarEntry{name: name, typ: tar.TypeSymlink, mode: 0o777, link: target}
}
func hardlink(name, target string) tarEntry {
	return tarEntry{name: name, typ: tar.TypeLink, mode: 0o644, link: target}
}

func makeTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Uid: e.uid, Gid: e.gid,
			ModTime: layerTime, Devmajor: e.major, Devminor: e.minor}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gz(t testing.TB, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func sha(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

const testEntrypoint = "/user_config/nvflare/startup/sub_start.sh"

func imageConfigJSON(t testing.TB, arch string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"architecture": arch, "os": "linux",
		"config": map[string]any{
			"Env":        []string{"PATH=/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1"},
			"Entrypoint": []string{testEntrypoint, "--verify"},
			"Cmd":        []string{"--site", "x"},
			"WorkingDir": "/workspace",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testLayers are the two layers of the test image: the second deletes a
// file (whiteout), makes /opt/old opaque, replaces a file, and the first
// has a symlink, a hardlink, a setuid file, a non-root owner and devices.
func testLayers(t testing.TB) [][]byte {
	l1 := []tarEntry{
		dir("etc/", 0o755),
		file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
		file("etc/shadow", "root:*:19000::::::\n", 0o000),
		dir("bin/", 0o755),
		file("bin/sh", "#!fake shell\n", 0o755),
		symlink("bin/link", "sh"),
		hardlink("bin/hl", "bin/sh"),
		file("bin/su", "setuid\n", 0o4755),
		dir("opt/", 0o755),
		dir("opt/old/", 0o755),
		file("opt/old/a.txt", "a\n", 0o644),
		dir("opt/old/sub/", 0o755),
		file("opt/old/sub/b.txt", "b\n", 0o644),
		file("removeme.txt", "bye\n", 0o644),
		{name: "home/user/file", typ: tar.TypeReg, mode: 0o640, body: "mine\n", uid: 1000, gid: 1001},
		dir("tmp/", 0o1777),
		dir("dev/", 0o755),
		{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		{name: "dev/fifo", typ: tar.TypeFifo, mode: 0o600},
		file("with space/quote\"d", "odd name\n", 0o644),
	}
	l2 := []tarEntry{
		file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nflare:x:1000:1000::/home/flare:/bin/sh\n", 0o644),
		file(".wh.removeme.txt", "", 0o644),
		dir("opt/old/", 0o755),
		file("opt/old/c.txt", "c\n", 0o644), // before the marker: stays
		file("opt/old/.wh..wh..opq", "", 0o644),
		file("opt/old/d.txt", "d\n", 0o644),       // after the marker: stays
		file("opt/fresh/.wh..wh..opq", "", 0o644), // marker of a new dir, no dir entry
		symlink("etc/alt", "/etc/passwd"),
		dir("workspace/", 0o755),
	}
	return [][]byte{makeTar(t, l1), gz(t, makeTar(t, l2))}
}

// writeDockerSave writes a docker-save style archive (manifest.json,
// <config>.json, <id>/layer.tar) of layers, gzip-compressed if gzipped,
// and returns its path. dupLink adds a third layer that is a symlink to
// the first, as docker save writes shared layers.
func writeDockerSave(t testing.TB, dirPath string, layers [][]byte, gzipped bool) string {
	t.Helper()
	cfg := imageConfigJSON(t, "amd64")
	cfgName := sha(cfg) + ".json"
	var entries []tarEntry
	var names []string
	for i, l := range layers {
		id := sha(append([]byte{byte(i)}, l...))
		entries = append(entries, dir(id+"/", 0o755), file(id+"/layer.tar", string(l), 0o644))
		names = append(names, id+"/layer.tar")
	}
	man, _ := json.Marshal([]dockerManifest{{Config: cfgName, RepoTags: []string{"flare/test:latest"}, Layers: names}})
	entries = append(entries, file(cfgName, string(cfg), 0o644), file("manifest.json", string(man), 0o644))
	data := makeTar(t, entries)
	name := "image.tar"
	if gzipped {
		data, name = gz(t, data), "image.tar.gz"
	}
	p := filepath.Join(dirPath, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeOCILayout writes an OCI image layout tar (index.json, blobs/).
func writeOCILayout(t testing.TB, dirPath string, layers [][]byte) string {
	t.Helper()
	cfg := imageConfigJSON(t, "amd64")
	var entries []tarEntry
	blob := func(data []byte) string {
		d := sha(data)
		entries = append(entries, file("blobs/sha256/"+d, string(data), 0o644))
		return "sha256:" + d
	}
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	man := map[string]any{"schemaVersion": 2, "mediaType": mtOCIManifest,
		"config": desc{"application/vnd.oci.image.config.v1+json", blob(cfg), len(cfg)}}
	var ls []desc
	for _, l := range layers {
		ls = append(ls, desc{"application/vnd.oci.image.layer.v1.tar", blob(l), len(l)})
	}
	man["layers"] = ls
	mb, _ := json.Marshal(man)
	md := blob(mb)
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mtOCIIndex,
		"manifests": []map[string]any{{"mediaType": mtOCIManifest, "digest": md, "size": len(mb)}}})
	entries = append(entries, file("oci-layout", `{"imageLayoutVersion":"1.0.0"}`, 0o644), file("index.json", string(idx), 0o644))
	p := filepath.Join(dirPath, "oci.tar")
	if err := os.WriteFile(p, makeTar(t, entries), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// needTools skips the test when the image tools are not installed.
func needTools(t testing.TB) *tools {
	t.Helper()
	tl, err := findTools()
	if err != nil && os.Getenv("CVM_REQUIRE_TOOLS") != "" {
		t.Fatalf("CVM_REQUIRE_TOOLS is set but: %v", err)
	}
	if err != nil {
		t.Skipf("image tools missing (run `make cvm-deps` to install e2fsprogs and qemu-utils): %v", err)
	}
	return tl
}

func runOut(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// rawImage converts a qcow2 drive back to raw for debugfs.
func rawImage(t testing.TB, tl *tools, qcow2 string) string {
	t.Helper()
	raw := filepath.Join(t.TempDir(), filepath.Base(qcow2)+".raw")
	runOut(t, tl.qemuImg, "convert", "-f", "qcow2", "-O", "raw", qcow2, raw)
	return raw
}

// debugfs runs one read-only debugfs request on an image.
func debugfs(t testing.TB, tl *tools, img, req string) string {
	t.Helper()
	cmd := exec.Command(tl.debugfs, "-R", req, img)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("debugfs -R %q %s: %v\n%s", req, img, err, e.String())
	}
	var errs []string
	for _, l := range strings.Split(e.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "debugfs ") {
			errs = append(errs, l)
		}
	}
	if len(errs) > 0 {
		return "ERROR: " + strings.Join(errs, "; ")
	}
	return o.String()
}
