package kbs_test

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flarekit/terraform-provider-flare/kbs"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "kbs.yaml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := "tls: {cert: c.pem, key: k.pem}\nstore: {dir: " + dir + "/store}\n"
	c, err := kbs.LoadConfig(write(good))
	if err != nil || c.Listen != "127.0.0.1:8999" || c.Simulated {
		t.Fatalf("good config: %+v %v", c, err)
	}
	for cfg, want := range map[string]string{
		"store: {dir: x}\n":        "tls.cert and tls.key",
		"tls: {cert: c, key: k}\n": "store: missing",
		"tls: {cert: c, key: k}\nstore: {dir: x, vault: {address: a}}\n": "either store.dir or store.vault",
		good + "listen: nope\n":    "listen:",
		good + "session_ttl: 5x\n": "session_ttl",
		good + "min_tcb: zz\n":     "min_tcb",
		good + "simulatd: true\n":  "simulatd",
		good + "log_level: loud\n": "log_level",
		"tls: {cert: c, key: k}\nstore: {vault: {address: http://x}}\n":            "store.vault.mount",
		"tls: {cert: c, key: k}\nstore: {vault: {address: http://x, mount: kv}}\n": "store.vault.token_file",
	} {
		t.Setenv("VAULT_TOKEN", "")
		_, err := kbs.LoadConfig(write(cfg))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error naming %s", cfg, err, want)
		}
	}
	// Token key made once, 0600, then reused.
	kp := filepath.Join(dir, "keys", "token.key")
	k1, err := kbs.LoadOrCreateTokenKey(kp)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(kp)
	k2, err := kbs.LoadOrCreateTokenKey(kp)
	if err != nil || !k1.Equal(k2) || st.Mode().Perm() != 0o600 {
		t.Fatalf("token key reuse: %v %v", err, st.Mode())
	}
}
