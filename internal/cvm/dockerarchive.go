package cvm

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// ImageConfig is what the launch needs from the image's config blob.
type ImageConfig struct {
	Env        []string `json:"env,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
	// Architecture and OS as the image declares them (amd64, linux).
	Architecture string   `json:"architecture,omitempty"`
	OS           string   `json:"os,omitempty"`
	RepoTags     []string `json:"repo_tags,omitempty"`
	// ConfigDigest is sha256:<hex> of the config blob, Docker's image ID.
	ConfigDigest string `json:"config_digest"`
}

// Media types of OCI and Docker v2 manifests and indexes.
const (
	mtOCIIndex    = "application/vnd.oci.image.index.v1+json"
	mtDockerList  = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtOCIManifest = "application/vnd.oci.image.manifest.v1+json"
)

// dockerManifest is one entry of docker save's manifest.json.
type dockerManifest struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

type ociDescriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Platform  *struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
	} `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type ociIndex struct {
	MediaType string          `json:"mediaType"`
	Manifests []ociDescriptor `json:"manifests"`
}

type ociManifest struct {
	MediaType string          `json:"mediaType"`
	Config    ociDescriptor   `json:"config"`
	Layers    []ociDescriptor `json:"layers"`
}

type archiveEntry struct {
	offset, size int64
	typ          byte
	link         string
}

// imageArchive is a docker-save (or OCI layout) tar opened for random
// access: a gzip-compressed archive is first expanded into a temp file.
type imageArchive struct {
	f       *os.File
	tmp     string
	entries map[string]*archiveEntry
}

// sniff reports the compression of a stream from its first bytes.
func sniff(b []byte) string {
	switch {
	case len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b:
		return "gzip"
	case len(b) >= 3 && string(b[:3]) == "BZh":
		return "bzip2"
	case len(b) >= 4 && bytes.Equal(b[:4], []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "zstd"
	case len(b) >= 6 && bytes.Equal(b[:6], []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "xz"
	}
	return ""
}

// decompressor wraps r (whose first bytes are head) by its compression.
func decompressor(r io.Reader, what string) (io.Reader, func() error, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(6)
	switch c := sniff(head); c {
	case "gzip":
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", what, err)
		}
		return zr, zr.Close, nil
	case "bzip2":
		return bzip2.NewReader(br), func() error { return nil }, nil
	case "zstd", "xz":
		return nil, nil, fmt.Errorf("%s is %s-compressed, which is not supported: save the image with `docker save` (plain or gzip)", what, c)
	}
	return br, func() error { return nil }, nil
}

// normName is an archive member name without "./" and trailing "/".
func normName(n string) string {
	for strings.HasPrefix(n, "./") {
		n = n[2:]
	}
	return strings.TrimSuffix(n, "/")
}

// InspectArchive checks that p is a tar or tar.gz holding a docker-save
// manifest.json (or an OCI index.json) that names exactly one image. It
// stops reading at that file.
func InspectArchive(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return cleanPathErr(err)
	}
	defer f.Close()
	r, closer, err := decompressor(f, "the archive")
	if err != nil {
		return err
	}
	defer closer()
	tr := tar.NewReader(r)
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			if n == 0 {
				return errors.New("the archive is empty")
			}
			return errors.New("no manifest.json or index.json in the archive: it is not a `docker save` output")
		}
		if err != nil {
			return fmt.Errorf("not a readable tar or tar.gz: %v", err)
		}
		switch normName(hdr.Name) {
		case "manifest.json":
			var ms []dockerManifest
			if err := json.NewDecoder(io.LimitReader(tr, 16<<20)).Decode(&ms); err != nil {
				return fmt.Errorf("manifest.json: %v", err)
			}
			return checkDockerManifests(ms)
		case "index.json":
			var idx ociIndex
			if err := json.NewDecoder(io.LimitReader(tr, 16<<20)).Decode(&idx); err != nil {
				return fmt.Errorf("index.json: %v", err)
			}
			if len(idx.Manifests) == 0 {
				return errors.New("index.json lists no image")
			}
			return nil
		}
	}
}

