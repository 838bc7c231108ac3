package provider

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/flarekit/terraform-provider-flare/internal/atomicfile"
	"github.com/flarekit/terraform-provider-flare/internal/vaultca"
)

// Approved names (flare_request_approval, flare_request_approvals) are
// recorded in the project's key store, next to the participants the
// provider issued keys for, so that a name is given out once whichever
// resource asks first:
//
//   - a CA directory (localStore): participants/<name>.crt (the
//     certificate, no key) and participants/<name>.approval (its owner);
//   - Vault KV (kvStore): <kv_path>/<key>/v<N>/approvals/<name> with the
//     fields certificate and owner.
//
// The owner names the signed zip and the request it was made from:
// Terraform plans the create half of a replacement without the old state,
// so the owner is what tells our own earlier approval from another
// resource's.

// nameRecord is an approval's record: the certificate (whose key the site
// keeps) and the approval that owns it ("" when a CA directory holds the
// certificate without an owner file).
type nameRecord struct {
	CertPEM []byte
	Owner   string
}

// participantNameTaken reports whether name is a participant of the project
// already: one with a key in the store, or one a site keeps the key of (an
// approval). It returns what says so. Participants (flare_server, _client,
// _admin, _relay, flare_clients) check it before they issue; approvals
// check the other way round with nameTaken and claim their name with
// PutApproval, which refuses a name with a key.
func participantNameTaken(ctx context.Context, s caStore, name string) (string, bool, error) {
	if where, held, err := s.KeyHeld(ctx, name); err != nil || held {
		return where, held, err
	}
	rec, err := s.Approval(ctx, name)
	switch {
	case err == nil && rec.Owner != "":
		return s.ApprovalWhere(name), true, nil
	case err == nil || errors.Is(err, fs.ErrNotExist):
		// A certificate without an owner is what a participant whose key
		// was lost leaves in a CA directory: not an approval.
		return "", false, nil
	}
	return "", false, err
}

