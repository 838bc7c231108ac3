package provider

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/flarekit/terraform-provider-flare/internal/localca"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/vaultca"
)

// caStore is where a project keeps what state must not hold: its
// participants' private keys (with their certificates), and the root
// certificate for the resources that know the project by id only.
//
//   - localStore: the CA directory (local backend, and vault_transit
//     projects made before the Vault key store).
//   - kvStore: Vault KV v2 (vault_transit projects): nothing on the
//     runner's disk, so a fresh pipeline runner with the same state finds
//     everything again.
type caStore interface {
	// Where names the store in messages.
	Where() string
	// Restore says how to bring lost material back.
	Restore() string
	// RootCert reads the root certificate; a missing one wraps localca.ErrNoCA.
	RootCert(ctx context.Context) (*x509.Certificate, error)
	// KeyLocation is where a participant's key lives (the descriptor's key_file).
	KeyLocation(name string) string
	// SaveParticipant stores a new participant's key and certificate.
	SaveParticipant(ctx context.Context, name string, key *rsa.PrivateKey, certPEM []byte) error
	// ParticipantKey reads a key; a missing one wraps fs.ErrNotExist.
	ParticipantKey(ctx context.Context, name string) (*rsa.PrivateKey, error)
	// ParticipantCert reads a participant's certificate PEM.
	ParticipantCert(ctx context.Context, name string) ([]byte, error)
	// RemoveParticipant deletes a participant's key and certificate.
	RemoveParticipant(ctx context.Context, name string) error

	// KeyHeld reports whether name has a key in the store (a participant
	// the provider issued), and where.
	KeyHeld(ctx context.Context, name string) (string, bool, error)
	// ApprovalWhere names name's approval record in messages.
	ApprovalWhere(name string) string
	// Approval reads name's approval record (approval_records.go); none
	// wraps fs.ErrNotExist.
	Approval(ctx context.Context, name string) (nameRecord, error)
	// PutApproval records certPEM as name's approval, owned by owner. With
	// prev nil it is exclusive; with prev (what Approval read) it replaces
	// that record. A name with a key, or a record when prev is nil, gives
	// fs.ErrExist.
	PutApproval(ctx context.Context, name string, certPEM []byte, owner string, prev *nameRecord) error
	// RemoveApproval deletes name's approval record.
	RemoveApproval(ctx context.Context, name string) error
}

// localStore is a CA directory.
type localStore struct{ localca.Store }

func (s localStore) Where() string   { return "CA directory " + s.Dir }
func (s localStore) Restore() string { return localRestore(s.Dir) }

func (s localStore) RootCert(context.Context) (*x509.Certificate, error) { return s.LoadCert() }

func (s localStore) KeyLocation(name string) string { return s.ParticipantKeyPath(name) }

func (s localStore) SaveParticipant(_ context.Context, name string, key *rsa.PrivateKey, certPEM []byte) error {
	return s.Store.SaveParticipant(name, key, certPEM)
}

func (s localStore) ParticipantKey(_ context.Context, name string) (*rsa.PrivateKey, error) {
	k, err := s.LoadParticipantKey(name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", s.ParticipantKeyPath(name), err)
	}
	if err != nil {
		return nil, fmt.Errorf("private key %s is gone: %w", s.ParticipantKeyPath(name), fs.ErrNotExist)
	}
	return k, nil
}

func (s localStore) ParticipantCert(_ context.Context, name string) ([]byte, error) {
	return s.LoadParticipantCert(name)
}

func (s localStore) RemoveParticipant(_ context.Context, name string) error {
	return s.Store.RemoveParticipant(name)
}

// kvStore keeps a vault_transit project's material in Vault KV v2:
//
//	<kv_path>/<transit key>/v<version>/root                {certificate}
//	<kv_path>/<transit key>/v<version>/participants/<name> {private_key, certificate}
//	<kv_path>/<transit key>/v<version>/approvals/<name>    {certificate, owner}
type kvStore struct {
	kv vaultca.KV
}

const (
	kvRootEntry     = "root"
	kvParticipants  = "participants/"
	kvFieldCert     = "certificate"
	kvFieldKey      = "private_key"
	defaultKVMount  = "secret"
	defaultKVFolder = "flare"
)

func (s kvStore) Where() string { return "Vault KV " + s.kv.Location("") }

