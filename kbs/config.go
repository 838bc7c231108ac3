package kbs

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"gopkg.in/yaml.v3"

	"github.com/flarekit/terraform-provider-flare/internal/attest"
)

// Config is flare-kbs's YAML configuration (kbs.yaml).
type Config struct {
	// Listen is host:port (default 127.0.0.1:8999).
	Listen string `yaml:"listen"`
	TLS    struct {
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"tls"`
	// Simulated accepts go-sev-guest's fake AMD chain. Tests only.
	Simulated    bool   `yaml:"simulated"`
	SessionTTL   string `yaml:"session_ttl"`
	TokenTTL     string `yaml:"token_ttl"`
	TokenKey     string `yaml:"token_key"`
	VCEKCacheDir string `yaml:"vcek_cache_dir"`
	MinTCB       string `yaml:"min_tcb"`
	MaxSessions  int    `yaml:"max_sessions"`
	LogLevel     string `yaml:"log_level"`
	Store        struct {
		Dir   string `yaml:"dir"`
		Vault *struct {
			Address      string `yaml:"address"`
			TokenFile    string `yaml:"token_file"`
			Mount        string `yaml:"mount"`
			PolicyPrefix string `yaml:"policy_prefix"`
			CACert       string `yaml:"ca_cert"`
		} `yaml:"vault"`
	} `yaml:"store"`
}

// LoadConfig reads and checks a config file. Errors name the field and
// the fix.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config %s: %v (fields: listen, tls.cert, tls.key, simulated, session_ttl, token_ttl, token_key, vcek_cache_dir, min_tcb, max_sessions, log_level, store.dir, store.vault.{address,token_file,mount,policy_prefix,ca_cert})", path, err)
	}
	if err := c.Check(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

// Check validates the config and fills defaults.
func (c *Config) Check() error {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8999"
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen: %q is not host:port (e.g. 127.0.0.1:8999, or 0.0.0.0:8999 for guests on other hosts)", c.Listen)
	}
	if c.TLS.Cert == "" || c.TLS.Key == "" {
		return errors.New("tls.cert and tls.key: both are required (PEM files); the guest pins the CA that signed tls.cert, so the broker serves TLS only")
	}
	for _, d := range []struct{ field, v string }{{"session_ttl", c.SessionTTL}, {"token_ttl", c.TokenTTL}} {
		if d.v == "" {
			continue
		}
		if v, err := time.ParseDuration(d.v); err != nil || v <= 0 || v > 24*time.Hour {
			return fmt.Errorf("%s: %q: give a Go duration between 1s and 24h, e.g. 5m", d.field, d.v)
		}
	}
	if c.MinTCB != "" {
		if _, err := attest.ParseTCBVersion(c.MinTCB); err != nil {
			return fmt.Errorf("min_tcb: %v", err)
		}
	}
	if c.MaxSessions < 0 {
		return fmt.Errorf("max_sessions: %d: give a positive number or leave it out (default %d)", c.MaxSessions, DefaultMaxSessions)
	}
	switch strings.ToLower(c.LogLevel) {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level: %q: one of debug, info, warn, error", c.LogLevel)
	}
	switch {
	case c.Store.Dir != "" && c.Store.Vault != nil:
		return errors.New("store: give either store.dir or store.vault, not both")
	case c.Store.Dir == "" && c.Store.Vault == nil:
		return errors.New("store: missing: give store.dir (a directory of 0600 files) or store.vault (address, token_file, mount of a KV version 1 engine)")
	case c.Store.Vault != nil:
		v := c.Store.Vault
		if v.Address == "" {
			return errors.New("store.vault.address: missing (e.g. https://vault.example:8200)")
		}
		if v.Mount == "" {
			return errors.New("store.vault.mount: missing: the path of a KV version 1 engine (e.g. kv, enabled with `bao secrets enable -version=1 -path=kv kv`)")
		}
		if v.TokenFile == "" && os.Getenv("VAULT_TOKEN") == "" {
			return errors.New("store.vault.token_file: missing, and VAULT_TOKEN is not set: give a file holding a token whose policy can read <mount>/*")
		}
	}
	return nil
}

func (c *Config) duration(s string, def time.Duration) time.Duration {
	if s == "" {
		return def
	}
	d, _ := time.ParseDuration(s)
	return d
}

// OpenStore opens the configured store.
func (c *Config) OpenStore() (Store, error) {
	if c.Store.Dir != "" {
		return NewDirStore(c.Store.Dir)
	}
	v := c.Store.Vault
	vc := api.DefaultConfig()
	vc.Address = v.Address
	if v.CACert != "" {
		if err := vc.ConfigureTLS(&api.TLSConfig{CACert: v.CACert}); err != nil {
			return nil, fmt.Errorf("store.vault.ca_cert: %w", err)
		}
	}
	client, err := api.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("store.vault: %w", err)
	}
	token := os.Getenv("VAULT_TOKEN")
	if v.TokenFile != "" {
		b, err := os.ReadFile(v.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("store.vault.token_file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	client.SetToken(token)
	return NewVaultStore(client, v.Mount, v.PolicyPrefix)
}

// ServerOptions builds Options (store opened, token key loaded).
func (c *Config) ServerOptions(log *slog.Logger) (Options, error) {
	st, err := c.OpenStore()
	if err != nil {
		return Options{}, err
	}
	o := Options{
		Store: st, Simulated: c.Simulated, VCEKCacheDir: c.VCEKCacheDir, MaxSessions: c.MaxSessions, Logger: log,
		SessionTTL: c.duration(c.SessionTTL, DefaultSessionTTL), TokenTTL: c.duration(c.TokenTTL, DefaultTokenTTL),
	}
	if c.MinTCB != "" {
		o.MinimumTCB, _ = attest.ParseTCBVersion(c.MinTCB)
	}
	if c.TokenKey != "" {
		if o.TokenKey, err = LoadOrCreateTokenKey(c.TokenKey); err != nil {
			return Options{}, err
		}
	}
	return o, nil
}

// TLSConfig loads tls.cert and tls.key (TLS 1.2 or later).
func (c *Config) TLSConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.TLS.Cert, c.TLS.Key)
	if err != nil {
		return nil, fmt.Errorf("tls.cert/tls.key: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// Level is the slog level of log_level.
func (c *Config) Level() slog.Level {
	switch strings.ToLower(c.LogLevel) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
