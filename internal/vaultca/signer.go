package vaultca

import (
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/hashicorp/vault/api"
)

// Signer is a crypto.Signer whose RSA key is one pinned version of a Transit
// key. Safe for concurrent use.
type Signer struct {
	client  *api.Client
	mount   string
	name    string
	version int
	keyType string
	pub     *rsa.PublicKey
}

var _ crypto.Signer = (*Signer)(nil)

// NewSigner returns a signer for version of <mount>/keys/<name>; version 0
// pins the latest version now (read it back with KeyVersion and store it).
// It refuses non-RSA keys, keys whose private key can be exported, and
// versions that are trimmed, do not exist yet, or are below the key's
// min_encryption_version (Transit would refuse to sign with them).
// Needs `read` on <mount>/keys/<name>; Sign needs `update` on
// <mount>/sign/<name>.
func NewSigner(ctx context.Context, client *api.Client, mount, name string, version int) (*Signer, error) {
	mount = strings.Trim(mount, "/")
	if mount == "" {
		mount = DefaultTransitMount
	}
	if version < 0 {
		return nil, fmt.Errorf("transit key %s: key version %d is negative", keyPath(mount, name), version)
	}
	info, err := ReadKey(ctx, client, mount, name)
	if err != nil {
		return nil, err
	}
	if err := checkCAKey(info, ""); err != nil {
		return nil, err
	}
	p := info.Path()
	if version == 0 {
		version = info.LatestVersion
	}
	switch {
	case version > info.LatestVersion:
		return nil, fmt.Errorf("transit key %s has no version %d (latest is %d)", p, version, info.LatestVersion)
	case info.MinEncryptionVersion > 0 && version < info.MinEncryptionVersion:
		return nil, fmt.Errorf("transit key %s: pinned version %d is below min_encryption_version %d, so Transit "+
			"refuses to sign with it; lower min_encryption_version on %s/config, or roll the CA over to version %d or later",
			p, version, info.MinEncryptionVersion, p, info.MinEncryptionVersion)
	}
	pub, ok := info.PublicKeys[version]
	if !ok {
		return nil, fmt.Errorf("transit key %s: version %d is no longer available (trimmed; available: %v)", p, version, info.Versions())
	}
	return &Signer{client: client, mount: mount, name: name, version: version, keyType: info.Type, pub: pub}, nil
}

// Public returns the *rsa.PublicKey of the pinned version.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// KeyVersion is the pinned Transit key version.
func (s *Signer) KeyVersion() int { return s.version }

// KeyPath is the key's API path, e.g. "transit/keys/flare-ca".
func (s *Signer) KeyPath() string { return keyPath(s.mount, s.name) }

// KeyType is the Transit key type, e.g. "rsa-2048".
func (s *Signer) KeyType() string { return s.keyType }

// Sign signs digest through Transit. opts must be a crypto.Hash (PKCS#1
// v1.5, as certificates need) or an *rsa.PSSOptions (PSS; SaltLength
// rsa.PSSSaltLengthAuto means the maximum, as NVFlare's PSS.MAX_LENGTH, and
// rsa.PSSSaltLengthEqualsHash the hash length). rand is unused: Vault uses
// its own randomness for PSS salts.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.SignContext(context.Background(), digest, opts)
}

// SignContext is Sign with a context.
func (s *Signer) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sigs, err := s.SignDigests(ctx, [][]byte{digest}, opts)
	if err != nil {
		return nil, err
	}
	return sigs[0], nil
}

// request is the sign request for one set of options.
type request struct {
	hash    crypto.Hash
	params  map[string]any
	pss     bool
	saltLen int
	desc    string
}

var hashNames = map[crypto.Hash]string{
	crypto.SHA224: "sha2-224",
	crypto.SHA256: "sha2-256",
	crypto.SHA384: "sha2-384",
	crypto.SHA512: "sha2-512",
}

// MaxPSSSaltLength is the largest PSS salt for an RSA key of bits and hash h:
// ceil((bits-1)/8) - 2 - hLen; 222 for RSA-2048 with SHA-256.
func MaxPSSSaltLength(bits int, h crypto.Hash) int {
	return (bits-1+7)/8 - 2 - h.Size()
}

