package kbs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/vault/api"
)

// DefaultPolicyPrefix is where VaultStore keeps policy records inside the
// KV mount: <mount>/.flare-policy/<repo>/<type>/<tag>.
const DefaultPolicyPrefix = ".flare-policy"

// VaultStore keeps secrets in a Vault or OpenBao KV version 1 mount at
// Trustee's layout, <mount>/<repo>/<type>/<tag> with the secret in field
// "data" (a string; a secret that is not UTF-8 is written as an array of
// byte values, which Trustee's Vault plugin reads too), so a real Trustee
// with storage_backend_type "Vault" serves the same secrets.
//
// Policy records live in the same mount under
// <mount>/<PolicyPrefix>/<repo>/<type>/<tag> (fields measurements,
// host_data, min_tcb, allow_debug). Same mount, so one token policy and one
// place to look; a Trustee request names exactly three path segments below
// the mount and can never address these four-segment paths, and resource
// parts may not start with "." so no resource can shadow the prefix.
type VaultStore struct {
	c            *api.Client
	mount        string
	policyPrefix string
}

// NewVaultStore uses client (address, token, TLS already set) and the KV
// v1 mount (e.g. "kv"). policyPrefix "" means DefaultPolicyPrefix.
func NewVaultStore(client *api.Client, mount, policyPrefix string) (*VaultStore, error) {
	mount = strings.Trim(mount, "/")
	if client == nil {
		return nil, errors.New("vault store: no client")
	}
	if mount == "" {
		return nil, errors.New("vault store: no KV mount given (e.g. \"kv\", enabled with `bao secrets enable -version=1 -path=kv kv`)")
	}
	if policyPrefix == "" {
		policyPrefix = DefaultPolicyPrefix
	}
	policyPrefix = strings.Trim(policyPrefix, "/")
	if !strings.HasPrefix(policyPrefix, ".") || strings.Contains(policyPrefix, "/") {
		return nil, fmt.Errorf("vault store: policy prefix %q must be one path segment starting with '.' (so no resource path can collide with it)", policyPrefix)
	}
	return &VaultStore{c: client, mount: mount, policyPrefix: policyPrefix}, nil
}

func (s *VaultStore) secretPath(p ResourcePath) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	return s.mount + "/" + p.String(), nil
}

func (s *VaultStore) policyPath(p ResourcePath) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	return s.mount + "/" + s.policyPrefix + "/" + p.String(), nil
}

func (s *VaultStore) wrap(op, path string, err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if strings.Contains(msg, "versioned K/V") || strings.Contains(msg, "Invalid path for a versioned") || s.isKV2() {
		return fmt.Errorf("vault store: %s %s: mount %q is KV version 2; Trustee's layout needs KV version 1 (`bao secrets enable -version=1 -path=%s kv`)", op, path, s.mount, s.mount)
	}
	return fmt.Errorf("vault store: %s %s: %w", op, path, err)
}

// isKV2 asks the mount's version the way the vault CLI does
// (sys/internal/ui/mounts, readable with any token that may use the mount).
func (s *VaultStore) isKV2() bool {
	sec, err := s.c.Logical().Read("sys/internal/ui/mounts/" + s.mount)
	if err != nil || sec == nil {
		return false
	}
	opts, _ := sec.Data["options"].(map[string]any)
	return opts != nil && opts["version"] == "2"
}

// PutSecret implements Store.
func (s *VaultStore) PutSecret(ctx context.Context, p ResourcePath, secret []byte) error {
	path, err := s.secretPath(p)
	if err != nil {
		return err
	}
	var data any = string(secret)
	if !utf8.Valid(secret) {
		arr := make([]int, len(secret))
		for i, b := range secret {
			arr[i] = int(b)
		}
		data = arr
	}
	_, err = s.c.Logical().WriteWithContext(ctx, path, map[string]any{"data": data})
	return s.wrap("write", path, err)
}

// GetSecret implements Store.
func (s *VaultStore) GetSecret(ctx context.Context, p ResourcePath) ([]byte, error) {
	path, err := s.secretPath(p)
	if err != nil {
		return nil, err
	}
	sec, err := s.c.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return nil, s.wrap("read", path, err)
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("secret %s: %w", p, ErrNotFound)
	}
	switch v := sec.Data["data"].(type) {
	case string:
		return []byte(v), nil
	case []any:
		out := make([]byte, len(v))
		for i, x := range v {
			n, ok := x.(json.Number)
			var f int64
			if ok {
				f, err = n.Int64()
			}
			if !ok || err != nil || f < 0 || f > 255 {
				return nil, fmt.Errorf("vault store: %s: field data is an array but element %d is not a byte value", path, i)
			}
			out[i] = byte(f)
		}
		return out, nil
	case nil:
		return nil, fmt.Errorf("vault store: %s has no field \"data\" (Trustee's layout keeps the secret in field data)", path)
	default:
		return nil, fmt.Errorf("vault store: %s: field data is %T, want a string", path, v)
	}
}

// DeleteSecret implements Store.
func (s *VaultStore) DeleteSecret(ctx context.Context, p ResourcePath) error {
	path, err := s.secretPath(p)
	if err != nil {
		return err
	}
	_, err = s.c.Logical().DeleteWithContext(ctx, path)
	return s.wrap("delete", path, err)
}

// PutPolicy implements Store.
func (s *VaultStore) PutPolicy(ctx context.Context, p ResourcePath, pol Policy) error {
	path, err := s.policyPath(p)
	if err != nil {
		return err
	}
	pol, err = pol.Normalize()
	if err != nil {
		return err
	}
	_, err = s.c.Logical().WriteWithContext(ctx, path, map[string]any{
		"measurements": pol.Measurements,
		"host_data":    pol.HostData,
		"min_tcb":      pol.MinTCB,
		"allow_debug":  false,
	})
	return s.wrap("write", path, err)
}

// GetPolicy implements Store.
func (s *VaultStore) GetPolicy(ctx context.Context, p ResourcePath) (Policy, error) {
	path, err := s.policyPath(p)
	if err != nil {
		return Policy{}, err
	}
	sec, err := s.c.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return Policy{}, s.wrap("read", path, err)
	}
	if sec == nil || sec.Data == nil {
		return Policy{}, fmt.Errorf("policy of %s: %w", p, ErrNotFound)
	}
	b, err := json.Marshal(sec.Data)
	if err != nil {
		return Policy{}, err
	}
	var pol Policy
	if err := json.Unmarshal(b, &pol); err != nil {
		return Policy{}, fmt.Errorf("vault store: policy %s: %w", path, err)
	}
	return pol.Normalize()
}

// DeletePolicy implements Store.
func (s *VaultStore) DeletePolicy(ctx context.Context, p ResourcePath) error {
	path, err := s.policyPath(p)
	if err != nil {
		return err
	}
	_, err = s.c.Logical().DeleteWithContext(ctx, path)
	return s.wrap("delete", path, err)
}