// nameTaken reports a participant, or an approval other than owner's, of
// name in the project's key store ("" if the name is free for owner).
func nameTaken(ctx context.Context, s caStore, name, owner string) (string, error) {
	if where, held, err := s.KeyHeld(ctx, name); err != nil {
		return "", err
	} else if held {
		return fmt.Sprintf("%q is already a participant of this project (%s exists): a flare_server, flare_client, flare_admin or flare_relay has the name. Names are unique in a project; the site must request another name.",
			name, where), nil
	}
	rec, err := s.Approval(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if rec.Owner == owner {
		return "", nil // our own approval, being replaced
	}
	return fmt.Sprintf("%q is already approved in this project (%s exists), by another flare_request_approval or flare_request_approvals (or another output_dir or request file). "+
		"Names are unique in a project: remove the other approval first, or have the site request another name.", name, s.ApprovalWhere(name)), nil
}

// claimName records an approved certificate and its owner, failing with
// fs.ErrExist if the name is a participant's or another owner's. The
// record appears complete or not at all, and exclusively: two approvals of
// one name in the same apply cannot both claim it.
func claimName(ctx context.Context, s caStore, name string, certPEM []byte, owner string) error {
	return claimRecord(ctx, s, name, certPEM, owner, func(rec string) bool { return rec == owner })
}

// claimRecord is claimName where ours tells, from the owner recorded, whether
// an existing record is the caller's own (then it is replaced).
func claimRecord(ctx context.Context, s caStore, name string, certPEM []byte, owner string, ours func(recorded string) bool) error {
	var prev *nameRecord
	rec, err := s.Approval(ctx, name)
	switch {
	case err == nil && rec.Owner != "" && ours(rec.Owner):
		prev = &rec // our earlier approval, replaced create-before-destroy
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return err
	}
	return s.PutApproval(ctx, name, certPEM, owner, prev)
}

// ensureRecord makes the key store record certPEM as name's approval,
// owned by owner: a lost record is claimed again; a record of another
// certificate is refused unless ours says its owner is the caller. It
// returns a diagnostic's summary and detail, or "" when the record is in
// place.
func ensureRecord(ctx context.Context, s caStore, name string, certPEM []byte, owner string, ours func(recorded string) bool) (string, string) {
	rec, recErr := s.Approval(ctx, name)
	switch {
	case recErr == nil && bytes.Equal(rec.CertPEM, certPEM):
		if rec.Owner == owner {
			return "", ""
		}
		if err := s.PutApproval(ctx, name, certPEM, owner, &rec); err != nil {
			return "Cannot Record Approval", fmt.Sprintf("%s: %v", s.ApprovalWhere(name), err)
		}
		return "", ""
	case errors.Is(recErr, fs.ErrNotExist) || recErr == nil:
		err := claimRecord(ctx, s, name, certPEM, owner, func(recorded string) bool { return recErr == nil && ours(recorded) })
		if errors.Is(err, fs.ErrExist) {
			return "Participant Name Taken", fmt.Sprintf("%s holds another certificate than this approval's: another resource took %q. "+
				"Remove it, or replace this approval (terraform apply -replace).", s.ApprovalWhere(name), name)
		}
		if err != nil {
			return "Cannot Record Approval", fmt.Sprintf("%s: %v", s.ApprovalWhere(name), err)
		}
		return "", ""
	}
	return "Cannot Record Approval", recErr.Error()
}

// removeRecord removes name's approval record if ours says the recorded
// certificate is the caller's: never another participant's certificate,
// nor a participant with a key.
func removeRecord(ctx context.Context, s caStore, name string, ours func(certPEM []byte) bool) error {
	rec, err := s.Approval(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !ours(rec.CertPEM) {
		return nil
	}
	if _, held, err := s.KeyHeld(ctx, name); err != nil || held {
		return err
	}
	return s.RemoveApproval(ctx, name)
}

// recordedCert is the certificate name's record holds (nil if none).
func recordedCert(ctx context.Context, s caStore, name string) []byte {
	rec, err := s.Approval(ctx, name)
	if err != nil {
		return nil
	}
	return rec.CertPEM
}

// --- CA directory ---

func approvalOwnerPath(s localStore, name string) string {
	return strings.TrimSuffix(s.ParticipantCertPath(name), ".crt") + ".approval"
}

func (s localStore) KeyHeld(_ context.Context, name string) (string, bool, error) {
	p := s.ParticipantKeyPath(name)
	_, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	return p, err == nil, err
}

func (s localStore) ApprovalWhere(name string) string { return s.ParticipantCertPath(name) }

func (s localStore) Approval(_ context.Context, name string) (nameRecord, error) {
	cert, err := s.LoadParticipantCert(name)
	if err != nil {
		return nameRecord{}, err
	}
	owner, err := os.ReadFile(approvalOwnerPath(s, name))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nameRecord{}, err
	}
	return nameRecord{CertPEM: cert, Owner: string(owner)}, nil
}

// PutApproval writes the certificate to a temporary file and links it into
// place (link(2) fails if the name exists), or renames it over prev.
func (s localStore) PutApproval(ctx context.Context, name string, certPEM []byte, owner string, prev *nameRecord) error {
	if _, held, err := s.KeyHeld(ctx, name); err != nil || held {
		if held {
			return fs.ErrExist
		}
		return err
	}
	final := s.ParticipantCertPath(name)
	if prev == nil || !bytes.Equal(prev.CertPEM, certPEM) {
		if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
			return err
		}
		tmp, err := os.CreateTemp(filepath.Dir(final), "."+filepath.Base(final)+".tmp-*")
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		for _, step := range []func() error{
			func() error { _, err := tmp.Write(certPEM); return err },
			func() error { return tmp.Chmod(0o644) },
			tmp.Sync,
		} {
			if err := step(); err != nil {
				tmp.Close()
				return err
			}
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		if prev != nil {
			err = os.Rename(tmp.Name(), final)
		} else {
			err = os.Link(tmp.Name(), final)
		}
		if err != nil {
			return err
		}
	}
	if err := atomicfile.Write(approvalOwnerPath(s, name), []byte(owner), 0o644); err != nil {
		if prev == nil {
			os.Remove(final)
		}
		return err
	}
	return nil
}

func (s localStore) RemoveApproval(_ context.Context, name string) error {
	var errs []error
	for _, p := range []string{s.ParticipantCertPath(name), approvalOwnerPath(s, name)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// --- Vault KV ---

const (
	kvApprovals  = "approvals/"
	kvFieldOwner = "owner"
)

func (s kvStore) KeyHeld(ctx context.Context, name string) (string, bool, error) {
	ok, err := s.kv.Exists(ctx, kvParticipants+name)
	return s.kv.Location(kvParticipants + name), ok, err
}

func (s kvStore) ApprovalWhere(name string) string { return s.kv.Location(kvApprovals + name) }

func (s kvStore) Approval(ctx context.Context, name string) (nameRecord, error) {
	data, err := s.kv.Get(ctx, kvApprovals+name)
	if err != nil {
		return nameRecord{}, err
	}
	cert, _ := data[kvFieldCert].(string)
	owner, _ := data[kvFieldOwner].(string)
	if cert == "" || owner == "" {
		return nameRecord{}, fmt.Errorf("%s is not an approval record (no %q or %q field)", s.ApprovalWhere(name), kvFieldCert, kvFieldOwner)
	}
	return nameRecord{CertPEM: []byte(cert), Owner: owner}, nil
}

// PutApproval creates the entry (check-and-set 0: exclusive). Replacing
// prev deletes it first and creates it again, so the token needs no
// update capability (the policy stays create, read, delete); a racer that
// creates the name in between wins, and this apply fails with the name
// taken. A participant's entry (participants/<name>) is checked after the
// create as well as before, and participants check approvals after theirs:
// of two writers racing for one name, at least one sees the other.
func (s kvStore) PutApproval(ctx context.Context, name string, certPEM []byte, owner string, prev *nameRecord) error {
	if _, held, err := s.KeyHeld(ctx, name); err != nil || held {
		if held {
			return fs.ErrExist
		}
		return err
	}
	if prev != nil {
		if err := s.kv.Delete(ctx, kvApprovals+name); err != nil {
			return err
		}
	}
	err := s.kv.Create(ctx, kvApprovals+name, map[string]any{kvFieldCert: string(certPEM), kvFieldOwner: owner})
	if errors.Is(err, vaultca.ErrExists) {
		return fs.ErrExist
	}
	if err != nil {
		return err
	}
	if _, held, err := s.KeyHeld(ctx, name); err != nil || held {
		_ = s.kv.Delete(ctx, kvApprovals+name)
		if held {
			return fs.ErrExist
		}
		return err
	}
	return nil
}

func (s kvStore) RemoveApproval(ctx context.Context, name string) error {
	return s.kv.Delete(ctx, kvApprovals+name)
}
