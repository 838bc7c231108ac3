package provider

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
)

// TestProjectStateUpgradeV0 upgrades flare_project state written by the
// release before the Vault key store (testdata/project_state_v0.json,
// schema version 0): ca gains kv_mount and kv_path (null), everything else,
// the id above all, stays, and the result has the current schema's shape.
func TestProjectStateUpgradeV0(t *testing.T) {
	b, err := os.ReadFile("testdata/project_state_v0.json")
	if err != nil {
		t.Fatal(err)
	}
	var fixture struct {
		Resources map[string]struct {
			SchemaVersion int64          `json:"schema_version"`
			Attributes    map[string]any `json:"attributes"`
		} `json:"resources"`
	}
	if err := json.Unmarshal(b, &fixture); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := NewProjectResource().(*projectResource)
	var sr resource.SchemaResponse
	r.Schema(ctx, resource.SchemaRequest{}, &sr)
	if sr.Schema.Version != 1 {
		t.Fatalf("schema version %d, want 1", sr.Schema.Version)
	}
	typ := sr.Schema.Type().TerraformType(ctx)
	for name, res := range fixture.Resources {
		if res.SchemaVersion != 0 {
			t.Fatalf("%s: fixture has schema version %d", name, res.SchemaVersion)
		}
		up, ok := r.UpgradeState(ctx)[res.SchemaVersion]
		if !ok {
			t.Fatalf("no upgrader from version %d", res.SchemaVersion)
		}
		raw, _ := json.Marshal(res.Attributes)
		var resp resource.UpgradeStateResponse
		up.StateUpgrader(ctx, resource.UpgradeStateRequest{RawState: &tfprotov6.RawState{JSON: raw}}, &resp)
		if resp.Diagnostics.HasError() {
			t.Fatalf("%s: %v", name, resp.Diagnostics)
		}
		if _, err := resp.DynamicValue.Unmarshal(typ); err != nil {
			t.Fatalf("%s: upgraded state does not fit the schema: %v", name, err)
		}
		var got map[string]any
		if err := json.Unmarshal(resp.DynamicValue.JSON, &got); err != nil {
			t.Fatal(err)
		}
		ca := got["ca"].(map[string]any)
		for _, k := range []string{"kv_mount", "kv_path"} {
			if v, ok := ca[k]; !ok || v != nil {
				t.Errorf("%s: ca.%s = %v (present %v), want null", name, k, v, ok)
			}
			delete(ca, k)
		}
		if gj, _ := json.Marshal(got); string(gj) != string(raw) {
			t.Errorf("%s: upgrade changed more than ca:\n got %s\nwant %s", name, gj, raw)
		}
		if _, err := parseProjectID(got["id"].(string)); err != nil {
			t.Errorf("%s: the old id no longer parses: %v", name, err)
		}
	}
}
