package dashboard

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"os"
	"strings"
)

// Credential is the first project admin, NVFlare's --cred email:password:org.
type Credential struct {
	Email, Password, Org string
}

// ParseCredential parses email:password:org (the password may not contain ':',
// as in NVFlare).
func ParseCredential(s string) (Credential, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return Credential{}, fmt.Errorf("invalid credential %q: it must be email:password:org", s)
	}
	return Credential{parts[0], parts[1], parts[2]}, nil
}

// Open opens the Dashboard in folder: the database (migrated), the JWT key,
// and on first start the project admin (user 1, approval_state 200, name
// "super_name" as NVFlare's seed) and the project. cred may be nil on first
// start: then the admin is admin@nvidia.com of org "nvidia" (NVFlare's
// default) with a generated password, printed to out.
func Open(folder string, cred *Credential, out io.Writer) (*Server, error) {
	return OpenURL(folder, "", cred, out)
}

// OpenURL is Open with the database databaseURL names (OpenStoreURL):
// "" for folder/db.sqlite, postgres://... for PostgreSQL, where several
// replicas share users, the project and the JWT key.
func OpenURL(folder, databaseURL string, cred *Credential, out io.Writer) (*Server, error) {
	if err := os.MkdirAll(folder, 0o700); err != nil {
		return nil, err
	}
	st, err := OpenStoreURL(folder, databaseURL)
	if err != nil {
		return nil, err
	}
	key, err := st.jwtKey(folder)
	if err != nil {
		st.Close()
		return nil, err
	}
	s := &Server{Store: st, Key: key, Log: log.New(os.Stderr, "flare-dashboard: ", log.LstdFlags)}
	if err := s.bootstrap(cred, out); err != nil {
		st.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) bootstrap(cred *Credential, out io.Writer) error {
	u, err := s.Store.User(1)
	if err == nil && u.ApprovalState >= 100 {
		return s.Store.EnsureProject()
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	generated := cred == nil
	if generated {
		pw, err := randomPassword(16)
		if err != nil {
			return err
		}
		cred = &Credential{"admin@nvidia.com", pw, "nvidia"}
	}
	hash, err := HashPassword(cred.Password)
	if err != nil {
		return err
	}
	_, err = s.Store.CreateUser(&User{Email: cred.Email, Name: "super_name", PasswordHash: hash,
		Role: "project_admin", Organization: cred.Org, ApprovalState: 200})
	if errors.Is(err, ErrConflict) {
		// Another replica on the same database made the admin first.
		return s.Store.EnsureProject()
	}
	if err != nil {
		return fmt.Errorf("creating the project admin: %w", err)
	}
	if err := s.Store.EnsureProject(); err != nil {
		return err
	}
	if generated {
		fmt.Fprintf(out, "Project admin created: email %s, password %s (organization %s). Change the password after the first login.\n",
			cred.Email, cred.Password, cred.Org)
	} else {
		fmt.Fprintf(out, "Project admin created: %s (organization %s)\n", cred.Email, cred.Org)
	}
	return nil
}

func randomPassword(n int) (string, error) {
	const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
	b := make([]byte, n)
	for i := range b {
		k, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			return "", err
		}
		b[i] = alphabet[k.Int64()]
	}
	return string(b), nil
}

// Close stops the key pool (dropping its keys) and closes the database.
func (s *Server) Close() error {
	s.keys.Load().close()
	return s.Store.Close()
}
