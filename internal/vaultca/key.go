package vaultca

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// KeyInfo is what Transit says about a key (GET <mount>/keys/<name>).
type KeyInfo struct {
	Mount                string
	Name                 string
	Type                 string // e.g. "rsa-2048"
	LatestVersion        int
	MinEncryptionVersion int // signing needs key_version >= this (0 = no floor)
	MinAvailableVersion  int // versions below were trimmed
	Exportable           bool
	AllowPlaintextBackup bool
	DeletionAllowed      bool
	AutoRotatePeriod     time.Duration
	Created              bool // EnsureKey made it in this call
	// PublicKeys holds the RSA public key of every available version.
	PublicKeys map[int]*rsa.PublicKey
}

// Path is the key's API path, e.g. "transit/keys/flare-ca".
func (k KeyInfo) Path() string { return keyPath(k.Mount, k.Name) }

// Versions lists the available versions in ascending order.
func (k KeyInfo) Versions() []int {
	v := make([]int, 0, len(k.PublicKeys))
	for n := range k.PublicKeys {
		v = append(v, n)
	}
	sort.Ints(v)
	return v
}

func keyPath(mount, name string) string  { return strings.Trim(mount, "/") + "/keys/" + name }
func signPath(mount, name string) string { return strings.Trim(mount, "/") + "/sign/" + name }

// ErrKeyNotFound means Transit has no key by that name (or no Transit mount
// at that path).
var ErrKeyNotFound = errors.New("transit key not found")

func rsaBits(keyType string) int {
	switch keyType {
	case KeyTypeRSA2048:
		return 2048
	case KeyTypeRSA3072:
		return 3072
	case KeyTypeRSA4096:
		return 4096
	}
	return 0
}

func checkArgs(mount, name string) error {
	if strings.Trim(mount, "/") == "" {
		return errors.New("transit mount path is empty")
	}
	if name == "" || strings.ContainsAny(name, "/?#% ") {
		return fmt.Errorf("transit key name %q is not valid (empty or contains '/', '?', '#', '%%' or space)", name)
	}
	return nil
}

// ReadKey reads a Transit key. A missing key (or mount) gives an error
// wrapping ErrKeyNotFound. Needs `read` on <mount>/keys/<name>.
func ReadKey(ctx context.Context, client *api.Client, mount, name string) (KeyInfo, error) {
	mount = strings.Trim(mount, "/")
	if err := checkArgs(mount, name); err != nil {
		return KeyInfo{}, err
	}
	path := keyPath(mount, name)
	secret, err := client.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return KeyInfo{}, describe(client, "read transit key "+path, err, "read", path)
	}
	if secret == nil || secret.Data == nil {
		return KeyInfo{}, fmt.Errorf("%w: %s at %s (is Transit mounted at %q and the key name right?)",
			ErrKeyNotFound, path, client.Address(), mount+"/")
	}
	info, err := parseKey(secret.Data)
	if err != nil {
		return KeyInfo{}, fmt.Errorf("read transit key %s: %w", path, err)
	}
	info.Mount, info.Name = mount, name
	return info, nil
}

type keyData struct {
	Type                 string                     `json:"type"`
	LatestVersion        int                        `json:"latest_version"`
	MinEncryptionVersion int                        `json:"min_encryption_version"`
	MinAvailableVersion  int                        `json:"min_available_version"`
	Exportable           bool                       `json:"exportable"`
	AllowPlaintextBackup bool                       `json:"allow_plaintext_backup"`
	DeletionAllowed      bool                       `json:"deletion_allowed"`
	AutoRotatePeriod     json.RawMessage            `json:"auto_rotate_period"`
	Keys                 map[string]json.RawMessage `json:"keys"`
}

func parseKey(data map[string]any) (KeyInfo, error) {
	raw, err := json.Marshal(data) // json.Number values marshal back as numbers
	if err != nil {
		return KeyInfo{}, err
	}
	var d keyData
	if err := json.Unmarshal(raw, &d); err != nil {
		return KeyInfo{}, fmt.Errorf("unexpected answer: %w", err)
	}
	info := KeyInfo{
		Type:                 d.Type,
		LatestVersion:        d.LatestVersion,
		MinEncryptionVersion: d.MinEncryptionVersion,
		MinAvailableVersion:  d.MinAvailableVersion,
		Exportable:           d.Exportable,
		AllowPlaintextBackup: d.AllowPlaintextBackup,
		DeletionAllowed:      d.DeletionAllowed,
		AutoRotatePeriod:     parsePeriod(d.AutoRotatePeriod),
		PublicKeys:           map[int]*rsa.PublicKey{},
	}
	if rsaBits(d.Type) == 0 {
		return info, nil // not RSA: callers refuse it by type
	}
	for v, entry := range d.Keys {
		n, err := strconv.Atoi(v)
		if err != nil {
			return info, fmt.Errorf("unexpected key version %q", v)
		}
		var e struct {
			PublicKey string `json:"public_key"`
		}
		if err := json.Unmarshal(entry, &e); err != nil {
			return info, fmt.Errorf("version %d: unexpected entry: %w", n, err)
		}
		pub, err := parsePublicKey(e.PublicKey)
		if err != nil {
			return info, fmt.Errorf("version %d: %w", n, err)
		}
		if pub.N.BitLen() != rsaBits(d.Type) {
			return info, fmt.Errorf("version %d: public key has %d bits, type says %s", n, pub.N.BitLen(), d.Type)
		}
		info.PublicKeys[n] = pub
	}
	return info, nil
}

