package launch

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Stage makes dest, a new 0700 folder the agent alone writes (in the
// CVM's state folder), the copy of kit k that QEMU runs from: the kit's
// own files are written from the bytes LoadKit verified, and every file
// launch.json lists is copied (a reflink when the file system can, else
// byte by byte) and then checked in the copy: size, SHA-256, and for
// drives CheckImage. Nothing in the kit folder is opened again after that,
// so a kit folder changed after the check (a drive swapped, a kernel
// replaced) never reaches QEMU, and the guest's writes land in the copy.
//
// With move, the kit folder is the agent's own unpacked upload (under
// state_dir, 0700): its files are renamed into dest instead of copied, and
// trusted when hashed is true (Unpack hashed them there); drives' headers
// are checked again either way.
func Stage(k *Kit, dest string, move, hashed bool) error {
	if err := os.Mkdir(dest, 0o700); err != nil {
		return err
	}
	for name, b := range k.Signed {
		if err := writeNew(filepath.Join(dest, name), b); err != nil {
			return err
		}
	}
	var errs []string
	for _, f := range Files(k.Manifest) {
		src, dst := filepath.Join(k.Dir, f.Name), filepath.Join(dest, f.Name)
		var err error
		if move {
			err = moveIn(src, dst, f, k, hashed)
		} else {
			err = copyIn(src, dst, f, k)
		}
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("kit %s does not match its launch.json: %s", k.Dir, strings.Join(errs, "; "))
	}
	return nil
}

func writeNew(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|oNoFollow, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// copyIn copies src to the new file dst and checks the copy.
func copyIn(src, dst string, f KitFile, k *Kit) error {
	in, fi, err := openRegular(src)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %v", f.Name, cleanErr(err))
		}
		return fmt.Errorf("%s: %v", f.Name, err)
	}
	defer in.Close()
	if fi.Size() != f.Size {
		return fmt.Errorf("%s is %d bytes, launch.json says %d", f.Name, fi.Size(), f.Size)
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL|oNoFollow, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	h := sha256.New()
	if cloneFile(out, in) == nil {
		// A reflink shares the source's blocks as they are now; reading
		// the copy hashes exactly what QEMU will open.
		if _, err := io.Copy(h, out); err != nil {
			return fmt.Errorf("%s: %v", f.Name, err)
		}
	} else if _, err := io.Copy(io.MultiWriter(out, h), in); err != nil {
		return fmt.Errorf("%s: copy into the CVM's state folder: %v", f.Name, err)
	}
	return checkCopy(out, f, k, h)
}

// moveIn renames an unpacked upload's file into dst and checks it.
func moveIn(src, dst string, f KitFile, k *Kit, hashed bool) error {
	if fi, err := os.Lstat(src); err != nil {
		return fmt.Errorf("%s: %v", f.Name, cleanErr(err))
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", f.Name)
	}
	if err := os.Rename(src, dst); err != nil {
		return err
	}
	out, _, err := openRegular(dst)
	if err != nil {
		return fmt.Errorf("%s: %v", f.Name, err)
	}
	defer out.Close()
	if hashed {
		if f.Drive {
			return CheckImage(out, f.Name, driveFormat(k.Manifest, f.Name))
		}
		return nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, out); err != nil {
		return fmt.Errorf("%s: %v", f.Name, err)
	}
	return checkCopy(out, f, k, h)
}

func checkCopy(out *os.File, f KitFile, k *Kit, h hash.Hash) error {
	fi, err := out.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != f.Size {
		return fmt.Errorf("%s is %d bytes, launch.json says %d", f.Name, fi.Size(), f.Size)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != f.SHA256 {
		return fmt.Errorf("%s has SHA-256 %s, launch.json says %s", f.Name, sum, f.SHA256)
	}
	if f.Drive {
		return CheckImage(out, f.Name, driveFormat(k.Manifest, f.Name))
	}
	return nil
}
