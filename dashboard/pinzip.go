package dashboard

// Kit downloads are zips that `unzip -P <pin>` opens, as NVFlare's
// Dashboard makes them: with Info-ZIP's `zip -P` (Debian package zip).
// That is PKZIP's legacy ZipCrypto, a weak cipher kept only for
// compatibility with what NVFlare's users run; we call Info-ZIP rather than
// carry a cipher of our own. The PIN appears on zip's command line for the
// moment it runs, as with NVFlare's; it is only ever letters and digits
// (checked before), so it cannot become an option.

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// zipEntry is one file or directory (Name ending in "/") of an archive.
type zipEntry struct {
	Name string
	Mode fs.FileMode
	Data []byte
}

// zipTimeout bounds one zip run: a kit is a few dozen small files.
const zipTimeout = 30 * time.Second

// writePINZip returns entries zipped and encrypted with pin by `zip -P`.
// The entries are laid out in a private temporary directory first (mode
// 0700: a kit holds its private key), which is removed afterwards.
func writePINZip(entries []zipEntry, pin string) ([]byte, error) {
	zipBin, err := exec.LookPath("zip")
	if err != nil {
		return nil, fmt.Errorf("kit downloads need Info-ZIP's zip (Debian: apt-get install zip), as NVFlare's Dashboard does: %w", err)
	}
	dir, err := os.MkdirTemp("", "flare-dashboard-kit-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	tops := map[string]bool{}
	for _, e := range entries {
		rel := filepath.FromSlash(strings.TrimSuffix(e.Name, "/"))
		if rel == "" || !filepath.IsLocal(rel) {
			return nil, fmt.Errorf("kit entry %q is not a relative path", e.Name)
		}
		tops[strings.SplitN(filepath.ToSlash(rel), "/", 2)[0]] = true
		p := filepath.Join(dir, "in", rel)
		if strings.HasSuffix(e.Name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return nil, err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, e.Data, e.Mode.Perm()); err != nil {
			return nil, err
		}
		if err := os.Chmod(p, e.Mode.Perm()); err != nil { // not filtered by umask
			return nil, err
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	out := filepath.Join(dir, "kit.zip")
	args := []string{"-r", "-q", "-X", "-P", pin, out}
	for top := range tops {
		args = append(args, top)
	}
	ctx, cancel := context.WithTimeout(context.Background(), zipTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, zipBin, args...)
	cmd.Dir = filepath.Join(dir, "in")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("zip -P: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return os.ReadFile(out)
}
