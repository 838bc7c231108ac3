// Package vaultca keeps the federation's root CA key inside Vault (or
// OpenBao) Transit and signs through it as a crypto.Signer.
//
// The key never leaves Vault: EnsureKey creates it non-exportable (or adopts
// an existing key only when it is non-exportable and has no plaintext
// backup), and NewSigner returns a Signer pinned to one key version. Each
// Sign is one POST to <mount>/sign/<name> with the digest (prehashed), an
// explicit signature_algorithm (Vault's default is PSS, which would make
// certificates NVFlare rejects), an explicit salt_length for PSS, and the
// pinned key_version. The answer is checked against the pinned version and
// verified locally before it is returned.
package vaultca

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
)

// Supported Transit key types for a root CA (NVFlare verifies RSA only).
const (
	KeyTypeRSA2048 = "rsa-2048"
	KeyTypeRSA3072 = "rsa-3072"
	KeyTypeRSA4096 = "rsa-4096"
)

// DefaultTransitMount is where Transit is mounted unless configured.
const DefaultTransitMount = "transit"

// Defaults applied by Login when neither Config nor the environment
// (VAULT_CLIENT_TIMEOUT) sets them: a down or black-holed server fails in
// seconds, not minutes.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultDialTimeout = 5 * time.Second
)

// Config says how to reach and log in to Vault and which Transit key holds
// the CA. Empty fields fall back to the environment the way the Vault CLI
// does: VAULT_ADDR, VAULT_TOKEN, VAULT_NAMESPACE, VAULT_CACERT,
// VAULT_SKIP_VERIFY, VAULT_CLIENT_TIMEOUT, VAULT_MAX_RETRIES, ...
type Config struct {
	Address   string // VAULT_ADDR
	Namespace string // VAULT_NAMESPACE (Enterprise / OpenBao ≥ 2.3)

	// CACert is a PEM bundle or the path of one, to verify Vault's TLS
	// certificate. SkipVerify turns verification off (tests only).
	CACert     string
	SkipVerify bool

	// Exactly one way to log in: AppRole, JWT, or a token (Token, else
	// VAULT_TOKEN).
	Token   string
	AppRole *AppRoleAuth
	JWT     *JWTAuth

	TransitMount string // default "transit"
	KeyName      string
	KeyType      string // rsa-2048 (default for new keys) | rsa-3072 | rsa-4096
	// KeyVersion pins the Transit key version. 0 = the latest version at
	// the time the signer is made; the caller should then store
	// Signer.KeyVersion() and pass it from then on.
	KeyVersion int

	// Timeout bounds each Vault request including retries (default 30s, or
	// VAULT_CLIENT_TIMEOUT). DialTimeout bounds one TCP connect (default 5s).
	Timeout     time.Duration
	DialTimeout time.Duration
}

// AppRoleAuth logs in with auth/<MountPath>/login (default mount "approle").
type AppRoleAuth struct {
	RoleID    string
	SecretID  string
	MountPath string
}

// JWTAuth logs in with auth/<MountPath>/login (default mount "jwt"), e.g. a
// CI system's OIDC ID token.
type JWTAuth struct {
	Role      string
	JWT       string
	MountPath string
}

func (c Config) mount() string {
	if c.TransitMount == "" {
		return DefaultTransitMount
	}
	return strings.Trim(c.TransitMount, "/")
}

// NewClient builds an unauthenticated-by-config client: the address, TLS
// and namespace from cfg over the environment, and short timeouts. The
// token from VAULT_TOKEN is picked up as the api package does.
func NewClient(cfg Config) (*api.Client, error) {
	ac := api.DefaultConfig() // reads VAULT_ADDR, VAULT_CACERT, VAULT_SKIP_VERIFY, ...
	if ac.Error != nil {
		return nil, fmt.Errorf("vault client settings from the environment: %w", ac.Error)
	}
	if cfg.Address != "" {
		ac.Address = cfg.Address
	}
	if cfg.Timeout > 0 {
		ac.Timeout = cfg.Timeout
	} else if os.Getenv(api.EnvVaultClientTimeout) == "" {
		ac.Timeout = DefaultTimeout
	}
	// Retry 5xx/connection errors quickly; the total stays under Timeout.
	ac.MinRetryWait = 200 * time.Millisecond
	ac.MaxRetryWait = 500 * time.Millisecond
	dial := cfg.DialTimeout
	if dial <= 0 {
		dial = DefaultDialTimeout
	}
	if tr, ok := ac.HttpClient.Transport.(*http.Transport); ok {
		tr.DialContext = (&net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}).DialContext
	}
	if cfg.CACert != "" || cfg.SkipVerify {
		tlsCfg := &api.TLSConfig{Insecure: cfg.SkipVerify}
		if strings.Contains(cfg.CACert, "-----BEGIN") {
			tlsCfg.CACertBytes = []byte(cfg.CACert)
		} else {
			tlsCfg.CACert = cfg.CACert
		}
		if err := ac.ConfigureTLS(tlsCfg); err != nil {
			return nil, fmt.Errorf("vault TLS settings: %w", err)
		}
	}
	client, err := api.NewClient(ac) // reads VAULT_TOKEN, VAULT_NAMESPACE
	if err != nil {
		return nil, fmt.Errorf("vault client for %s: %w", ac.Address, err)
	}
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	return client, nil
}

