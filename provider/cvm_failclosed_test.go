package provider

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"

	"github.com/flarekit/terraform-provider-flare/agent/api"
)

// TestAccAllowSimulatedNeedsEnv: allow_simulated = true, on the data
// source and on the resource, is refused at validation unless
// FLARE_ALLOW_SIMULATED=1 is set, and the error says so. No agent is
// needed: validation fails before anything is contacted.
func TestAccAllowSimulatedNeedsEnv(t *testing.T) {
	t.Setenv(AllowSimulatedEnv, "")
	dir := t.TempDir()
	want := regexp.MustCompile(`(?s)Simulated Attestation Not Enabled.*` + AllowSimulatedEnv + `=1`)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: fmt.Sprintf(`
data "flare_cvm_attestation" "a" {
  agent_url       = "https://127.0.0.1:1"
  auth_kit_dir    = %[1]q
  kit_dir         = %[1]q
  allow_simulated = true
}`, dir),
				ExpectError: want,
			},
			{
				Config: fmt.Sprintf(`
resource "flare_cvm_instance" "i" {
  agent_url       = "https://127.0.0.1:1"
  auth_kit_dir    = %[1]q
  kit_dir         = %[1]q
  allow_simulated = true
}`, dir),
				ExpectError: want,
			},
		},
	})
}

func TestAllowSimulatedGate(t *testing.T) {
	validate := func(v types.Bool) *validator.BoolResponse {
		resp := &validator.BoolResponse{}
		allowSimulatedGate{}.ValidateBool(context.Background(),
			validator.BoolRequest{Path: path.Root("allow_simulated"), ConfigValue: v}, resp)
		return resp
	}
	for _, env := range []string{"", "0", "true", "yes"} {
		t.Setenv(AllowSimulatedEnv, env)
		resp := validate(types.BoolValue(true))
		if !resp.Diagnostics.HasError() {
			t.Fatalf("%s=%q: allow_simulated = true accepted", AllowSimulatedEnv, env)
		}
		if d := resp.Diagnostics.Errors()[0].Detail(); !strings.Contains(d, AllowSimulatedEnv+"=1") {
			t.Errorf("the error does not name the variable: %s", d)
		}
		for _, v := range []types.Bool{types.BoolValue(false), types.BoolNull(), types.BoolUnknown()} {
			if resp := validate(v); len(resp.Diagnostics) != 0 {
				t.Errorf("%v: %v", v, resp.Diagnostics)
			}
		}
		if _, d := attestationOptions(types.StringNull(), types.BoolValue(true), types.StringNull(), types.StringNull()); !d.HasError() {
			t.Errorf("%s=%q: attestationOptions accepted allow_simulated", AllowSimulatedEnv, env)
		}
	}
	t.Setenv(AllowSimulatedEnv, "1")
	resp := validate(types.BoolValue(true))
	if resp.Diagnostics.HasError() || resp.Diagnostics.WarningsCount() != 1 {
		t.Fatalf("%s=1: want one warning, got %v", AllowSimulatedEnv, resp.Diagnostics)
	}
	if o, d := attestationOptions(types.StringNull(), types.BoolValue(true), types.StringNull(), types.StringNull()); d.HasError() || !o.AllowSimulated {
		t.Errorf("%s=1: attestationOptions %+v %v", AllowSimulatedEnv, o, d)
	}
}

// TestUnverifiedDiag: flare_cvm_attestation fails closed. An unverified
// report is an error unless require_verified = false, then a warning.
func TestUnverifiedDiag(t *testing.T) {
	bad := &api.Verdict{Verified: false, Reasons: []string{"measurement: got 00…, want 11…"}}
	for _, rv := range []types.Bool{types.BoolNull(), types.BoolValue(true), types.BoolUnknown()} {
		d := unverifiedDiag(bad, "cvm-1", "https://site-1:8443", rv)
		if !d.HasError() {
			t.Fatalf("require_verified %v: unverified report is not an error: %v", rv, d)
		}
		if det := d.Errors()[0].Detail(); !strings.Contains(det, "measurement: got") || !strings.Contains(det, "require_verified = false") {
			t.Errorf("error detail: %s", det)
		}
	}
	d := unverifiedDiag(bad, "cvm-1", "https://site-1:8443", types.BoolValue(false))
	if d.HasError() || d.WarningsCount() != 1 {
		t.Errorf("require_verified = false: want one warning, got %v", d)
	}
	if d := unverifiedDiag(&api.Verdict{Verified: true}, "cvm-1", "https://site-1:8443", types.BoolNull()); len(d) != 0 {
		t.Errorf("verified report: %v", d)
	}
}
