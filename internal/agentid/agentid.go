// Package agentid is flare-agent's own identity: the certificate
// flare_agent_identity issues for a site's agent, and how the agent and its
// clients recognise it.
//
// An agent certificate is never a participant's. It carries
//
//   - CN "<site>:flare-agent". No NVFlare participant name can contain ':'
//     (servers are host names, clients and relays [A-Za-z0-9-_], admins
//     e-mail addresses), so the certificate cannot assert any participant's
//     name: NVFlare's client registration and admin login check the
//     asserted name against the certificate's CN (IdentityVerifier).
//   - unstructuredName (NVFlare's role field) "flare-agent", which is no
//     role NVFlare's authorization policy grants anything to.
//   - extendedKeyUsage serverAuth only (and keyUsage digitalSignature,
//     keyEncipherment): TLS stacks refuse it as a client certificate, and
//     NVFlare 2.9 requires clientAuth of a registering client and of an
//     admin's certificate when the extension is present.
package agentid

import (
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/flarekit/terraform-provider-flare/internal/atomicfile"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// Role is the unstructuredName of an agent certificate.
const Role = "flare-agent"

// cnSuffix ends an agent certificate's CN.
const cnSuffix = ":" + Role

// Files of an agent kit.
const (
	CertFile   = "agent.crt"
	KeyFile    = "agent.key"
	RootFile   = "rootCA.pem"
	ConfigFile = "agent.yaml"
)

// CommonName is the CN of site's agent certificate.
func CommonName(site string) string { return site + cnSuffix }

// SiteOf returns the site an agent certificate serves, or ok false when
// cert is not an agent certificate (a participant's, say).
func SiteOf(cert *x509.Certificate) (site string, ok bool) {
	if cert == nil || pki.RoleOf(cert) != Role {
		return "", false
	}
	cn := cert.Subject.CommonName
	if !strings.HasSuffix(cn, cnSuffix) || len(cn) == len(cnSuffix) {
		return "", false
	}
	return strings.TrimSuffix(cn, cnSuffix), true
}

// Request is an agent certificate request for LeafRequest.
func Request(site, org string, hosts []string, pub *rsa.PublicKey, v pki.Validity, profile pki.Profile) pki.LeafRequest {
	var dns []string
	seen := map[string]bool{}
	for _, h := range hosts {
		if h != "" && !seen[h] {
			seen[h] = true
			dns = append(dns, h)
		}
	}
	// IP literals always go into iPAddress SANs: Go's TLS clients check
	// host names against those, whatever the NVFlare line does for
	// participants.
	profile.IPSANs = true
	return pki.LeafRequest{
		Subject:     pki.Subject{CommonName: CommonName(site), Organization: org, Role: Role},
		PublicKey:   pub,
		DNSNames:    dns,
		Validity:    v,
		Profile:     profile,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
}

// ValidateHost checks a listen host for the certificate's SANs.
func ValidateHost(h string) error {
	if h == "" {
		return errors.New("empty host name")
	}
	if net.ParseIP(h) != nil {
		return nil
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") ||
			strings.IndexFunc(label, func(r rune) bool {
				return !(r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
			}) >= 0 {
			return fmt.Errorf("%q is neither an IP address nor a DNS name", h)
		}
	}
	return nil
}

// ParticipantKitHint is what to do instead of giving the agent a
// participant's startup kit.
const ParticipantKitHint = "flare-agent no longer uses a participant's startup kit: the site host must not hold the " +
	"participant's private key. Make an agent kit with the Terraform resource flare_agent_identity " +
	"(it writes agent.crt, agent.key, rootCA.pem and an agent.yaml) and set agent_kit_dir to its folder"

// LooksLikeStartupKit reports whether dir is (or holds) a participant's
// startup kit.
func LooksLikeStartupKit(dir string) bool {
	for _, f := range []string{"startup/server.key", "startup/client.key", "server.key", "client.key", "startup/fed_server.json", "startup/fed_client.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return true
		}
	}
	return false
}

// Issue makes a new key and site's agent certificate signed by ca.
func Issue(ca pki.CA, site, org string, hosts []string, v pki.Validity, profile pki.Profile) (*x509.Certificate, *rsa.PrivateKey, error) {
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	cert, err := ca.Issue(Request(site, org, hosts, &key.PublicKey, v, profile))
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// WriteKit writes agent.crt, agent.key (0600) and rootCA.pem into dir.
func WriteKit(dir string, cert *x509.Certificate, key *rsa.PrivateKey, root *x509.Certificate) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{RootFile, pki.CertPEM(root), 0o644}, {CertFile, pki.CertPEM(cert), 0o644}, {KeyFile, pki.KeyPEM(key), 0o600}} {
		if err := atomicfile.Write(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}
