package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/internal/kit"
	"github.com/flarekit/terraform-provider-flare/internal/project"
)

// ccModel is a startup kit's cc setting: NVFlare's cc_config (cc_issuers,
// cc_attestation.check_frequency, class_allow_list) plus what NVFlare's
// CCBuilder takes from the whole project (every CC site's issuers and
// names), which one kit resource cannot see and so names explicitly.
type ccModel struct {
	Issuers        []ccIssuerModel     `tfsdk:"issuers"`
	Verifiers      []ccAuthorizerModel `tfsdk:"verifiers"`
	CheckFrequency types.Int64         `tfsdk:"check_frequency"`
	EnabledSites   []types.String      `tfsdk:"enabled_sites"`
	ClassAllowList []types.String      `tfsdk:"class_allow_list"`
}

type ccIssuerModel struct {
	ID              types.String `tfsdk:"id"`
	Path            types.String `tfsdk:"path"`
	Args            types.String `tfsdk:"args"`
	TokenExpiration types.Int64  `tfsdk:"token_expiration"`
}

type ccAuthorizerModel struct {
	ID   types.String `tfsdk:"id"`
	Path types.String `tfsdk:"path"`
	Args types.String `tfsdk:"args"`
}

func ccAuthorizerAttributes() map[string]schema.Attribute {
	return map[string]schema.Attribute{
		"id": schema.StringAttribute{Required: true,
			MarkdownDescription: "Component id (`local/<id>__p_resources.json`), e.g. `mock_authorizer`, `snp_authorizer`."},
		"path": schema.StringAttribute{Required: true,
			MarkdownDescription: "Python class: `" + kit.MockAuthorizerPath + "` (NVFlare's mock, namespace `x-mock`: a fixed token that always verifies; for hosts without SEV-SNP), `" + kit.SNPAuthorizerPath + "` (real SEV-SNP), or another `CCAuthorizer`."},
		"args": schema.StringAttribute{Optional: true,
			MarkdownDescription: "The class's constructor arguments as a JSON object, e.g. `jsonencode({ snpguest_binary = \"/host/bin/snpguest\" })`. Defaults to `{}`."},
	}
}

// ccSchema is the cc attribute of flare_startup_kit and of each entry of
// flare_clients.
func ccSchema() schema.SingleNestedAttribute {
	issuer := ccAuthorizerAttributes()
	issuer["token_expiration"] = schema.Int64Attribute{Required: true, Validators: []validator.Int64{int64validator.AtLeast(1)},
		MarkdownDescription: "Token lifetime in seconds; below `check_frequency`."}
	return schema.SingleNestedAttribute{
		Optional: true,
		MarkdownDescription: "Makes a server's or client's kit a confidential-computing kit, as `nvflare provision` writes it for a " +
			"participant with a `cc_config` (NVFlare's `CCBuilder`, compute_env `onprem_cvm` or `mock`): " +
			"`local/cc_manager__p_resources.json` (NVFlare's `CCManager`, which attests this site to its peers at registration " +
			"and every `check_frequency` seconds and verifies theirs), `local/<id>__p_resources.json` for every authorizer, " +
			"the CC authorization policy (no `operate`, shell, BYOC or download rights), log files under `/applog/` (the CVM's " +
			"applog drive), `class_allow_list` extended, and `signature.json` in every folder of the kit. A `flare_cvm_kit` " +
			"made from this kit carries all of it on its encrypted root. Every CC site of a project names the same sites and " +
			"verifies every CC site's issuers: keep them in a `locals` block.",
		Attributes: map[string]schema.Attribute{
			"issuers": schema.ListNestedAttribute{Required: true, Validators: []validator.List{listvalidator.SizeAtLeast(1)},
				MarkdownDescription: "This site's `cc_issuers`: the authorizers that make its attestation tokens.",
				NestedObject:        schema.NestedAttributeObject{Attributes: issuer}},
			"verifiers": schema.ListNestedAttribute{Optional: true,
				MarkdownDescription: "The other CC sites' issuers, which this site verifies (NVFlare gives every CC kit every CC site's " +
					"issuers). This kit's own `issuers` are always included. One id must mean the same class and args everywhere.",
				NestedObject: schema.NestedAttributeObject{Attributes: ccAuthorizerAttributes()}},
			"check_frequency": schema.Int64Attribute{Optional: true, Validators: []validator.Int64{int64validator.AtLeast(1)},
				MarkdownDescription: "`cc_attestation.check_frequency`: seconds between cross-site attestation checks " +
					"(CCManager's `verify_frequency`). Unset: CCManager's default, 600."},
			"enabled_sites": schema.ListAttribute{Optional: true, ElementType: types.StringType,
				MarkdownDescription: "Names of every CC site of the project (CCManager's `cc_enabled_sites`: whose tokens it " +
					"requires). This kit's own name is always included, and the server's name is written as `server`, the name " +
					"CCManager knows it by. The server's kit must list the CC clients, or their tokens are not checked."},
			"class_allow_list": schema.ListAttribute{Optional: true, ElementType: types.StringType,
				MarkdownDescription: "Classes added to `class_allow_list` in `local/resources.json.default` (NVFlare 2.8 and later; 2.7's CCBuilder ignores it, so a 2.7 project refuses it)."},
		},
	}
}