func checkDockerManifests(ms []dockerManifest) error {
	switch {
	case len(ms) == 0:
		return errors.New("manifest.json lists no image")
	case len(ms) > 1:
		return fmt.Errorf("manifest.json lists %d images: save exactly one image", len(ms))
	case ms[0].Config == "":
		return errors.New("manifest.json has no Config")
	case len(ms[0].Layers) == 0:
		return errors.New("manifest.json lists no layers")
	}
	return nil
}

// posReader tracks the offset of an *os.File so tar entries can be
// located; Seek lets tar.Reader skip entry data without reading it.
type posReader struct {
	f   *os.File
	pos int64
}

func (r *posReader) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	r.pos += int64(n)
	return n, err
}

func (r *posReader) Seek(off int64, whence int) (int64, error) {
	n, err := r.f.Seek(off, whence)
	if err == nil {
		r.pos = n
	}
	return n, err
}

// openImageArchive indexes the archive at p. A compressed archive is
// expanded into tmpDir first.
func openImageArchive(p, tmpDir string) (_ *imageArchive, err error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("docker_archive: %w", cleanPathErr(err))
	}
	a := &imageArchive{f: f, entries: map[string]*archiveEntry{}}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	head := make([]byte, 6)
	n, _ := io.ReadFull(f, head)
	if c := sniff(head[:n]); c != "" {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		r, closer, err := decompressor(f, "docker_archive")
		if err != nil {
			return nil, err
		}
		tmp, err := os.CreateTemp(tmpDir, "docker-archive-*.tar")
		if err != nil {
			closer()
			return nil, err
		}
		a.tmp = tmp.Name()
		_, err = io.Copy(tmp, r)
		closer()
		if err != nil {
			tmp.Close()
			return nil, fmt.Errorf("docker_archive: decompressing: %w", err)
		}
		f.Close()
		a.f = tmp
	}
	pr := &posReader{f: a.f}
	if _, err := pr.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	tr := tar.NewReader(pr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("docker_archive: not a readable tar: %w", err)
		}
		a.entries[normName(hdr.Name)] = &archiveEntry{offset: pr.pos, size: hdr.Size, typ: hdr.Typeflag, link: hdr.Linkname}
	}
	if len(a.entries) == 0 {
		return nil, errors.New("docker_archive: the archive is empty")
	}
	return a, nil
}

func (a *imageArchive) Close() error {
	err := a.f.Close()
	if a.tmp != "" {
		os.Remove(a.tmp)
	}
	return err
}

// open returns the content of member name, following the symlinks and
// hardlinks docker save uses for layers shared between images.
func (a *imageArchive) open(name string) (*io.SectionReader, error) {
	name = normName(name)
	for hops := 0; hops < 16; hops++ {
		e, ok := a.entries[name]
		if !ok {
			return nil, fmt.Errorf("docker_archive: %s is missing from the archive", name)
		}
		switch e.typ {
		case tar.TypeReg, tar.TypeRegA:
			return io.NewSectionReader(a.f, e.offset, e.size), nil
		case tar.TypeSymlink:
			if path.IsAbs(e.link) {
				return nil, fmt.Errorf("docker_archive: %s links outside the archive (%s)", name, e.link)
			}
			name = path.Clean(path.Join(path.Dir(name), e.link))
		case tar.TypeLink:
			name = normName(e.link)
		default:
			return nil, fmt.Errorf("docker_archive: %s is not a file", name)
		}
		if name == ".." || strings.HasPrefix(name, "../") {
			return nil, fmt.Errorf("docker_archive: a link leads outside the archive (%s)", name)
		}
	}
	return nil, fmt.Errorf("docker_archive: too many links resolving %s", name)
}

func (a *imageArchive) readJSON(name string, v any) ([]byte, error) {
	sr, err := a.open(name)
	if err != nil {
		return nil, err
	}
	if sr.Size() > 64<<20 {
		return nil, fmt.Errorf("docker_archive: %s is too large (%d bytes)", name, sr.Size())
	}
	b, err := io.ReadAll(sr)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("docker_archive: %s: %v", name, err)
	}
	return b, nil
}

func blobPath(digest string) (string, error) {
	alg, hexd, ok := strings.Cut(digest, ":")
	if !ok || alg == "" || hexd == "" || strings.ContainsAny(digest, "/\\") {
		return "", fmt.Errorf("docker_archive: bad digest %q", digest)
	}
	return "blobs/" + alg + "/" + hexd, nil
}

