package provider

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/flarekit/terraform-provider-flare/internal/kit"
	"github.com/flarekit/terraform-provider-flare/internal/localca"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/vaultca"
)

// A project's id names where its CA lives, so participants and kits that
// hold only the id can reach the signer:
//
//	local:<dir>?nvflare=<line>                                   embedded CA, key in <dir>
//	vault_transit:kv:<kv mount>:<kv path>#<mount>/<key>@v<version>?nvflare=<line>
//	                                                             key in Vault Transit, participants' keys
//	                                                             and a copy of the root certificate in KV v2
//	vault_transit:<dir>#<mount>/<key>@v<version>?nvflare=<line>  key in Vault Transit, the rest in <dir>
//	                                                             (projects made before the KV store)
//
// A local <dir> holds the root certificate and the participants' keys.
// The NVFlare release line rides along so that everything made from the id
// (certificates, descriptors, kits) follows the project's line, and a change
// of line shows in the plan of every kit. Ids from before lines existed
// have no suffix: their kits were NVFlare 2.7's.
const (
	localRefPrefix = "local:"
	vaultRefPrefix = "vault_transit:"
	lineSuffix     = "?nvflare="
	legacyLine     = "2.7"
)

// caRef is a parsed project id.
type caRef struct {
	Dir   string
	Vault *vaultKeyRef // nil for the local backend
	KV    *kvRef       // vault_transit with the Vault key store (then Dir is empty)
	// Line is the NVFlare release line ("2.9").
	Line string
}

type vaultKeyRef struct {
	Mount   string
	Key     string
	Version int
}

// kvRef is a project's folder in Vault KV v2.
type kvRef struct {
	Mount string
	Path  string
}

const kvRefPrefix = "kv:"

// base is the project's folder: one per Transit key version, as each
// version is its own root CA.
func (k kvRef) base(v *vaultKeyRef) string {
	return strings.Trim(k.Path, "/") + "/" + v.Key + "/v" + strconv.Itoa(v.Version)
}

func (r caRef) ID() string {
	return r.caID() + lineSuffix + r.Line
}

// caID is the id without the line: what names the CA itself.
func (r caRef) caID() string {
	if r.Vault == nil {
		return localRefPrefix + filepath.Clean(r.Dir)
	}
	where := filepath.Clean(r.Dir)
	if r.KV != nil {
		where = kvRefPrefix + r.KV.Mount + ":" + r.KV.Path
	}
	return fmt.Sprintf("%s%s#%s/%s@v%d", vaultRefPrefix, where, r.Vault.Mount, r.Vault.Key, r.Vault.Version)
}

// line is the kit layout and certificate profile of the project's line.
func (r caRef) line() (*kit.Line, error) { return kit.LookupLine(r.Line) }

func (r caRef) store() localca.Store { return localca.Store{Dir: r.Dir} }

func parseProjectID(id string) (caRef, error) {
	bad := fmt.Errorf("project_id %q is not a flare_project id: use flare_project.<name>.id (ids look like %q or %q)",
		id, localRefPrefix+".flare-ca"+lineSuffix+kit.DefaultVersion(), vaultRefPrefix+".flare-ca#transit/flare-root@v1"+lineSuffix+kit.DefaultVersion())
	line := legacyLine
	if i := strings.LastIndex(id, lineSuffix); i >= 0 {
		id, line = id[:i], id[i+len(lineSuffix):]
		if line == "" {
			return caRef{}, bad
		}
		if _, err := kit.LookupLine(line); err != nil {
			return caRef{}, fmt.Errorf("project_id: %w", err)
		}
	}
	ref, err := parseCAID(id)
	if err != nil {
		return caRef{}, bad
	}
	ref.Line = line
	return ref, nil
}

// splitImportID splits an import id "<what>@<project id>" at the project
// id: <what> may itself hold "@" (an admin's email, a path).
func splitImportID(id string) (what, projectID string, ok bool) {
	i := strings.LastIndex(id, "@"+localRefPrefix)
	if j := strings.LastIndex(id, "@"+vaultRefPrefix); j > i {
		i = j
	}
	if i <= 0 {
		return "", "", false
	}
	return id[:i], id[i+1:], true
}

// sameCA reports whether two project ids name the same CA, whatever their
// NVFlare lines: a change of line alone keeps every certificate.
func sameCA(a, b string) bool {
	ra, errA := parseProjectID(a)
	rb, errB := parseProjectID(b)
	return errA == nil && errB == nil && ra.caID() == rb.caID()
}

func parseCAID(id string) (caRef, error) {
	bad := errors.New("not a CA id")
	if dir, ok := strings.CutPrefix(id, localRefPrefix); ok {
		if dir == "" {
			return caRef{}, bad
		}
		return caRef{Dir: dir}, nil
	}
	rest, ok := strings.CutPrefix(id, vaultRefPrefix)
	if !ok {
		return caRef{}, bad
	}
	dir, key, ok := strings.Cut(rest, "#")
	at := strings.LastIndex(key, "@v")
	slash := strings.LastIndex(key, "/")
	if !ok || dir == "" || at < 0 || slash <= 0 || slash > at {
		return caRef{}, bad
	}
	version, err := strconv.Atoi(key[at+2:])
	if err != nil || version < 1 {
		return caRef{}, bad
	}
	ref := caRef{Dir: dir, Vault: &vaultKeyRef{Mount: key[:slash], Key: key[slash+1 : at], Version: version}}
	if kv, ok := strings.CutPrefix(dir, kvRefPrefix); ok {
		mount, p, ok := strings.Cut(kv, ":")
		if !ok || mount == "" || p == "" {
			return caRef{}, bad
		}
		ref.Dir, ref.KV = "", &kvRef{Mount: mount, Path: p}
	}
	return ref, nil
}

// loadCA returns the project's root certificate with a signer for its key,
// wherever the key lives.
func (d *providerData) loadCA(ctx context.Context, ref caRef) (pki.CA, error) {
	if ref.Vault == nil {
		return ref.store().Load()
	}
	store, err := d.store(ctx, ref)
	if err != nil {
		return pki.CA{}, err
	}
	cert, err := store.RootCert(ctx)
	if err != nil {
		return pki.CA{}, err
	}
	client, err := d.vaultClient(ctx)
	if err != nil {
		return pki.CA{}, err
	}
	signer, err := vaultca.NewSigner(ctx, client, ref.Vault.Mount, ref.Vault.Key, ref.Vault.Version)
	if err != nil {
		return pki.CA{}, err
	}
	if pub, ok := cert.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(signer.Public()) {
		return pki.CA{}, fmt.Errorf("the root certificate in %s does not belong to Vault key %s version %d", store.Where(), signer.KeyPath(), ref.Vault.Version)
	}
	return pki.CA{Cert: cert, Signer: signer}, nil
}
