// Package rcar is Trustee's KBS protocol, version 0.4.0 (RCAR: Request,
// Challenge, Attestation, Response), as the kbs-types crate defines its
// JSON: the messages, the canonical JSON (RFC 8785) and SHA-384 binding of
// the runtime data into the SNP REPORT_DATA, SNP evidence in the shape the
// virtee/sev crate serialises (what Trustee's SNP verifier reads), and the
// flattened JWE (RSA-OAEP-256 + A256GCM) a resource comes back in.
//
// It uses the standard library only, so the guest client (kbs/client)
// that links it stays small and static.
package rcar

import (
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
)

// Protocol constants (Trustee kbs/src/attestation/backend.rs).
const (
	// ProtocolVersion is the only version Trustee accepts (VersionReq "=0.4.0").
	ProtocolVersion = "0.4.0"
	// TeeSNP is the tee name of AMD SEV-SNP evidence.
	TeeSNP = "snp"
	// SessionCookie is the session cookie set by /auth.
	SessionCookie = "kbs-session-id"
	// ErrorTypePrefix prefixes the "type" of every error (RFC 7807).
	ErrorTypePrefix = "https://github.com/confidential-containers/kbs/errors/"
	// AlgRSAOAEP256 is the JWK "alg" of an RSA TEE key and the JWE "alg".
	AlgRSAOAEP256 = "RSA-OAEP-256"
	// EncA256GCM is the JWE "enc".
	EncA256GCM = "A256GCM"
)

// Request is the body of POST /kbs/v0/auth.
type Request struct {
	Version     string          `json:"version"`
	Tee         string          `json:"tee"`
	ExtraParams json.RawMessage `json:"extra-params"`
}

// Challenge is the answer to /auth. For snp, ExtraParams is "".
type Challenge struct {
	Nonce       string          `json:"nonce"`
	ExtraParams json.RawMessage `json:"extra-params"`
}

// TeePubKey is the JWK of the TEE's ephemeral key, with exactly the
// members kbs-types' TeePubKey enum has (kty, alg, n, e for RSA; kty, crv,
// alg, x, y for EC): the server re-serialises it before hashing, so any
// other member would change the hash.
type TeePubKey struct {
	Kty string `json:"kty"`
	Crv string `json:"crv,omitempty"`
	Alg string `json:"alg"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
}

// RSAPubKey is the JWK of an RSA key for RSA-OAEP-256.
func RSAPubKey(k *rsa.PublicKey) TeePubKey {
	return TeePubKey{
		Kty: "RSA",
		Alg: AlgRSAOAEP256,
		N:   b64(k.N.Bytes()),
		E:   b64(big.NewInt(int64(k.E)).Bytes()),
	}
}

// RSA returns the RSA public key of an RSA-OAEP-256 JWK.
func (k TeePubKey) RSA() (*rsa.PublicKey, error) {
	if k.Kty != "RSA" {
		return nil, fmt.Errorf("tee-pubkey: kty %q: this broker encrypts to RSA keys (kty RSA, alg %s) only", k.Kty, AlgRSAOAEP256)
	}
	if k.Alg != AlgRSAOAEP256 {
		return nil, fmt.Errorf("tee-pubkey: alg %q: want %s (RSA1_5 is not offered)", k.Alg, AlgRSAOAEP256)
	}
	n, err := unb64(k.N)
	if err != nil || len(n) == 0 {
		return nil, errors.New("tee-pubkey: n is not base64url")
	}
	e, err := unb64(k.E)
	if err != nil || len(e) == 0 || len(e) > 4 {
		return nil, errors.New("tee-pubkey: e is not a base64url integer of at most 4 bytes")
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	if bits := pub.N.BitLen(); bits < 2048 || bits > 8192 {
		return nil, fmt.Errorf("tee-pubkey: RSA modulus of %d bits, want 2048 to 8192", bits)
	}
	if pub.E < 3 || pub.E%2 == 0 {
		return nil, fmt.Errorf("tee-pubkey: RSA exponent %d", pub.E)
	}
	return pub, nil
}

// RuntimeData is the attestation's runtime-data.
type RuntimeData struct {
	Nonce     string    `json:"nonce"`
	TeePubKey TeePubKey `json:"tee-pubkey"`
}

// InitData is optional init-data (its digest is SNP HOST_DATA).
type InitData struct {
	Format string `json:"format"`
	Body   string `json:"body"`
}

// CompositeEvidence is tee-evidence. AdditionalEvidence is required by
// kbs-types (no default): send "".
type CompositeEvidence struct {
	PrimaryEvidence    json.RawMessage `json:"primary_evidence"`
	AdditionalEvidence string          `json:"additional_evidence"`
}

// Attestation is the body of POST /kbs/v0/attest.
type Attestation struct {
	InitData    *InitData         `json:"init-data"`
	RuntimeData RuntimeData       `json:"runtime-data"`
	TeeEvidence CompositeEvidence `json:"tee-evidence"`
}

// AttestationToken is the answer to /attest.
type AttestationToken struct {
	Token string `json:"token"`
}

// ErrorInformation is an error body (RFC 7807 as Trustee writes it).
type ErrorInformation struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
}

// RuntimeDataDigest is SHA-384 of the canonical JSON of
// {"tee-pubkey": key, "nonce": nonce, "additional-evidence": additional},
// as Trustee's backend (and guest-components' rcar client) compute it.
func RuntimeDataDigest(nonce string, key TeePubKey, additionalEvidence string) ([48]byte, error) {
	c, err := Canonical(map[string]any{
		"tee-pubkey":          key,
		"nonce":               nonce,
		"additional-evidence": additionalEvidence,
	})
	if err != nil {
		return [48]byte{}, err
	}
	return sha512.Sum384(c), nil
}

// ReportData is the SNP REPORT_DATA for the runtime data: its
// RuntimeDataDigest followed by 16 zero bytes.
func ReportData(nonce string, key TeePubKey, additionalEvidence string) ([64]byte, error) {
	var rd [64]byte
	d, err := RuntimeDataDigest(nonce, key, additionalEvidence)
	if err != nil {
		return rd, err
	}
	copy(rd[:], d[:])
	return rd, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// unb64 reads base64url without padding (and tolerates padding).
func unb64(s string) ([]byte, error) {
	if n := len(s) % 4; n != 0 || len(s) == 0 {
		return base64.RawURLEncoding.DecodeString(s)
	}
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.URLEncoding.DecodeString(s)
}
