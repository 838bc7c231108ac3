package localca

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

func TestCreateLoadDestroy(t *testing.T) {
	s := Store{Dir: filepath.Join(t.TempDir(), "ca")}
	if _, err := s.Load(); !errors.Is(err, ErrNoCA) {
		t.Fatalf("Load on empty dir: %v, want ErrNoCA", err)
	}
	ca, err := s.Create("proj", pki.ValidityFor(time.Now(), 1), pki.Profile{})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{s.Dir: 0o700, s.RootKeyPath(): 0o600, s.RootCertPath(): 0o644} {
		info, err := os.Stat(p)
		if err != nil || info.Mode().Perm() != want {
			t.Errorf("%s mode %v (%v), want %o", p, info.Mode().Perm(), err, want)
		}
	}
	if _, err := s.Create("proj", pki.ValidityFor(time.Now(), 1), pki.Profile{}); err == nil || !strings.Contains(err.Error(), "already holds a CA") {
		t.Errorf("second Create: %v", err)
	}
	loaded, err := s.Load()
	if err != nil || !loaded.Cert.Equal(ca.Cert) {
		t.Fatalf("Load: %v", err)
	}
	key, _ := pki.GenerateKey()
	if err := s.SaveParticipant("site-1", key, []byte("cert")); err != nil {
		t.Fatal(err)
	}
	if info, _ := os.Stat(s.ParticipantKeyPath("site-1")); info.Mode().Perm() != 0o600 {
		t.Errorf("participant key mode %o", info.Mode().Perm())
	}
	back, err := s.LoadParticipantKey("site-1")
	if err != nil || !back.Equal(key) {
		t.Fatalf("LoadParticipantKey: %v", err)
	}

	// A key that does not belong to the certificate is refused.
	other, _ := pki.GenerateKey()
	os.WriteFile(s.RootKeyPath(), pki.KeyPEM(other), 0o600)
	if _, err := s.Load(); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("mismatched key: %v", err)
	}

	if err := s.RemoveParticipant("site-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Destroy(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Errorf("CA dir left after Destroy: %v", err)
	}
}
