package kbs_test

import (
	"context"
	"strings"
	"testing"

	"github.com/flarekit/terraform-provider-flare/kbs"
	"github.com/flarekit/terraform-provider-flare/kbs/kbstest"
)

// The Vault store against a real OpenBao dev server (build/venv's bao from
// `make vault-tools`); make test sets KBS_REQUIRE_BAO=1 so a missing bao
// fails instead of skipping.
func TestVaultStoreKVv1(t *testing.T) {
	bao := kbstest.StartBao(t)
	st, err := kbs.NewVaultStore(bao.Client, bao.KVMount, "")
	if err != nil {
		t.Fatal(err)
	}
	testStore(t, st)

	// Trustee's layout: kv/<repo>/<type>/<tag>, field data, a string.
	ctx := context.Background()
	p := kbs.ResourcePath{Repo: "default", Type: "flare-root", Tag: "site-1"}
	if err := st.PutSecret(ctx, p, []byte("hex-passphrase")); err != nil {
		t.Fatal(err)
	}
	sec, err := bao.Client.Logical().Read("kv/default/flare-root/site-1")
	if err != nil || sec == nil || sec.Data["data"] != "hex-passphrase" || len(sec.Data) != 1 {
		t.Fatalf("raw KV v1 entry: %+v %v", sec, err)
	}
	if err := st.PutPolicy(ctx, p, kbs.Policy{Measurements: []string{hexOf(measA)}}); err != nil {
		t.Fatal(err)
	}
	pol, err := bao.Client.Logical().Read("kv/.flare-policy/default/flare-root/site-1")
	if err != nil || pol == nil || pol.Data["allow_debug"] != false {
		t.Fatalf("raw policy entry: %+v %v", pol, err)
	}
	// A secret Trustee wrote as a byte array reads back too.
	if _, err := bao.Client.Logical().Write("kv/default/flare-root/bytes", map[string]any{"data": []int{104, 105}}); err != nil {
		t.Fatal(err)
	}
	if got, err := st.GetSecret(ctx, kbs.ResourcePath{Repo: "default", Type: "flare-root", Tag: "bytes"}); err != nil || string(got) != "hi" {
		t.Fatalf("byte array secret: %q %v", got, err)
	}

	// Full protocol with the Vault store.
	k := kbstest.Start(t, kbs.Options{Simulated: true, Store: st})
	got, err := get(t, k, device(t, measA, 0).QuoteProvider(), p.String())
	if err != nil || string(got) != "hex-passphrase" {
		t.Fatalf("release from Vault: %q %v", got, err)
	}

	// A token limited to the documented policy is enough.
	const hcl = `path "kv/*" { capabilities = ["read"] }`
	if err := bao.Client.Sys().PutPolicy("flare-kbs", hcl); err != nil {
		t.Fatal(err)
	}
	tok, err := bao.Client.Auth().Token().Create(&apiTokenRequest{Policies: []string{"flare-kbs"}, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	ro, _ := bao.Client.Clone()
	ro.SetToken(tok.Auth.ClientToken)
	rs, _ := kbs.NewVaultStore(ro, "kv", "")
	if _, err := rs.GetPolicy(ctx, p); err != nil {
		t.Fatalf("read-only token reading the policy: %v", err)
	}
	if err := rs.PutSecret(ctx, p, []byte("x")); err == nil {
		t.Fatal("read-only token wrote")
	}

	// KV v2 is refused with the fix.
	if err := bao.Client.Sys().Mount("kv2", &apiMountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		t.Fatal(err)
	}
	v2, _ := kbs.NewVaultStore(bao.Client, "kv2", "")
	err = v2.PutSecret(ctx, p, []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "KV version 1") {
		t.Fatalf("KV v2 mount: %v", err)
	}
}
