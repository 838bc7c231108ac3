package dashboard

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/vaultca"
)

// The root CA key in Vault Transit (issue 13 item 2): with --vault-transit
// <mount>/<key> the project's root is made at freeze around the Transit
// key's public key and every certificate and signature.json is signed
// through Transit (internal/vaultca, the provider's CA backend code), so
// the Dashboard never holds the root key. The project row then keeps only
// a reference, vault-transit:<mount>/<key>#v<version>, pinned to the key
// version of the freeze (a later rotation of the Transit key does not
// change the CA).
const vaultRootPrefix = "vault-transit:"

// VaultCA is the Transit key the Dashboard signs with.
type VaultCA struct {
	Config vaultca.Config
	Info   vaultca.KeyInfo

	mu      sync.Mutex
	signers map[int]*vaultca.Signer
}

// ParseTransitKey splits <mount>/<key> (the mount may have slashes; the
// key is the last element).
func ParseTransitKey(s string) (mount, key string, err error) {
	s = strings.Trim(s, "/")
	i := strings.LastIndex(s, "/")
	if i <= 0 || i == len(s)-1 {
		return "", "", fmt.Errorf("--vault-transit %q: want <mount>/<key>, for example transit/flare-root", s)
	}
	return s[:i], s[i+1:], nil
}

// OpenVaultCA logs in (cfg, else VAULT_ADDR, VAULT_TOKEN, ... as the Vault
// CLI) and creates or adopts the Transit key (non-exportable RSA, as the
// provider's vault_transit backend does). Warnings are vaultca's.
func OpenVaultCA(ctx context.Context, cfg vaultca.Config) (*VaultCA, []string, error) {
	signer, info, warnings, err := vaultca.Open(ctx, cfg)
	if err != nil {
		return nil, warnings, err
	}
	v := &VaultCA{Config: cfg, Info: info, signers: map[int]*vaultca.Signer{signer.KeyVersion(): signer}}
	return v, warnings, nil
}

// latest returns a signer pinned to the key's latest version now.
func (v *VaultCA) latest(ctx context.Context) (*vaultca.Signer, error) {
	cfg := v.Config
	cfg.KeyVersion = 0
	s, _, _, err := vaultca.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	v.signers[s.KeyVersion()] = s
	v.mu.Unlock()
	return s, nil
}

// signer returns a signer pinned to version.
func (v *VaultCA) signer(ctx context.Context, version int) (*vaultca.Signer, error) {
	v.mu.Lock()
	s := v.signers[version]
	v.mu.Unlock()
	if s != nil {
		return s, nil
	}
	cfg := v.Config
	cfg.KeyVersion = version
	s, _, _, err := vaultca.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	v.signers[version] = s
	v.mu.Unlock()
	return s, nil
}

func (v *VaultCA) mount() string {
	if m := strings.Trim(v.Config.TransitMount, "/"); m != "" {
		return m
	}
	return vaultca.DefaultTransitMount
}

// reference is what the project row keeps instead of the key.
func (v *VaultCA) reference(version int) string {
	return fmt.Sprintf("%s%s/%s#v%d", vaultRootPrefix, v.mount(), v.Config.KeyName, version)
}

// parseVaultRoot reads a reference: mount, key, version.
func parseVaultRoot(stored string) (mount, key string, version int, err error) {
	rest, ok := strings.CutPrefix(stored, vaultRootPrefix)
	if !ok {
		return "", "", 0, errors.New("not a Vault Transit reference")
	}
	path, ver, ok := strings.Cut(rest, "#v")
	if !ok {
		return "", "", 0, fmt.Errorf("stored root key reference %q has no version", stored)
	}
	version, err = strconv.Atoi(ver)
	if err != nil || version < 1 {
		return "", "", 0, fmt.Errorf("stored root key reference %q: bad version", stored)
	}
	mount, key, err = ParseTransitKey(path)
	return mount, key, version, err
}

// vaultTimeout bounds a Vault call made for one request.
const vaultTimeout = 30 * time.Second

// makeVaultRoot creates the project's root around the Transit key's latest
// version; the project keeps the reference, no key.
func (s *Server) makeVaultRoot(p *Project, at time.Time) error {
	line, err := projectLine(p)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), vaultTimeout)
	defer cancel()
	signer, err := s.Vault.latest(ctx)
	if err != nil {
		return &blobError{503, obj{"status": "vault transit: " + err.Error()}}
	}
	cert, err := pki.NewRootCA(signer, p.ShortName, pki.ValidityFor(at, certDays), line.Certs)
	if err != nil {
		return fmt.Errorf("vault transit: signing the root certificate: %w", err)
	}
	p.RootCert, p.RootKey = string(pki.CertPEM(cert)), s.Vault.reference(signer.KeyVersion())
	return nil
}

// vaultProjectCA is projectCA for a root whose key is in Transit.
func (s *Server) vaultProjectCA(rootCert *x509.Certificate, stored string) (pki.CA, error) {
	mount, key, version, err := parseVaultRoot(stored)
	if err != nil {
		return pki.CA{}, err
	}
	if s.Vault == nil || s.Vault.mount() != mount || s.Vault.Config.KeyName != key {
		return pki.CA{}, &blobError{503, obj{"status": fmt.Sprintf(
			"the root CA key is in Vault Transit %s/%s: start flare-dashboard with --vault-transit %s/%s (and VAULT_ADDR, VAULT_TOKEN)", mount, key, mount, key)}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), vaultTimeout)
	defer cancel()
	signer, err := s.Vault.signer(ctx, version)
	if err != nil {
		return pki.CA{}, &blobError{503, obj{"status": "vault transit: " + err.Error()}}
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(rootCert.PublicKey) {
		return pki.CA{}, &blobError{503, obj{"status": fmt.Sprintf("vault transit: version %d of %s/%s is not the key of the project's root certificate (was the key deleted and re-created?)", version, mount, key)}}
	}
	return pki.CA{Cert: rootCert, Signer: signer}, nil
}
