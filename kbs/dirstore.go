package kbs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// DirStore keeps resources and policies as files under a directory, for
// the local-CA path (no Vault): <dir>/resources/<repo>/<type>/<tag> (the
// secret's bytes) and <dir>/policies/<repo>/<type>/<tag>.json. Files are
// 0600, directories 0700, and every write goes to a temporary file that is
// synced and renamed into place.
type DirStore struct{ dir string }

// NewDirStore opens (and creates, 0700) the directory.
func NewDirStore(dir string) (*DirStore, error) {
	if dir == "" {
		return nil, errors.New("dir store: no directory given")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("dir store: %w", err)
	}
	return &DirStore{dir: abs}, nil
}

// Dir is the store's directory.
func (s *DirStore) Dir() string { return s.dir }

func (s *DirStore) path(kind string, p ResourcePath, ext string) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	return filepath.Join(s.dir, kind, p.Repo, p.Type, p.Tag+ext), nil
}

func (s *DirStore) write(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func (s *DirStore) read(path string, p ResourcePath, what string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s of %s: %w", what, p, ErrNotFound)
	}
	return b, err
}

func remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// PutSecret implements Store.
func (s *DirStore) PutSecret(_ context.Context, p ResourcePath, secret []byte) error {
	path, err := s.path("resources", p, "")
	if err != nil {
		return err
	}
	return s.write(path, secret)
}

// GetSecret implements Store.
func (s *DirStore) GetSecret(_ context.Context, p ResourcePath) ([]byte, error) {
	path, err := s.path("resources", p, "")
	if err != nil {
		return nil, err
	}
	return s.read(path, p, "secret")
}

// DeleteSecret implements Store.
func (s *DirStore) DeleteSecret(_ context.Context, p ResourcePath) error {
	path, err := s.path("resources", p, "")
	if err != nil {
		return err
	}
	return remove(path)
}

// PutPolicy implements Store.
func (s *DirStore) PutPolicy(_ context.Context, p ResourcePath, pol Policy) error {
	path, err := s.path("policies", p, ".json")
	if err != nil {
		return err
	}
	pol, err = pol.Normalize()
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(pol, "", "  ")
	if err != nil {
		return err
	}
	return s.write(path, append(b, '\n'))
}

// GetPolicy implements Store.
func (s *DirStore) GetPolicy(_ context.Context, p ResourcePath) (Policy, error) {
	path, err := s.path("policies", p, ".json")
	if err != nil {
		return Policy{}, err
	}
	b, err := s.read(path, p, "policy")
	if err != nil {
		return Policy{}, err
	}
	var pol Policy
	if err := json.Unmarshal(b, &pol); err != nil {
		return Policy{}, fmt.Errorf("policy of %s (%s): %w", p, path, err)
	}
	return pol.Normalize()
}

// DeletePolicy implements Store.
func (s *DirStore) DeletePolicy(_ context.Context, p ResourcePath) error {
	path, err := s.path("policies", p, ".json")
	if err != nil {
		return err
	}
	return remove(path)
}
