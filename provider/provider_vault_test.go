package provider

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

// configureVault runs the provider's Configure with a vault block of the
// given address and skip_verify (nil: no vault block) and returns its
// diagnostics.
func configureVault(t *testing.T, vault map[string]tftypes.Value) diag.Diagnostics {
	t.Helper()
	ctx := context.Background()
	p := New("test")()
	var sr provider.SchemaResponse
	p.Schema(ctx, provider.SchemaRequest{}, &sr)
	typ := sr.Schema.Type().TerraformType(ctx).(tftypes.Object)
	vtyp := typ.AttributeTypes["vault"].(tftypes.Object)
	vaultVal := tftypes.NewValue(vtyp, nil)
	if vault != nil {
		attrs := map[string]tftypes.Value{}
		for name, at := range vtyp.AttributeTypes {
			if v, ok := vault[name]; ok {
				attrs[name] = v
			} else {
				attrs[name] = tftypes.NewValue(at, nil)
			}
		}
		vaultVal = tftypes.NewValue(vtyp, attrs)
	}
	top := map[string]tftypes.Value{}
	for name, at := range typ.AttributeTypes { // other blocks (dashboard) unset
		top[name] = tftypes.NewValue(at, nil)
	}
	top["vault"] = vaultVal
	raw := tftypes.NewValue(typ, top)
	var resp provider.ConfigureResponse
	p.Configure(ctx, provider.ConfigureRequest{Config: tfsdk.Config{Schema: sr.Schema, Raw: raw}}, &resp)
	return resp.Diagnostics
}

// TestProviderVaultTransportWarnings: plain http to a host that is not
// loopback, and TLS verification off, are warnings naming the risk; a
// loopback dev server or https with verification is silent.
func TestProviderVaultTransportWarnings(t *testing.T) {
	str := func(s string) tftypes.Value { return tftypes.NewValue(tftypes.String, s) }
	yes := tftypes.NewValue(tftypes.Bool, true)
	for _, tc := range []struct {
		name    string
		vault   map[string]tftypes.Value
		envAddr string
		envSkip string
		want    []string // warning paths, or summaries for env-only
	}{
		{name: "https", vault: map[string]tftypes.Value{"address": str("https://vault.example.com:8200")}},
		{name: "http loopback", vault: map[string]tftypes.Value{"address": str("http://127.0.0.1:8200")}},
		{name: "http remote", vault: map[string]tftypes.Value{"address": str("http://vault.example.com:8200")},
			want: []string{"Vault Reached Over Plain HTTP"}},
		{name: "skip_verify", vault: map[string]tftypes.Value{"address": str("https://vault.example.com:8200"), "skip_verify": yes},
			want: []string{"Vault TLS Verification Off"}},
		{name: "VAULT_SKIP_VERIFY", vault: map[string]tftypes.Value{"address": str("https://vault.example.com:8200")}, envSkip: "true",
			want: []string{"Vault TLS Verification Off"}},
		{name: "env address only, no block", envAddr: "http://10.1.2.3:8200",
			want: []string{"Vault Reached Over Plain HTTP"}},
		{name: "no vault at all"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("VAULT_ADDR", tc.envAddr)
			t.Setenv("VAULT_SKIP_VERIFY", tc.envSkip)
			diags := configureVault(t, tc.vault)
			if diags.HasError() {
				t.Fatalf("errors: %v", diags.Errors())
			}
			var got []string
			for _, d := range diags.Warnings() {
				got = append(got, d.Summary())
				if !strings.Contains(d.Detail(), "CA key") {
					t.Errorf("%s: the warning does not name the risk: %s", d.Summary(), d.Detail())
				}
				if tc.vault != nil {
					wp, ok := d.(diag.DiagnosticWithPath)
					if !ok || !wp.Path().ParentPath().Equal(path.Root("vault")) {
						t.Errorf("%s: not on an attribute of vault", d.Summary())
					}
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("warnings %q, want %q", got, tc.want)
			}
		})
	}
}
