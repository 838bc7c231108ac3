package kbs

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/flarekit/terraform-provider-flare/internal/attest"
)

// ErrNotFound is wrapped by Store errors for a missing secret or policy.
var ErrNotFound = errors.New("not found")

// Store holds the resources (secrets) the broker releases and the policy
// record of each. flare-kbs reads it; the Terraform provider writes
// through it (the kit's root key and the measurements allowed for it).
// Implementations: VaultStore (Vault/OpenBao KV v1, Trustee's layout) and
// DirStore (files, for the local-CA path).
type Store interface {
	PutSecret(ctx context.Context, p ResourcePath, secret []byte) error
	// GetSecret returns the secret or an error wrapping ErrNotFound.
	GetSecret(ctx context.Context, p ResourcePath) ([]byte, error)
	// DeleteSecret removes the secret; a missing one is not an error.
	DeleteSecret(ctx context.Context, p ResourcePath) error
	// PutPolicy validates and stores the policy record of a resource.
	PutPolicy(ctx context.Context, p ResourcePath, pol Policy) error
	// GetPolicy returns the record or an error wrapping ErrNotFound.
	GetPolicy(ctx context.Context, p ResourcePath) (Policy, error)
	// DeletePolicy removes the record; a missing one is not an error.
	DeletePolicy(ctx context.Context, p ResourcePath) error
}

// ResourcePath names a resource as Trustee does: repository/type/tag.
type ResourcePath struct {
	Repo, Type, Tag string
}

var partRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]*$`)

// MaxPartLen bounds each part of a resource path.
const MaxPartLen = 128

// ParseResourcePath reads "repo/type/tag" and validates it.
func ParseResourcePath(s string) (ResourcePath, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return ResourcePath{}, fmt.Errorf("resource path %q: want exactly three parts, <repository>/<type>/<tag> (e.g. default/flare-root/site-1)", s)
	}
	p := ResourcePath{parts[0], parts[1], parts[2]}
	return p, p.Validate()
}

// Validate checks each part: 1 to 128 characters of A-Z a-z 0-9 . _ -,
// not starting with "." or "-" (so no "..", no hidden names, no slashes).
func (p ResourcePath) Validate() error {
	for _, x := range []struct{ name, v string }{{"repository", p.Repo}, {"type", p.Type}, {"tag", p.Tag}} {
		switch {
		case x.v == "":
			return fmt.Errorf("resource path %q: the %s is empty", p.String(), x.name)
		case len(x.v) > MaxPartLen:
			return fmt.Errorf("resource path: the %s is %d characters, at most %d", x.name, len(x.v), MaxPartLen)
		case strings.Contains(x.v, "/"):
			return fmt.Errorf("resource path: the %s %q contains a slash", x.name, x.v)
		case x.v == "." || x.v == ".." || strings.HasPrefix(x.v, "."):
			return fmt.Errorf("resource path: the %s %q starts with a dot (no '.', '..' or hidden names)", x.name, x.v)
		case !partRE.MatchString(x.v):
			return fmt.Errorf("resource path: the %s %q may only hold letters, digits, '.', '_' and '-', and must not start with '-'", x.name, x.v)
		}
	}
	return nil
}

func (p ResourcePath) String() string { return p.Repo + "/" + p.Type + "/" + p.Tag }

// Policy is the release rule of one resource path: the guest's attested
// launch MEASUREMENT must be one of Measurements, its HOST_DATA equal
// HostData when that is set, its REPORTED_TCB at least MinTCB component by
// component when that is set. Debug guests are never served (AllowDebug
// must be false; the field exists so a record saying otherwise is refused,
// not ignored).
type Policy struct {
	// Measurements are launch digests, 96 lower-case hex digits each.
	Measurements []string `json:"measurements"`
	// HostData is 64 hex digits (SNP HOST_DATA), or "" for any.
	HostData string `json:"host_data,omitempty"`
	// MinTCB is a TCB_VERSION as up to 16 hex digits (0x optional), or "".
	MinTCB string `json:"min_tcb,omitempty"`
	// AllowDebug must be false.
	AllowDebug bool `json:"allow_debug"`
}

// Normalize validates the record and lower-cases its hex.
func (pol Policy) Normalize() (Policy, error) {
	out := Policy{HostData: strings.ToLower(pol.HostData), MinTCB: pol.MinTCB}
	if len(pol.Measurements) == 0 {
		return Policy{}, errors.New("policy: measurements is empty: list the launch measurement(s) allowed to get this resource")
	}
	seen := map[string]bool{}
	for i, m := range pol.Measurements {
		m = strings.ToLower(strings.TrimPrefix(m, "0x"))
		if b, err := hex.DecodeString(m); err != nil || len(b) != 48 {
			return Policy{}, fmt.Errorf("policy: measurements[%d] %q is not 48 bytes in hex (96 hex digits, the SEV-SNP launch digest)", i, pol.Measurements[i])
		}
		if !seen[m] {
			seen[m] = true
			out.Measurements = append(out.Measurements, m)
		}
	}
	if out.HostData != "" {
		if b, err := hex.DecodeString(out.HostData); err != nil || len(b) != 32 {
			return Policy{}, fmt.Errorf("policy: host_data %q is not 32 bytes in hex (64 hex digits)", pol.HostData)
		}
	}
	if out.MinTCB != "" {
		if _, err := attest.ParseTCBVersion(out.MinTCB); err != nil {
			return Policy{}, fmt.Errorf("policy: min_tcb: %v", err)
		}
	}
	if pol.AllowDebug {
		return Policy{}, errors.New("policy: allow_debug is true: flare-kbs never releases a secret to a guest whose policy allows debugging (its memory is readable by the host); set it to false")
	}
	return out, nil
}
