package provider

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
)

var testAccProtoV6ProviderFactories = map[string]func() (tfprotov6.ProviderServer, error){
	"flare": providerserver.NewProtocol6WithError(New("test")()),
}

// federationConfig is a quickstart-like project in dir with the given
// clients, one resource block each (the test framework cannot address
// for_each instances). extra is appended verbatim.
func federationConfig(dir string, clients []string, extra string) string {
	var sites strings.Builder
	for _, c := range clients {
		fmt.Fprintf(&sites, `
resource "flare_client" %[1]q {
  project_id = flare_project.p.id
  name       = %[2]q
  org        = "nvidia"
}

resource "flare_startup_kit" %[1]q {
  participant = flare_client.%[1]s.descriptor
  server      = flare_server.server1.descriptor
  output_dir  = %[3]q
}
`, resourceName(c), c, filepath.Join(dir, "kits"))
	}
	return fmt.Sprintf(`
resource "flare_project" "p" {
  name        = "acc"
  description = "acceptance"
  ca = { dir = %[1]q }
}

resource "flare_server" "server1" {
  project_id     = flare_project.p.id
  name           = "server1"
  org            = "nvidia"
  fed_learn_port = 8002
  admin_port     = 8003
}

resource "flare_admin" "admin" {
  project_id = flare_project.p.id
  name       = "admin@nvidia.com"
  org        = "nvidia"
  role       = "project_admin"
}

resource "flare_startup_kit" "server" {
  participant = flare_server.server1.descriptor
  output_dir  = %[2]q
}

resource "flare_startup_kit" "admin" {
  participant = flare_admin.admin.descriptor
  server      = flare_server.server1.descriptor
  output_dir  = %[2]q
}

%[3]s
%[4]s
`, filepath.Join(dir, "ca"), filepath.Join(dir, "kits"), sites.String(), extra)
}

// checkNoPrivateKeyInState fails if any attribute of any resource holds
// private key material.
func checkNoPrivateKeyInState(s *terraform.State) error {
	for _, m := range s.Modules {
		for name, r := range m.Resources {
			for k, v := range r.Primary.Attributes {
				if strings.Contains(v, "PRIVATE KEY") {
					return fmt.Errorf("%s.%s holds private key material", name, k)
				}
			}
		}
	}
	return nil
}

// verifyKit checks a kit on disk with Go's crypto alone, independently of
// the kit writer: the participant certificate chains to rootCA.pem, the key
// matches the certificate, and every file of startup/ and local/ carries a
// valid RSA-PSS SHA-256 signature by the root in its signature.json.
func verifyKit(kitDir, certBase string) error {
	root, err := readCert(filepath.Join(kitDir, "startup", "rootCA.pem"))
	if err != nil {
		return err
	}
	cert, err := readCert(filepath.Join(kitDir, "startup", certBase+".crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("%s does not chain to rootCA.pem: %w", certBase+".crt", err)
	}
	if cert.SignatureAlgorithm != x509.SHA256WithRSA {
		return fmt.Errorf("certificate signed with %v, NVFlare wants SHA256WithRSA", cert.SignatureAlgorithm)
	}
	keyBytes, err := os.ReadFile(filepath.Join(kitDir, "startup", certBase+".key"))
	if err != nil {
		return err
	}
	block, _ := pem.Decode(keyBytes)
	if block == nil || block.Type != "RSA PRIVATE KEY" {
		return fmt.Errorf("%s.key is not a PKCS#1 RSA PRIVATE KEY PEM", certBase)
	}
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		return err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return fmt.Errorf("%s.key does not match %s.crt", certBase, certBase)
	}
	rootKey := root.PublicKey.(*rsa.PublicKey)
	for _, sub := range []string{"startup", "local"} {
		dir := filepath.Join(kitDir, sub)
		raw, err := os.ReadFile(filepath.Join(dir, "signature.json"))
		if err != nil {
			return err
		}
		var sigs map[string]string
		if err := json.Unmarshal(raw, &sigs); err != nil {
			return err
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Name() == "signature.json" {
				continue
			}
			data, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				return err
			}
			sig, err := base64.StdEncoding.DecodeString(sigs[e.Name()])
			if err != nil || len(sig) == 0 {
				return fmt.Errorf("%s/%s has no signature", sub, e.Name())
			}
			sum := sha256.Sum256(data)
			// Salt length 222 = 256 - 32 - 2: NVFlare signs with the maximum.
			if err := rsa.VerifyPSS(rootKey, crypto.SHA256, sum[:], sig, &rsa.PSSOptions{SaltLength: 222, Hash: crypto.SHA256}); err != nil {
				return fmt.Errorf("%s/%s: %w", sub, e.Name(), err)
			}
		}
	}
	return nil
}

func readCert(p string) (*x509.Certificate, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM", p)
	}
	return x509.ParseCertificate(block.Bytes)
}

// mtimes records every file's modification time under dir.
func mtimes(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !info.IsDir() {
			out[p] = info.ModTime().UnixNano()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// resourceName turns a participant name into a Terraform resource name.
func resourceName(participant string) string {
	return strings.NewReplacer("-", "_", "@", "_at_", ".", "_").Replace(participant)
}

func publicKeyPEM(cert *x509.Certificate) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}
