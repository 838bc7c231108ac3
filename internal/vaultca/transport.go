package vaultca

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/hashicorp/vault/api"
)

// TransportRisk is a way the connection to Vault can leak the login
// (token, AppRole secret_id, JWT) or let someone else pose as Vault. Either
// gives whoever is on the path the power to sign anything with the CA key.
type TransportRisk struct {
	// Field is the provider setting concerned: "address" or "skip_verify".
	Field   string
	Summary string
	Detail  string
}

// defaultAddress is the Vault API's default when neither the config nor
// VAULT_ADDR names one.
const defaultAddress = "https://127.0.0.1:8200"

// EffectiveAddress is the address NewClient uses: cfg.Address, else
// VAULT_ADDR, else the Vault API's default.
func (c Config) EffectiveAddress() string {
	if c.Address != "" {
		return c.Address
	}
	if a := os.Getenv(api.EnvVaultAddress); a != "" {
		return a
	}
	return defaultAddress
}

// effectiveSkipVerify is cfg.SkipVerify or VAULT_SKIP_VERIFY, read as the
// Vault API reads it.
func (c Config) effectiveSkipVerify() (bool, string) {
	if c.SkipVerify {
		return true, "skip_verify = true"
	}
	if v := os.Getenv(api.EnvVaultSkipVerify); v != "" {
		if b, err := strconv.ParseBool(v); err == nil && b {
			return true, api.EnvVaultSkipVerify + "=" + v
		}
	}
	return false, ""
}

// TransportRisks lists what is weak about how cfg reaches Vault: plain
// http to a host that is not loopback, and TLS verification turned off
// (by the config or VAULT_SKIP_VERIFY). Nothing is contacted.
func TransportRisks(cfg Config) []TransportRisk {
	var risks []TransportRisk
	addr := cfg.EffectiveAddress()
	u, err := url.Parse(addr)
	if err != nil {
		return nil // NewClient reports the address itself
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme == "http" && !isLoopbackHost(u.Hostname()) {
		risks = append(risks, TransportRisk{Field: "address", Summary: "Vault Reached Over Plain HTTP",
			Detail: fmt.Sprintf("The Vault address %s uses plain http to a host that is not loopback: the Vault token "+
				"(or AppRole secret_id, or JWT) and every signing request cross the network unencrypted, so anyone "+
				"on the path can read the token and sign any certificate with the project's CA key, or answer "+
				"in Vault's place. Use an https:// address (with ca_cert or VAULT_CACERT for a private CA).", addr)})
	}
	if skip, how := cfg.effectiveSkipVerify(); skip && scheme != "unix" {
		risks = append(risks, TransportRisk{Field: "skip_verify", Summary: "Vault TLS Verification Off",
			Detail: fmt.Sprintf("%s turns off verification of Vault's TLS certificate at %s: anyone on the path can "+
				"pose as Vault, take the token (or AppRole secret_id, or JWT) and sign any certificate with the "+
				"project's CA key. Give the CA that signs Vault's certificate in ca_cert (or VAULT_CACERT) "+
				"instead; skip_verify is for tests only.", how, addr)})
	}
	return risks
}

// isLoopbackHost tells whether host is a loopback IP literal or
// localhost. Names are not resolved: a name that merely resolves to a
// loopback address today is not trusted to keep doing so.
func isLoopbackHost(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