// Login returns a client logged in by cfg: AppRole, JWT, or a token (cfg.Token,
// else VAULT_TOKEN). The token is checked with auth/token/lookup-self, so a
// wrong address, a down server or a bad token fail here with a clear error.
func Login(ctx context.Context, cfg Config) (*api.Client, error) {
	client, err := NewClient(cfg)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.AppRole != nil && cfg.JWT != nil:
		return nil, errors.New("vault login: set only one of approle and jwt")
	case cfg.AppRole != nil:
		if err := loginAppRole(ctx, client, cfg.AppRole); err != nil {
			return nil, err
		}
	case cfg.JWT != nil:
		if err := loginJWT(ctx, client, cfg.JWT); err != nil {
			return nil, err
		}
	default:
		if cfg.Token != "" {
			client.SetToken(cfg.Token)
		}
		if client.Token() == "" {
			return nil, fmt.Errorf("vault login at %s: no credentials: set a token (or VAULT_TOKEN), an approle or a jwt login", client.Address())
		}
	}
	if _, err := client.Auth().Token().LookupSelfWithContext(ctx); err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
			return nil, fmt.Errorf("vault at %s rejected the token (auth/token/lookup-self: permission denied): "+
				"it is invalid or expired, or lacks the default policy (read on auth/token/lookup-self)", client.Address())
		}
		return nil, describe(client, "vault token lookup", err, "read", "auth/token/lookup-self")
	}
	return client, nil
}

func loginAppRole(ctx context.Context, client *api.Client, a *AppRoleAuth) error {
	mount := strings.Trim(a.MountPath, "/")
	if mount == "" {
		mount = "approle"
	}
	if a.RoleID == "" || a.SecretID == "" {
		return fmt.Errorf("vault approle login (auth/%s/login): role_id and secret_id are both required", mount)
	}
	method, err := approle.NewAppRoleAuth(a.RoleID, &approle.SecretID{FromString: a.SecretID}, approle.WithMountPath(mount))
	if err != nil {
		return fmt.Errorf("vault approle login: %w", err)
	}
	client.ClearToken() // a stale VAULT_TOKEN must not ride along
	secret, err := client.Auth().Login(ctx, method)
	if err != nil {
		return describeLogin(client, "approle", mount, err)
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return fmt.Errorf("vault approle login at %s (auth/%s/login): no token in the answer", client.Address(), mount)
	}
	return nil
}

func loginJWT(ctx context.Context, client *api.Client, j *JWTAuth) error {
	mount := strings.Trim(j.MountPath, "/")
	if mount == "" {
		mount = "jwt"
	}
	if j.JWT == "" {
		return fmt.Errorf("vault jwt login (auth/%s/login): the jwt is empty", mount)
	}
	client.ClearToken()
	data := map[string]any{"jwt": j.JWT}
	if j.Role != "" {
		data["role"] = j.Role
	}
	secret, err := client.Logical().WriteWithContext(ctx, "auth/"+mount+"/login", data)
	if err != nil {
		return describeLogin(client, "jwt", mount, err)
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return fmt.Errorf("vault jwt login at %s (auth/%s/login): no token in the answer", client.Address(), mount)
	}
	client.SetToken(secret.Auth.ClientToken)
	return nil
}

func describeLogin(client *api.Client, method, mount string, err error) error {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return fmt.Errorf("vault %s login at %s (auth/%s/login) failed with HTTP %d: %s",
			method, client.Address(), mount, re.StatusCode, vaultMessages(re))
	}
	return describe(client, "vault "+method+" login", err, "", "auth/"+mount+"/login")
}
