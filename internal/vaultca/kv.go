package vaultca

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/api"
)

// KV is a folder of a Vault KV v2 mount that holds what a project needs
// across Terraform runs besides state: its participants' private keys and
// a copy of the root certificate. Entries are written once (check-and-set
// 0) and removed with all their versions.
//
// Policy the provider's token needs on it (mount "secret", path "flare"):
//
//	path "secret/data/flare/*"     { capabilities = ["create", "read"] }
//	path "secret/metadata/flare/*" { capabilities = ["delete"] }
type KV struct {
	client *api.Client
	Mount  string
	Path   string
}

// ErrExists means a create-only write found an entry.
var ErrExists = errors.New("already exists")

// NewKV returns the KV folder mount/path.
func NewKV(client *api.Client, mount, path string) KV {
	return KV{client: client, Mount: strings.Trim(mount, "/"), Path: strings.Trim(path, "/")}
}

func (k KV) rel(name string) string { return k.Path + "/" + strings.Trim(name, "/") }

// Location names an entry as the CLI does: "<mount>/<path>/<name>"
// (`bao kv get -mount=<mount> <path>/<name>`).
func (k KV) Location(name string) string { return k.Mount + "/" + k.rel(name) }

func (k KV) dataPath(name string) string     { return k.Mount + "/data/" + k.rel(name) }
func (k KV) metadataPath(name string) string { return k.Mount + "/metadata/" + k.rel(name) }

// Create writes an entry that must not exist yet; an existing one gives
// an error wrapping ErrExists.
func (k KV) Create(ctx context.Context, name string, data map[string]any) error {
	_, err := k.client.KVv2(k.Mount).Put(ctx, k.rel(name), data, api.WithCheckAndSet(0))
	if err == nil {
		return nil
	}
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && strings.Contains(strings.Join(re.Errors, " "), "check-and-set") {
		return fmt.Errorf("%s: %w", k.Location(name), ErrExists)
	}
	return describe(k.client, "write "+k.Location(name), err, "create", k.dataPath(name))
}

// Get reads an entry's latest version. A missing (or deleted) entry gives
// an error wrapping fs.ErrNotExist.
func (k KV) Get(ctx context.Context, name string) (map[string]any, error) {
	s, err := k.client.KVv2(k.Mount).Get(ctx, k.rel(name))
	if errors.Is(err, api.ErrSecretNotFound) || (err == nil && (s == nil || s.Data == nil)) {
		return nil, fmt.Errorf("%s is not in Vault KV at %s: %w", k.Location(name), k.client.Address(), fs.ErrNotExist)
	}
	if err != nil {
		return nil, describe(k.client, "read "+k.Location(name), err, "read", k.dataPath(name))
	}
	return s.Data, nil
}

// GetString reads one string field of an entry.
func (k KV) GetString(ctx context.Context, name, field string) (string, error) {
	data, err := k.Get(ctx, name)
	if err != nil {
		return "", err
	}
	v, ok := data[field].(string)
	if !ok || v == "" {
		return "", fmt.Errorf("%s has no %q field", k.Location(name), field)
	}
	return v, nil
}

// Delete removes an entry with all its versions; a missing one is fine.
func (k KV) Delete(ctx context.Context, name string) error {
	err := k.client.KVv2(k.Mount).DeleteMetadata(ctx, k.rel(name))
	var re *api.ResponseError
	if err == nil || (errors.As(err, &re) && re.StatusCode == http.StatusNotFound) {
		return nil
	}
	return describe(k.client, "delete "+k.Location(name), err, "delete", k.metadataPath(name))
}

// Exists reports whether an entry is there.
func (k KV) Exists(ctx context.Context, name string) (bool, error) {
	_, err := k.Get(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
