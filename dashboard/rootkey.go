package dashboard

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
)

// The root CA key at rest. With a passphrase (--passphrase or
// NVFL_DASHBOARD_PP, as NVFlare's), the key PEM is sealed with AES-256-GCM
// under an argon2id key from the passphrase; without one it is plain PEM in
// the 0600 database, as NVFlare keeps it without a passphrase.
const sealedPrefix = "flare-dashboard-sealed-v1:"

// ErrRootKeyLocked: the root key is sealed and no or a wrong passphrase
// was given.
var ErrRootKeyLocked = errors.New("the root CA key is encrypted: start flare-dashboard with the right --passphrase")

func passphraseKey(pp string, salt []byte) []byte {
	return argonKey([]byte(pp), salt, 3, 64*1024, 1, 32)
}

// sealRootKey returns keyPEM sealed under pp, or keyPEM itself when pp is "".
func sealRootKey(keyPEM []byte, pp string) (string, error) {
	if pp == "" {
		return string(keyPEM), nil
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	block, err := aes.NewCipher(passphraseKey(pp, salt))
	if err != nil {
		return "", err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	out := append(append(salt, nonce...), gcm.Seal(nil, nonce, keyPEM, []byte(sealedPrefix))...)
	return sealedPrefix + base64.StdEncoding.EncodeToString(out), nil
}

// openRootKey returns the key PEM from what sealRootKey stored.
func openRootKey(stored, pp string) ([]byte, error) {
	if !strings.HasPrefix(stored, sealedPrefix) {
		return []byte(stored), nil
	}
	if pp == "" {
		return nil, ErrRootKeyLocked
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(stored, sealedPrefix))
	if err != nil || len(raw) < 16+12+16 {
		return nil, errors.New("the stored root CA key is corrupt")
	}
	block, err := aes.NewCipher(passphraseKey(pp, raw[:16]))
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	plain, err := gcm.Open(nil, raw[16:16+gcm.NonceSize()], raw[16+gcm.NonceSize():], []byte(sealedPrefix))
	if err != nil {
		return nil, ErrRootKeyLocked
	}
	return plain, nil
}
