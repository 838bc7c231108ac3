package vaultca

import (
	"slices"
	"strings"
	"testing"
)

func TestTransportRisks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		envAddr string
		envSkip string
		want    []string // fields
	}{
		{name: "https", cfg: Config{Address: "https://vault.example.com:8200"}},
		{name: "http loopback v4", cfg: Config{Address: "http://127.0.0.1:8200"}},
		{name: "http loopback v4 other", cfg: Config{Address: "http://127.3.4.5:8200"}},
		{name: "http loopback v6", cfg: Config{Address: "http://[::1]:8200"}},
		{name: "http localhost", cfg: Config{Address: "http://localhost:8200"}},
		{name: "unix socket", cfg: Config{Address: "unix:///run/vault.sock"}},
		{name: "http remote", cfg: Config{Address: "http://vault.example.com:8200"}, want: []string{"address"}},
		{name: "http remote ip", cfg: Config{Address: "http://10.0.0.5:8200"}, want: []string{"address"}},
		{name: "HTTP remote upper", cfg: Config{Address: "HTTP://10.0.0.5:8200"}, want: []string{"address"}},
		{name: "http unspecified", cfg: Config{Address: "http://0.0.0.0:8200"}, want: []string{"address"}},
		{name: "http localhost lookalike", cfg: Config{Address: "http://localhost.example.com:8200"}, want: []string{"address"}},
		{name: "http remote from env", envAddr: "http://vault.example.com:8200", want: []string{"address"}},
		{name: "config beats env", cfg: Config{Address: "https://vault.example.com"}, envAddr: "http://vault.example.com:8200"},
		{name: "skip verify", cfg: Config{Address: "https://vault.example.com", SkipVerify: true}, want: []string{"skip_verify"}},
		{name: "skip verify loopback", cfg: Config{Address: "https://127.0.0.1:8200", SkipVerify: true}, want: []string{"skip_verify"}},
		{name: "skip verify from env", cfg: Config{Address: "https://vault.example.com"}, envSkip: "true", want: []string{"skip_verify"}},
		{name: "skip verify env 1", cfg: Config{Address: "https://vault.example.com"}, envSkip: "1", want: []string{"skip_verify"}},
		{name: "skip verify env false", cfg: Config{Address: "https://vault.example.com"}, envSkip: "false"},
		{name: "both", cfg: Config{Address: "http://vault.example.com", SkipVerify: true}, want: []string{"address", "skip_verify"}},
		{name: "default address", want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("VAULT_ADDR", tc.envAddr)
			t.Setenv("VAULT_SKIP_VERIFY", tc.envSkip)
			var got []string
			for _, r := range TransportRisks(tc.cfg) {
				got = append(got, r.Field)
				if r.Summary == "" || !strings.Contains(r.Detail, "CA key") {
					t.Errorf("%s: the warning does not name the risk: %+v", r.Field, r)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("risks %v, want %v", got, tc.want)
			}
		})
	}
}
