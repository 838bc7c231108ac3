// Package localca is the embedded CA backend: the root key and the
// participants' private keys live as 0600 files in a directory the user
// names, never in Terraform state.
package localca

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/flarekit/terraform-provider-flare/internal/atomicfile"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

const (
	rootCertFile   = "rootCA.pem"
	rootKeyFile    = "rootCA.key"
	participantDir = "participants"
)

// ErrNoCA means the directory holds no CA (yet, or any more).
var ErrNoCA = errors.New("no CA in directory")

// Store is a CA directory.
type Store struct {
	Dir string
}

// RootCertPath is where the root certificate lives.
func (s Store) RootCertPath() string { return filepath.Join(s.Dir, rootCertFile) }

// RootKeyPath is where the root private key lives.
func (s Store) RootKeyPath() string { return filepath.Join(s.Dir, rootKeyFile) }

// Exists reports whether a root certificate or key is present.
func (s Store) Exists() bool {
	for _, p := range []string{s.RootCertPath(), s.RootKeyPath()} {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// Create makes a new root key and self-signed certificate for project.
// It refuses to overwrite an existing CA: losing a root key orphans every kit.
func (s Store) Create(project string, v pki.Validity, profile pki.Profile) (pki.CA, error) {
	if err := s.prepare(); err != nil {
		return pki.CA{}, err
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return pki.CA{}, err
	}
	cert, err := pki.NewRootCA(key, project, v, profile)
	if err != nil {
		return pki.CA{}, err
	}
	keyPEM := pki.KeyPEM(key)
	// Key first: a certificate without its key would be an unusable CA.
	if err := atomicfile.Write(s.RootKeyPath(), keyPEM, 0o600); err != nil {
		return pki.CA{}, err
	}
	if err := atomicfile.Write(s.RootCertPath(), pki.CertPEM(cert), 0o644); err != nil {
		os.Remove(s.RootKeyPath())
		return pki.CA{}, err
	}
	return pki.CA{Cert: cert, Signer: key}, nil
}

// CreateExternal self-signs a root certificate with a key held elsewhere
// (Vault Transit) and stores only the certificate; the directory still
// holds the participants' keys.
func (s Store) CreateExternal(project string, signer crypto.Signer, v pki.Validity, profile pki.Profile) (pki.CA, error) {
	if err := s.prepare(); err != nil {
		return pki.CA{}, err
	}
	cert, err := pki.NewRootCA(signer, project, v, profile)
	if err != nil {
		return pki.CA{}, err
	}
	if err := atomicfile.Write(s.RootCertPath(), pki.CertPEM(cert), 0o644); err != nil {
		return pki.CA{}, err
	}
	return pki.CA{Cert: cert, Signer: signer}, nil
}

func (s Store) prepare() error {
	if s.Exists() {
		return fmt.Errorf("%s already holds a CA; import it instead of creating a new one, or choose another ca.dir", s.Dir)
	}
	if err := os.MkdirAll(filepath.Join(s.Dir, participantDir), 0o700); err != nil {
		return fmt.Errorf("create CA directory: %w", err)
	}
	return nil
}

// LoadCert reads the root certificate.
func (s Store) LoadCert() (*x509.Certificate, error) {
	certPEM, err := os.ReadFile(s.RootCertPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s is missing", ErrNoCA, s.RootCertPath())
	}
	if err != nil {
		return nil, err
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.RootCertPath(), err)
	}
	return cert, nil
}

// Load reads the root certificate and its local key.
func (s Store) Load() (pki.CA, error) {
	cert, err := s.LoadCert()
	if err != nil {
		return pki.CA{}, err
	}
	keyPEM, err := os.ReadFile(s.RootKeyPath())
	if errors.Is(err, fs.ErrNotExist) {
		return pki.CA{}, fmt.Errorf("%w: %s is missing", ErrNoCA, s.RootKeyPath())
	}
	if err != nil {
		return pki.CA{}, err
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return pki.CA{}, fmt.Errorf("%s: %w", s.RootKeyPath(), err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return pki.CA{}, fmt.Errorf("%s does not belong to %s", s.RootKeyPath(), s.RootCertPath())
	}
	return pki.CA{Cert: cert, Signer: key}, nil
}

// Destroy removes the CA files and the participant keys, then the directory
// if nothing else is left in it.
func (s Store) Destroy() error {
	for _, p := range []string{s.RootKeyPath(), s.RootCertPath()} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	os.Remove(filepath.Join(s.Dir, participantDir)) // only if empty
	os.Remove(s.Dir)                                // only if empty
	return nil
}

// ParticipantKeyPath is where a participant's private key lives.
func (s Store) ParticipantKeyPath(name string) string {
	return filepath.Join(s.Dir, participantDir, name+".key")
}

// ParticipantCertPath is where a participant's certificate is kept for import.
func (s Store) ParticipantCertPath(name string) string {
	return filepath.Join(s.Dir, participantDir, name+".crt")
}

// SaveParticipant writes a participant's key (0600) and certificate.
func (s Store) SaveParticipant(name string, key *rsa.PrivateKey, certPEM []byte) error {
	if err := os.MkdirAll(filepath.Join(s.Dir, participantDir), 0o700); err != nil {
		return err
	}
	if err := atomicfile.Write(s.ParticipantKeyPath(name), pki.KeyPEM(key), 0o600); err != nil {
		return err
	}
	return atomicfile.Write(s.ParticipantCertPath(name), certPEM, 0o644)
}

// LoadParticipantKey reads a participant's private key.
func (s Store) LoadParticipantKey(name string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(s.ParticipantKeyPath(name))
	if err != nil {
		return nil, err
	}
	return pki.ParseKeyPEM(b)
}

// LoadParticipantCert reads a participant's certificate PEM.
func (s Store) LoadParticipantCert(name string) ([]byte, error) {
	return os.ReadFile(s.ParticipantCertPath(name))
}

// RemoveParticipant deletes a participant's key and certificate.
func (s Store) RemoveParticipant(name string) error {
	for _, p := range []string{s.ParticipantKeyPath(name), s.ParticipantCertPath(name)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
