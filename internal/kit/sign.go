package kit

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
)

// SignatureFile is the per-folder signature list NVFlare verifies.
const SignatureFile = "signature.json"

// pssOptions are NVFlare's: PSS, MGF1-SHA256, maximum salt length (222
// bytes for RSA-2048). PSSSaltLengthAuto signs with the maximum and
// verifies whatever length was used.
var pssOptions = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256}

// SignContent signs data the way NVFlare's sign_content does and returns
// the base64 signature.
func SignContent(data []byte, signer crypto.Signer) (string, error) {
	digest := sha256.Sum256(data)
	sig, err := signer.Sign(rand.Reader, digest[:], pssOptions)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// SignFolder makes the signature.json of one folder: every file by its
// base name. The JSON has Python json.dump's spacing, keys sorted.
func SignFolder(files []File, signer crypto.Signer) ([]byte, error) {
	return signEach(files, func(data []byte) (string, error) { return SignContent(data, signer) })
}

// signEach makes the signature.json of files with sign.
func signEach(files []File, sign func([]byte) (string, error)) ([]byte, error) {
	sigs := map[string]string{}
	for _, f := range files {
		name := path.Base(f.Path)
		if name == SignatureFile {
			continue
		}
		s, err := sign(f.Data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Path, err)
		}
		sigs[name] = s
	}
	return encodeSignatures(sigs)
}

func encodeSignatures(sigs map[string]string) ([]byte, error) {
	names := make([]string, 0, len(sigs))
	for n := range sigs {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			buf.WriteString(", ")
		}
		k, _ := json.Marshal(n)
		v, _ := json.Marshal(sigs[n])
		buf.Write(k)
		buf.WriteString(": ")
		buf.Write(v)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// VerifyFolder checks dir the way NVFlare's verify_folder_signature does:
// signature.json must exist, every file and subdirectory must have a valid
// entry under the root certificate's key. It walks subdirectories too.
func VerifyFolder(dir string, root *x509.Certificate) error {
	pub, sigs, err := readSignatures(dir, root)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if name == SignatureFile {
			continue
		}
		content := []byte(name)
		if e.IsDir() {
			if err := VerifyFolder(filepath.Join(dir, name), root); err != nil {
				return err
			}
		} else if content, err = os.ReadFile(filepath.Join(dir, name)); err != nil {
			return err
		}
		if err := verifyEntry(pub, sigs, filepath.Join(dir, name), content); err != nil {
			return err
		}
	}
	return nil
}

// VerifyFiles checks that dir's signature.json signs each of names (files
// in dir) under the root certificate's key, for folders where only some
// files are signed and the rest are bound through them (a CVM kit's
// launch.json holds the SHA-256 of its drives and boot files).
func VerifyFiles(dir string, names []string, root *x509.Certificate) error {
	pub, sigs, err := readSignatures(dir, root)
	if err != nil {
		return err
	}
	for _, name := range names {
		p := filepath.Join(dir, name)
		content, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := verifyEntry(pub, sigs, p, content); err != nil {
			return err
		}
	}
	return nil
}

// SignaturesCover reports whether sigJSON, a signature.json, holds exactly
// one valid signature under pub for each of files. A builder uses it to
// keep an earlier signature.json for unchanged content: PSS signatures are
// randomized, so signing again would change the bytes of an identical kit.
func SignaturesCover(sigJSON []byte, files []File, pub crypto.PublicKey) bool {
	rsaPub, ok := pub.(*rsa.PublicKey)
	var sigs map[string]string
	if !ok || json.Unmarshal(sigJSON, &sigs) != nil || len(sigs) != len(files) {
		return false
	}
	for _, f := range files {
		if verifyEntry(rsaPub, sigs, f.Path, f.Data) != nil {
			return false
		}
	}
	return true
}

func readSignatures(dir string, root *x509.Certificate) (*rsa.PublicKey, map[string]string, error) {
	pub, ok := root.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, nil, errors.New("root certificate key is not RSA")
	}
	raw, err := os.ReadFile(filepath.Join(dir, SignatureFile))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", dir, err)
	}
	var sigs map[string]string
	if err := json.Unmarshal(raw, &sigs); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dir, SignatureFile), err)
	}
	return pub, sigs, nil
}

// verifyEntry checks the signature.json entry of the file at p.
func verifyEntry(pub *rsa.PublicKey, sigs map[string]string, p string, content []byte) error {
	b64, ok := sigs[filepath.Base(p)]
	if !ok {
		return fmt.Errorf("%s is not listed in %s", p, SignatureFile)
	}
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return fmt.Errorf("%s: signature is not base64: %w", p, err)
	}
	digest := sha256.Sum256(content)
	if err := rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, pssOptions); err != nil {
		return fmt.Errorf("%s: signature does not verify: %w", p, err)
	}
	return nil
}