func (s *Signer) request(opts crypto.SignerOpts) (request, error) {
	if opts == nil {
		return request{}, errors.New("no signer options: pass crypto.SHA256 (PKCS#1 v1.5) or *rsa.PSSOptions")
	}
	h := opts.HashFunc()
	name, ok := hashNames[h]
	if !ok {
		return request{}, fmt.Errorf("hash %v is not supported (use SHA-224/256/384/512)", h)
	}
	r := request{hash: h, params: map[string]any{
		"prehashed":      true,
		"hash_algorithm": name,
		"key_version":    s.version,
	}}
	pssOpts, isPSS := opts.(*rsa.PSSOptions)
	if !isPSS {
		// Explicit: Transit's default for RSA is PSS.
		r.params["signature_algorithm"] = "pkcs1v15"
		r.desc = "PKCS#1 v1.5/" + name
		return r, nil
	}
	maxSalt := MaxPSSSaltLength(s.pub.N.BitLen(), h)
	var salt int
	switch n := pssOpts.SaltLength; {
	case n == rsa.PSSSaltLengthAuto:
		// Go signs Auto with the maximum (outside FIPS mode), and so do
		// NVFlare's callers expect; a FIPS Vault would cap "auto" at the
		// hash length, so ask for the number.
		salt = maxSalt
	case n == rsa.PSSSaltLengthEqualsHash:
		salt = h.Size()
	case n > 0 && n <= maxSalt:
		salt = n
	default:
		return request{}, fmt.Errorf("PSS salt length %d is not possible for %s with %v (allowed: auto, equals-hash, 1..%d)",
			n, s.keyType, h, maxSalt)
	}
	r.pss, r.saltLen = true, salt
	r.params["signature_algorithm"] = "pss"
	r.params["salt_length"] = strconv.Itoa(salt)
	r.desc = fmt.Sprintf("PSS/%s salt %d", name, salt)
	return r, nil
}

// SignDigests signs several digests with the same options in one request
// (Transit's batch_input), e.g. all files of a startup kit. Every signature
// is checked like Sign's.
func (s *Signer) SignDigests(ctx context.Context, digests [][]byte, opts crypto.SignerOpts) ([][]byte, error) {
	if len(digests) == 0 {
		return nil, nil
	}
	r, err := s.request(opts)
	if err != nil {
		return nil, fmt.Errorf("sign with transit key %s: %w", s.KeyPath(), err)
	}
	for i, d := range digests {
		if len(d) != r.hash.Size() {
			return nil, fmt.Errorf("sign with transit key %s: digest %d is %d bytes, %v needs %d", s.KeyPath(), i, len(d), r.hash, r.hash.Size())
		}
	}
	if len(digests) == 1 {
		r.params["input"] = base64.StdEncoding.EncodeToString(digests[0])
	} else {
		batch := make([]map[string]any, len(digests))
		for i, d := range digests {
			batch[i] = map[string]any{"input": base64.StdEncoding.EncodeToString(d)}
		}
		r.params["batch_input"] = batch
	}
	path := signPath(s.mount, s.name)
	action := fmt.Sprintf("sign (%s) with transit key %s version %d", r.desc, s.KeyPath(), s.version)
	secret, err := s.client.Logical().WriteWithContext(ctx, path, r.params)
	if err != nil {
		return nil, s.hint(err, describe(s.client, action, err, "update", path))
	}
	if secret == nil || secret.Data == nil {
		return nil, fmt.Errorf("%s: empty answer from vault at %s", action, s.client.Address())
	}
	var results []map[string]any
	if len(digests) == 1 {
		results = []map[string]any{secret.Data}
	} else {
		raw, _ := secret.Data["batch_results"].([]any)
		if len(raw) != len(digests) {
			return nil, fmt.Errorf("%s: asked for %d signatures, got %d", action, len(digests), len(raw))
		}
		for _, x := range raw {
			m, _ := x.(map[string]any)
			results = append(results, m)
		}
	}
	sigs := make([][]byte, len(digests))
	for i, res := range results {
		sig, err := s.check(res, digests[i], r)
		if err != nil {
			if len(digests) > 1 {
				return nil, fmt.Errorf("%s: item %d: %w", action, i, err)
			}
			return nil, fmt.Errorf("%s: %w", action, err)
		}
		sigs[i] = sig
	}
	return sigs, nil
}

