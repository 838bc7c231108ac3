package rcar

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
)

// Response is a resource as the KBS returns it: a JWE in flattened JSON
// serialisation (kbs_types::Response). The GCM additional data is
// ASCII(Protected) (RFC 7516 §5.1 with no aad member).
type Response struct {
	Protected    string `json:"protected"`
	EncryptedKey string `json:"encrypted_key"`
	AAD          string `json:"aad,omitempty"`
	IV           string `json:"iv"`
	Ciphertext   string `json:"ciphertext"`
	Tag          string `json:"tag"`
}

// ProtectedHeader is the JWE protected header.
type ProtectedHeader struct {
	Alg string `json:"alg"`
	Enc string `json:"enc"`
}

// Seal encrypts plaintext to pub: a random 256-bit content key wrapped
// with RSA-OAEP (SHA-256, as RSA-OAEP-256), the content with AES-256-GCM
// (96-bit random IV).
func Seal(pub *rsa.PublicKey, plaintext []byte) (*Response, error) {
	hdr, err := json.Marshal(ProtectedHeader{Alg: AlgRSAOAEP256, Enc: EncA256GCM})
	if err != nil {
		return nil, err
	}
	protected := b64(hdr)
	cek := make([]byte, 32)
	if _, err := rand.Read(cek); err != nil {
		return nil, err
	}
	defer clear(cek)
	ek, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, cek, nil)
	if err != nil {
		return nil, fmt.Errorf("jwe: wrapping the content key: %w", err)
	}
	gcm, err := newGCM(cek)
	if err != nil {
		return nil, err
	}
	iv := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	sealed := gcm.Seal(nil, iv, plaintext, []byte(protected))
	ct, tag := sealed[:len(sealed)-gcm.Overhead()], sealed[len(sealed)-gcm.Overhead():]
	return &Response{
		Protected:    protected,
		EncryptedKey: b64(ek),
		IV:           b64(iv),
		Ciphertext:   b64(ct),
		Tag:          b64(tag),
	}, nil
}

// ErrJWE is wrapped by every Open error about the message itself.
var ErrJWE = errors.New("jwe")

// Open decrypts a Response made for priv (RSA-OAEP-256 + A256GCM only).
func Open(priv *rsa.PrivateKey, r *Response) ([]byte, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: no response", ErrJWE)
	}
	hb, err := unb64(r.Protected)
	if err != nil {
		return nil, fmt.Errorf("%w: protected header is not base64url", ErrJWE)
	}
	var hdr map[string]any
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return nil, fmt.Errorf("%w: protected header: %v", ErrJWE, err)
	}
	if hdr["alg"] != AlgRSAOAEP256 || hdr["enc"] != EncA256GCM {
		return nil, fmt.Errorf("%w: alg %v enc %v, want %s and %s", ErrJWE, hdr["alg"], hdr["enc"], AlgRSAOAEP256, EncA256GCM)
	}
	if _, crit := hdr["crit"]; crit {
		return nil, fmt.Errorf("%w: critical header parameters are not supported", ErrJWE)
	}
	ek, err1 := unb64(r.EncryptedKey)
	iv, err2 := unb64(r.IV)
	ct, err3 := unb64OrEmpty(r.Ciphertext)
	tag, err4 := unb64(r.Tag)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return nil, fmt.Errorf("%w: a member is not base64url", ErrJWE)
	}
	cek, err := rsa.DecryptOAEP(sha256.New(), nil, priv, ek, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: the content key was not encrypted to this key", ErrJWE)
	}
	defer clear(cek)
	if len(cek) != 32 {
		return nil, fmt.Errorf("%w: content key is %d bytes, want 32", ErrJWE, len(cek))
	}
	gcm, err := newGCM(cek)
	if err != nil {
		return nil, err
	}
	if len(iv) != gcm.NonceSize() || len(tag) != gcm.Overhead() {
		return nil, fmt.Errorf("%w: iv is %d bytes and tag %d, want %d and %d", ErrJWE, len(iv), len(tag), gcm.NonceSize(), gcm.Overhead())
	}
	aad := r.Protected
	if r.AAD != "" {
		aad += "." + r.AAD
	}
	pt, err := gcm.Open(nil, iv, append(ct, tag...), []byte(aad))
	if err != nil {
		return nil, fmt.Errorf("%w: content does not decrypt (tampered, or not for this key)", ErrJWE)
	}
	return pt, nil
}

func unb64OrEmpty(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	return unb64(s)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}