// parsePeriod reads auto_rotate_period, which Vault returns as seconds
// (number) and older versions as a duration string.
func parsePeriod(raw json.RawMessage) time.Duration {
	if len(raw) == 0 {
		return 0
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err == nil {
		if f, err := n.Float64(); err == nil {
			return time.Duration(f * float64(time.Second))
		}
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if d, err := time.ParseDuration(s); err == nil {
			return d
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return time.Duration(f * float64(time.Second))
		}
	}
	return 0
}

func parsePublicKey(pemText string) (*rsa.PublicKey, error) {
	if pemText == "" {
		return nil, errors.New("no public_key in the answer")
	}
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, errors.New("public_key is not PEM")
	}
	var (
		pub any
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, fmt.Errorf("public_key is a PEM %q block", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("public_key: %w", err)
	}
	rsaPub, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public_key is %T, not RSA", pub)
	}
	return rsaPub, nil
}

// checkCAKey refuses keys that cannot hold a root CA: not RSA, of another
// type than wanted (wantType "" accepts any RSA type), or whose private key
// can leave Vault.
func checkCAKey(info KeyInfo, wantType string) error {
	p := info.Path()
	if rsaBits(info.Type) == 0 {
		return fmt.Errorf("transit key %s is of type %q; the CA key must be rsa-2048, rsa-3072 or rsa-4096 "+
			"(NVFlare verifies RSA signatures): choose another key name", p, info.Type)
	}
	if wantType != "" && info.Type != wantType {
		return fmt.Errorf("transit key %s already exists as %s, but key type %s was asked for: "+
			"set the key type to %q to adopt it, or choose another key name", p, info.Type, wantType, info.Type)
	}
	if info.Exportable {
		return fmt.Errorf("refusing transit key %s: it is exportable, so its private key can be read out "+
			"(%s/export/signing-key/%s) and the CA key would not stay in Vault. Transit cannot make a key "+
			"non-exportable again: create a new key under another name (it is created non-exportable)",
			p, info.Mount, info.Name)
	}
	if info.AllowPlaintextBackup {
		return fmt.Errorf("refusing transit key %s: allow_plaintext_backup is set, so %s/backup/%s can hand out "+
			"the private key. The flag cannot be cleared: create a new key under another name", p, info.Mount, info.Name)
	}
	return nil
}

// EnsureKey makes the Transit key <mount>/keys/<name> of keyType, created
// non-exportable and without plaintext backup, or adopts an existing one
// after reading it back: an existing key that is exportable, allows
// plaintext backup, or is of another type than keyType is refused. keyType
// "" creates rsa-2048 and adopts any RSA type.
//
// Needs `read` on <mount>/keys/<name>, plus `update` there to create it.
// Warnings tell about adoption and settings that deserve attention.
func EnsureKey(ctx context.Context, client *api.Client, mount, name, keyType string) (KeyInfo, []string, error) {
	mount = strings.Trim(mount, "/")
	if mount == "" {
		mount = DefaultTransitMount
	}
	if keyType != "" && rsaBits(keyType) == 0 {
		return KeyInfo{}, nil, fmt.Errorf("key type %q is not supported: use rsa-2048, rsa-3072 or rsa-4096", keyType)
	}
	path := keyPath(mount, name)
	info, err := ReadKey(ctx, client, mount, name)
	created := false
	switch {
	case errors.Is(err, ErrKeyNotFound):
		create := keyType
		if create == "" {
			create = KeyTypeRSA2048
		}
		// On an existing name Transit returns the existing key unchanged
		// (no error), so a concurrent creator cannot trick us: we read back
		// and check below either way.
		_, err = client.Logical().WriteWithContext(ctx, path, map[string]any{
			"type":                   create,
			"exportable":             false,
			"allow_plaintext_backup": false,
		})
		if err != nil {
			return KeyInfo{}, nil, describe(client, "create transit key "+path, err, "update", path)
		}
		created = true
		if info, err = ReadKey(ctx, client, mount, name); err != nil {
			return KeyInfo{}, nil, err
		}
	case err != nil:
		return KeyInfo{}, nil, err
	}
	info.Created = created
	if err := checkCAKey(info, keyType); err != nil {
		return info, nil, err
	}
	var warnings []string
	if !created {
		warnings = append(warnings, fmt.Sprintf("adopted existing transit key %s (%s, latest version %d, non-exportable)",
			path, info.Type, info.LatestVersion))
	}
	if info.AutoRotatePeriod > 0 {
		warnings = append(warnings, fmt.Sprintf("transit key %s rotates automatically every %s; the CA stays pinned to "+
			"one version, so new versions are unused. Set auto_rotate_period to 0 on %s/config",
			path, info.AutoRotatePeriod, path))
	}
	if info.DeletionAllowed {
		warnings = append(warnings, fmt.Sprintf("transit key %s has deletion_allowed=true: anyone with `delete` on it "+
			"can destroy the CA key and orphan every kit", path))
	}
	return info, warnings, nil
}