func (s kvStore) Restore() string {
	return fmt.Sprintf("check the provider's Vault address, namespace and token (the entry may be in another Vault or namespace, "+
		"or the token may lack read on %s/data/%s/*); a deleted entry can be brought back from a Vault snapshot, or with "+
		"`bao kv undelete` / `vault kv undelete` when only its latest version was deleted.", s.kv.Mount, s.kv.Path)
}

func (s kvStore) RootCert(ctx context.Context) (*x509.Certificate, error) {
	p, err := s.kv.GetString(ctx, kvRootEntry, kvFieldCert)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %v", localca.ErrNoCA, err)
	}
	if err != nil {
		return nil, err
	}
	cert, err := pki.ParseCertPEM([]byte(p))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.kv.Location(kvRootEntry), err)
	}
	return cert, nil
}

// CreateRoot stores the root certificate once; a root already there means
// another apply made one first (or the location holds another project).
func (s kvStore) CreateRoot(ctx context.Context, cert *x509.Certificate) error {
	err := s.kv.Create(ctx, kvRootEntry, map[string]any{kvFieldCert: string(pki.CertPEM(cert))})
	if errors.Is(err, vaultca.ErrExists) {
		return fmt.Errorf("%s already holds a root certificate: another apply made this project's CA first, or another project uses "+
			"the same Transit key version and KV path. Import the project instead (terraform import with its id), or choose another "+
			"ca.kv_path or key", s.kv.Location(kvRootEntry))
	}
	return err
}

func (s kvStore) RemoveRoot(ctx context.Context) error { return s.kv.Delete(ctx, kvRootEntry) }

func (s kvStore) KeyLocation(name string) string {
	return "vault-kv:" + s.kv.Location(kvParticipants+name)
}

func (s kvStore) SaveParticipant(ctx context.Context, name string, key *rsa.PrivateKey, certPEM []byte) error {
	err := s.kv.Create(ctx, kvParticipants+name, map[string]any{kvFieldKey: string(pki.KeyPEM(key)), kvFieldCert: string(certPEM)})
	if errors.Is(err, vaultca.ErrExists) {
		return fmt.Errorf("%s already holds a key: %q is a participant already (another resource or an earlier apply); import it, "+
			"or remove the entry if it is a leftover", s.kv.Location(kvParticipants+name), name)
	}
	if err != nil {
		return err
	}
	// An approval may have claimed the name since the caller checked
	// (approval_records.go: each side checks the other after its write).
	if rec, err := s.Approval(ctx, name); err == nil || !errors.Is(err, fs.ErrNotExist) {
		_ = s.kv.Delete(ctx, kvParticipants+name)
		if err != nil {
			return err
		}
		return fmt.Errorf("%q was approved for a site (%s, owner %s) while this participant was being issued: names are unique in a project",
			name, s.ApprovalWhere(name), strings.TrimSpace(rec.Owner))
	}
	return nil
}

func (s kvStore) ParticipantKey(ctx context.Context, name string) (*rsa.PrivateKey, error) {
	p, err := s.kv.GetString(ctx, kvParticipants+name, kvFieldKey)
	if err != nil {
		return nil, err
	}
	k, err := pki.ParseKeyPEM([]byte(p))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.kv.Location(kvParticipants+name), err)
	}
	return k, nil
}

func (s kvStore) ParticipantCert(ctx context.Context, name string) ([]byte, error) {
	p, err := s.kv.GetString(ctx, kvParticipants+name, kvFieldCert)
	return []byte(p), err
}

func (s kvStore) RemoveParticipant(ctx context.Context, name string) error {
	return s.kv.Delete(ctx, kvParticipants+name)
}

// store opens the store a project id names.
func (d *providerData) store(ctx context.Context, ref caRef) (caStore, error) {
	if ref.KV == nil {
		return localStore{ref.store()}, nil
	}
	if d == nil {
		return nil, errors.New("the provider is not configured; cannot reach Vault")
	}
	client, err := d.vaultClient(ctx)
	if err != nil {
		return nil, err
	}
	return kvStore{kv: vaultca.NewKV(client, ref.KV.Mount, ref.KV.base(ref.Vault))}, nil
}

// storeFor opens the store of a project id.
func (w *withProviderData) storeFor(ctx context.Context, projectID string) (caStore, caRef, error) {
	ref, err := parseProjectID(projectID)
	if err != nil {
		return nil, ref, err
	}
	s, err := w.data.store(ctx, ref)
	return s, ref, err
}
