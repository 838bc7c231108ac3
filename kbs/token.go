package kbs

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flarekit/terraform-provider-flare/kbs/rcar"
)

// Claims are what an attestation token (and a session) says about the
// guest. The token is a JWT (EdDSA, Ed25519) signed by the broker's key.
type Claims struct {
	Issuer   string `json:"iss"`
	IssuedAt int64  `json:"iat"`
	Expires  int64  `json:"exp"`
	ID       string `json:"jti"`
	Tee      string `json:"tee"`
	// Mode is "sev-snp" or "simulated" (go-sev-guest's fake AMD chain,
	// accepted only with simulated: true in the config).
	Mode        string         `json:"mode"`
	Measurement string         `json:"measurement"`
	HostData    string         `json:"host_data"`
	ReportedTCB string         `json:"reported_tcb"`
	PolicyDebug bool           `json:"policy_debug"`
	ChipID      string         `json:"chip_id"`
	TeePubKey   rcar.TeePubKey `json:"tee-pubkey"`
}

const tokenIssuer = "flare-kbs"

var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"EdDSA","typ":"JWT"}`))

func signToken(key ed25519.PrivateKey, c *Claims) (string, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signing := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(body)
	sig := ed25519.Sign(key, []byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

var errToken = errors.New("invalid attestation token")

func verifyToken(pub ed25519.PublicKey, tok string, now time.Time) (*Claims, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || len(tok) > 16<<10 {
		return nil, fmt.Errorf("%w: not a JWT", errToken)
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: header", errToken)
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(hb, &hdr) != nil || hdr.Alg != "EdDSA" {
		return nil, fmt.Errorf("%w: alg is not EdDSA", errToken)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
		return nil, fmt.Errorf("%w: signature does not verify with this broker's key", errToken)
	}
	body, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: claims", errToken)
	}
	var c Claims
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", errToken, err)
	}
	if c.Issuer != tokenIssuer {
		return nil, fmt.Errorf("%w: issuer %q", errToken, c.Issuer)
	}
	if now.Unix() >= c.Expires {
		return nil, fmt.Errorf("%w: expired at %s", errToken, time.Unix(c.Expires, 0).UTC().Format(time.RFC3339))
	}
	return &c, nil
}

// LoadOrCreateTokenKey reads an Ed25519 private key (PKCS#8 PEM) from path,
// or makes one and writes it there (0600) when the file does not exist.
func LoadOrCreateTokenKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("token_key %s: no PEM block", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("token_key %s: %w", path, err)
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("token_key %s: a %T, want an Ed25519 key (or remove the file to have one made)", path, k)
		}
		return ek, nil
	}
	if !os.IsNotExist(err) {
		return nil, fmt.Errorf("token_key: %w", err)
	}
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("token_key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("token_key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return nil, err
	}
	return k, f.Close()
}