// check parses "vault:v<N>:<base64>", insists on the pinned version and
// verifies the signature with the pinned public key.
func (s *Signer) check(res map[string]any, digest []byte, r request) ([]byte, error) {
	if res == nil {
		return nil, errors.New("missing result")
	}
	if e, _ := res["error"].(string); e != "" {
		return nil, fmt.Errorf("vault: %s", e)
	}
	text, _ := res["signature"].(string)
	version, sig, err := ParseSignature(text)
	if err != nil {
		return nil, err
	}
	if version != s.version {
		return nil, fmt.Errorf("vault signed with key version %d, not the pinned %d", version, s.version)
	}
	if kv, ok := res["key_version"].(json.Number); ok {
		if n, err := kv.Int64(); err == nil && int(n) != s.version {
			return nil, fmt.Errorf("vault reports key_version %d, not the pinned %d", n, s.version)
		}
	}
	if len(sig) != s.pub.Size() {
		return nil, fmt.Errorf("signature is %d bytes, the %d-bit key makes %d", len(sig), s.pub.N.BitLen(), s.pub.Size())
	}
	if r.pss {
		err = rsa.VerifyPSS(s.pub, r.hash, digest, sig, &rsa.PSSOptions{SaltLength: r.saltLen, Hash: r.hash})
	} else {
		err = rsa.VerifyPKCS1v15(s.pub, r.hash, digest, sig)
	}
	if err != nil {
		return nil, fmt.Errorf("the signature vault returned does not verify with the public key of version %d "+
			"(wrong key or version behind the address, or a server that ignored signature_algorithm/salt_length): %w",
			s.version, err)
	}
	return sig, nil
}

// ParseSignature splits Transit's "vault:v<N>:<base64>" into the key
// version and the raw signature.
func ParseSignature(text string) (int, []byte, error) {
	parts := strings.Split(text, ":")
	if len(parts) != 3 || parts[0] != "vault" || !strings.HasPrefix(parts[1], "v") {
		return 0, nil, fmt.Errorf("signature %q is not of the form vault:v<N>:<base64>", truncate(text, 40))
	}
	v, err := strconv.Atoi(parts[1][1:])
	if err != nil || v <= 0 {
		return 0, nil, fmt.Errorf("signature %q has no valid key version", truncate(text, 40))
	}
	sig, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil {
		return 0, nil, fmt.Errorf("signature is not base64: %w", err)
	}
	return v, sig, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// hint adds the fix for Transit answers whose text is known.
func (s *Signer) hint(orig, err error) error {
	var re *api.ResponseError
	if !errors.As(orig, &re) {
		return err
	}
	msg := strings.Join(re.Errors, " ")
	p := s.KeyPath()
	switch {
	case strings.Contains(msg, "less than the minimum encryption key version"):
		return fmt.Errorf("%w\n(min_encryption_version of %s was raised above the pinned version %d: lower it on %s/config, "+
			"or roll the CA over to a newer version)", err, p, s.version, p)
	case strings.Contains(msg, "signing key not found"):
		return fmt.Errorf("%w\n(%s no longer exists: was it deleted? The CA cannot sign without it)", err, p)
	case strings.Contains(msg, "higher than the latest key version"):
		return fmt.Errorf("%w\n(%s has fewer versions than the pinned %d: was it deleted and re-created?)", err, p, s.version)
	}
	return err
}

// Open is the whole setup for a provider: log in (Login), create or adopt
// cfg.KeyName (EnsureKey with cfg.KeyType), and return a signer pinned to
// cfg.KeyVersion (0 = latest now; store Signer.KeyVersion() and pass it on
// later runs so a rotation never changes the CA key).
func Open(ctx context.Context, cfg Config) (*Signer, KeyInfo, []string, error) {
	if cfg.KeyName == "" {
		return nil, KeyInfo{}, nil, errors.New("vault CA: key name is empty")
	}
	client, err := Login(ctx, cfg)
	if err != nil {
		return nil, KeyInfo{}, nil, err
	}
	info, warnings, err := EnsureKey(ctx, client, cfg.mount(), cfg.KeyName, cfg.KeyType)
	if err != nil {
		return nil, info, warnings, err
	}
	s, err := NewSigner(ctx, client, cfg.mount(), cfg.KeyName, cfg.KeyVersion)
	if err != nil {
		return nil, info, warnings, err
	}
	return s, info, warnings, nil
}