// ccSettings turns the cc attribute into kit.CC; nil when unset.
func ccSettings(ctx context.Context, v types.Object) (*kit.CC, diag.Diagnostics) {
	if v.IsNull() || v.IsUnknown() {
		return nil, nil
	}
	var m ccModel
	diags := v.As(ctx, &m, basetypesObjectAsOptions)
	if diags.HasError() {
		return nil, diags
	}
	cc := &kit.CC{CheckFrequency: int(m.CheckFrequency.ValueInt64())}
	args := func(where string, s types.String) (map[string]any, error) {
		if s.IsNull() || s.IsUnknown() || strings.TrimSpace(s.ValueString()) == "" {
			return nil, nil
		}
		var a map[string]any
		if err := json.Unmarshal([]byte(s.ValueString()), &a); err != nil || a == nil {
			return nil, fmt.Errorf("cc: %s.args must be a JSON object (jsonencode({...})): %s", where, s.ValueString())
		}
		return a, nil
	}
	for i, is := range m.Issuers {
		a, err := args(fmt.Sprintf("issuers[%d]", i), is.Args)
		if err != nil {
			diags.AddError("Invalid CC Setting", err.Error())
			return nil, diags
		}
		cc.Issuers = append(cc.Issuers, kit.Issuer{
			Authorizer:      kit.Authorizer{ID: is.ID.ValueString(), Path: is.Path.ValueString(), Args: a},
			TokenExpiration: int(is.TokenExpiration.ValueInt64())})
	}
	for i, v := range m.Verifiers {
		a, err := args(fmt.Sprintf("verifiers[%d]", i), v.Args)
		if err != nil {
			diags.AddError("Invalid CC Setting", err.Error())
			return nil, diags
		}
		cc.Verifiers = append(cc.Verifiers, kit.Authorizer{ID: v.ID.ValueString(), Path: v.Path.ValueString(), Args: a})
	}
	for _, s := range m.EnabledSites {
		cc.EnabledSites = append(cc.EnabledSites, s.ValueString())
	}
	for _, s := range m.ClassAllowList {
		cc.ClassAllowList = append(cc.ClassAllowList, s.ValueString())
	}
	return cc, diags
}

// ccKnown reports whether every value of the cc attribute is known (plan
// time checks run only then).
func ccKnown(ctx context.Context, v types.Object) bool {
	if v.IsNull() {
		return true
	}
	tv, err := v.ToTerraformValue(ctx)
	return err == nil && tv.IsFullyKnown()
}

// validateCCConfig checks a cc attribute (at) for the kit of self at plan
// time, when all of it is known. The NVFlare line is checked at apply, when
// the project's CA is open: here any line's features are allowed.
func validateCCConfig(ctx context.Context, v types.Object, self project.Participant, at path.Path) diag.Diagnostics {
	if !ccKnown(ctx, v) {
		return nil
	}
	cc, diags := ccSettings(ctx, v)
	if cc == nil || diags.HasError() {
		return diags
	}
	anyLine := &kit.Line{CCClassAllowList: true}
	if err := cc.Validate(self, anyLine); err != nil {
		diags.AddAttributeError(at, "Invalid CC Setting", err.Error())
	}
	return diags
}
