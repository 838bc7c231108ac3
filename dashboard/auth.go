package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/argon2"
)

// Passwords: NVFlare 2.9 hashes with werkzeug's generate_password_hash
// (Werkzeug 3.1: scrypt, N=32768, r=8, p=1). We use argon2id (RFC 9106,
// OWASP's first choice: memory-hard like scrypt, no 72-byte cut like
// bcrypt), stored as a PHC string so parameters can change later.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024 // KiB (OWASP minimum for argon2id)
	argonThreads = 1
	argonKeyLen  = 32
)

// hashSlots bounds concurrent argon2id computations: each takes
// argonMemory KiB, so a burst of logins cannot exhaust memory.
var hashSlots = make(chan struct{}, max(2, runtime.NumCPU()))

func argonKey(pw, salt []byte, t, m uint32, p uint8, n uint32) []byte {
	hashSlots <- struct{}{}
	defer func() { <-hashSlots }()
	return argon2.IDKey(pw, salt, t, m, p, n)
}

// HashPassword returns a PHC-format argon2id hash of pw.
func HashPassword(pw string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argonKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// CheckPassword reports whether pw matches hash (a HashPassword result).
func CheckPassword(hash, pw string) bool {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || t == 0 || p == 0 || m > 1<<20 || t > 16 {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argonKey([]byte(pw), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// TokenTTL is flask_jwt_extended's JWT_ACCESS_TOKEN_EXPIRES in NVFlare's config.
const TokenTTL = 30 * time.Minute

// Claims are the claims of NVFlare's access tokens.
type Claims struct {
	Fresh        bool   `json:"fresh"`
	Iat          int64  `json:"iat"`
	Jti          string `json:"jti"`
	Type         string `json:"type"`
	Sub          string `json:"sub"`
	Nbf          int64  `json:"nbf"`
	Csrf         string `json:"csrf"`
	Exp          int64  `json:"exp"`
	Role         string `json:"role"`
	Organization string `json:"organization"`
	Approved     bool   `json:"approved"`
}

// LoadOrCreateKey reads the JWT signing key from dir/jwt.key (0600),
// creating it with 32 random bytes on first start, so tokens survive
// restarts (NVFlare's key is random per process unless SECRET_KEY is set).
func LoadOrCreateKey(dir string) ([]byte, error) {
	path := filepath.Join(dir, "jwt.key")
	if b, err := os.ReadFile(path); err == nil {
		k, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(k) < 16 {
			return nil, fmt.Errorf("%s: not a hex key of at least 16 bytes", path)
		}
		return k, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteString(hex.EncodeToString(k) + "\n"); err != nil {
		f.Close()
		return nil, err
	}
	return k, f.Close()
}

var b64url = base64.RawURLEncoding

// SignToken makes an HS256 JWT for u, as flask_jwt_extended's
// create_access_token with NVFlare's additional claims.
func SignToken(key []byte, u *User, at time.Time) (string, error) {
	c := Claims{
		Iat: at.Unix(), Nbf: at.Unix(), Exp: at.Add(TokenTTL).Unix(),
		Jti: uuid.NewString(), Csrf: uuid.NewString(), Type: "access",
		Sub: u.Email, Role: u.Role, Organization: u.Organization, Approved: u.ApprovalState >= 100,
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signing := b64url.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + b64url.EncodeToString(payload)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(signing))
	return signing + "." + b64url.EncodeToString(mac.Sum(nil)), nil
}

// authError is an answer to a request whose token is refused, with
// flask_jwt_extended's status and body.
type authError struct {
	status int
	body   map[string]any
}

func msgErr(status int, msg string) *authError {
	return &authError{status, map[string]any{"msg": msg}}
}

// VerifyToken checks an Authorization header value as flask_jwt_extended's
// jwt_required() does and returns the claims or the error answer.
func VerifyToken(key []byte, header string, at time.Time) (*Claims, *authError) {
	if header == "" {
		return nil, msgErr(401, "Missing Authorization Header")
	}
	fields := strings.Fields(header)
	if len(fields) == 0 || fields[0] != "Bearer" {
		return nil, msgErr(401, "Missing 'Bearer' type in 'Authorization' header. Expected 'Authorization: Bearer <JWT>'")
	}
	if len(fields) != 2 {
		return nil, msgErr(422, "Bad Authorization header. Expected 'Authorization: Bearer <JWT>'")
	}
	parts := strings.Split(fields[1], ".")
	if len(parts) != 3 {
		return nil, msgErr(422, "Not enough segments")
	}
	hdr, err := b64url.DecodeString(strings.TrimRight(parts[0], "="))
	if err != nil {
		return nil, msgErr(422, "Invalid header padding")
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(hdr, &h) != nil {
		return nil, msgErr(422, "Invalid header string")
	}
	if h.Alg != "HS256" {
		return nil, msgErr(422, "The specified alg value is not allowed")
	}
	sig, err := b64url.DecodeString(strings.TrimRight(parts[2], "="))
	if err != nil {
		return nil, msgErr(422, "Invalid crypto padding")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return nil, msgErr(422, "Signature verification failed")
	}
	payload, err := b64url.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, msgErr(422, "Invalid payload padding")
	}
	var c Claims
	if json.Unmarshal(payload, &c) != nil {
		return nil, msgErr(422, "Invalid payload string")
	}
	if c.Exp != 0 && at.Unix() >= c.Exp {
		return nil, &authError{401, map[string]any{"status": "unauthenticated"}}
	}
	if c.Nbf != 0 && at.Unix() < c.Nbf {
		return nil, msgErr(422, "The token is not yet valid (nbf)")
	}
	if c.Type != "access" {
		return nil, msgErr(422, "Only non-refresh tokens are allowed")
	}
	if c.Sub == "" {
		return nil, msgErr(422, "Missing claim: sub")
	}
	return &c, nil
}