// image reads the image's config and the archive paths of its layers,
// bottom first: from docker save's manifest.json, or else from an OCI
// layout's index.json.
func (a *imageArchive) image() (*ImageConfig, []string, error) {
	var cfgName string
	var layers, tags []string
	if _, ok := a.entries["manifest.json"]; ok {
		var ms []dockerManifest
		if _, err := a.readJSON("manifest.json", &ms); err != nil {
			return nil, nil, err
		}
		if err := checkDockerManifests(ms); err != nil {
			return nil, nil, fmt.Errorf("docker_archive: %w", err)
		}
		cfgName, layers, tags = ms[0].Config, ms[0].Layers, ms[0].RepoTags
	} else if _, ok := a.entries["index.json"]; ok {
		m, err := a.ociManifest("index.json", 0)
		if err != nil {
			return nil, nil, err
		}
		if cfgName, err = blobPath(m.Config.Digest); err != nil {
			return nil, nil, err
		}
		for _, l := range m.Layers {
			p, err := blobPath(l.Digest)
			if err != nil {
				return nil, nil, err
			}
			layers = append(layers, p)
		}
		if len(layers) == 0 {
			return nil, nil, errors.New("docker_archive: the image manifest lists no layers")
		}
	} else {
		return nil, nil, errors.New("docker_archive: no manifest.json or index.json: not a `docker save` archive")
	}

	var raw struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
		Config       struct {
			Env        []string `json:"Env"`
			Entrypoint []string `json:"Entrypoint"`
			Cmd        []string `json:"Cmd"`
			WorkingDir string   `json:"WorkingDir"`
			User       string   `json:"User"`
		} `json:"config"`
	}
	b, err := a.readJSON(cfgName, &raw)
	if err != nil {
		return nil, nil, err
	}
	if raw.OS != "" && raw.OS != "linux" {
		return nil, nil, fmt.Errorf("docker_archive: the image is for %s; the CVM runs linux", raw.OS)
	}
	if raw.Architecture != "" && raw.Architecture != "amd64" {
		return nil, nil, fmt.Errorf("docker_archive: the image is for %s; the CVM is amd64 (build the image with --platform linux/amd64)", raw.Architecture)
	}
	sum := sha256.Sum256(b)
	c := raw.Config
	return &ImageConfig{
		Env: c.Env, Entrypoint: c.Entrypoint, Cmd: c.Cmd, WorkingDir: c.WorkingDir, User: c.User,
		Architecture: raw.Architecture, OS: raw.OS, RepoTags: tags,
		ConfigDigest: "sha256:" + hex.EncodeToString(sum[:]),
	}, layers, nil
}

// ociManifest resolves an OCI index (nested indexes too) to the image
// manifest for linux/amd64, or the only one.
func (a *imageArchive) ociManifest(name string, depth int) (*ociManifest, error) {
	if depth > 4 {
		return nil, errors.New("docker_archive: image indexes nest too deep")
	}
	var idx ociIndex
	if _, err := a.readJSON(name, &idx); err != nil {
		return nil, err
	}
	var cands []ociDescriptor
	for _, d := range idx.Manifests {
		if d.Platform != nil && (d.Platform.OS == "unknown" || d.Platform.Architecture == "unknown") {
			continue // buildx attestation manifests
		}
		if d.Platform == nil || (d.Platform.OS == "linux" && d.Platform.Architecture == "amd64") || len(idx.Manifests) == 1 {
			cands = append(cands, d)
		}
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("docker_archive: %s has no linux/amd64 image", name)
	}
	if len(cands) > 1 {
		return nil, fmt.Errorf("docker_archive: %s lists %d images: save exactly one image", name, len(cands))
	}
	d := cands[0]
	p, err := blobPath(d.Digest)
	if err != nil {
		return nil, err
	}
	switch d.MediaType {
	case mtOCIIndex, mtDockerList:
		return a.ociManifest(p, depth+1)
	}
	var m ociManifest
	if _, err := a.readJSON(p, &m); err != nil {
		return nil, err
	}
	if m.MediaType == mtOCIIndex || m.MediaType == mtDockerList {
		return a.ociManifest(p, depth+1)
	}
	if m.Config.Digest == "" {
		return nil, fmt.Errorf("docker_archive: %s is not an image manifest", p)
	}
	return &m, nil
}
