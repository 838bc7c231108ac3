package provider

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"

	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/project"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"
)

type x509Cert = x509.Certificate

var basetypesObjectAsOptions = basetypes.ObjectAsOptions{}

// now is the clock every certificate decision uses; tests move it to check
// renewal windows without waiting.
var now = time.Now

// stringCheck adapts a plain Go check to a plan-time attribute validator, so
// the rules live once in internal/project and Terraform reports them
// against the attribute at plan time.
type stringCheck struct {
	summary string
	desc    string
	check   func(string) error
}

var _ validator.String = stringCheck{}

func (v stringCheck) Description(context.Context) string         { return v.desc }
func (v stringCheck) MarkdownDescription(context.Context) string { return v.desc }

func (v stringCheck) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if err := v.check(req.ConfigValue.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, v.summary, fmt.Sprintf("%s: %v", req.Path, err))
	}
}

var hostNameCheck = stringCheck{summary: "Invalid Host Name", desc: "a DNS name",
	check: project.ValidateHostName}

// listOfHostNames applies hostNameCheck to every element.
var listOfHostNames = listvalidator.ValueStringsAre(hostNameCheck)

// withProviderData gives a resource the provider's configuration.
type withProviderData struct {
	data *providerData
}

func (w *withProviderData) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	if req.ProviderData == nil {
		return // validation runs before the provider is configured
	}
	d, ok := req.ProviderData.(*providerData)
	if !ok {
		resp.Diagnostics.AddError("Unexpected Resource Configure Type",
			fmt.Sprintf("Expected *providerData, got: %T. Please report this issue to the provider developers.", req.ProviderData))
		return
	}
	w.data = d
}

// ca loads the CA a project id names.
func (w *withProviderData) ca(ctx context.Context, projectID string) (pki.CA, caRef, error) {
	ref, err := parseProjectID(projectID)
	if err != nil {
		return pki.CA{}, ref, err
	}
	d := w.data
	if d == nil {
		d = &providerData{}
	}
	ca, err := d.loadCA(ctx, ref)
	return ca, ref, err
}

// projectIDModifiers make a project_id change a replacement only when it
// names another CA: a new NVFlare line on the same CA keeps every key and
// certificate and rewrites kits in place.
func projectIDModifiers() []planmodifier.String {
	return []planmodifier.String{stringplanmodifier.RequiresReplaceIf(
		func(_ context.Context, req planmodifier.StringRequest, resp *stringplanmodifier.RequiresReplaceIfFuncResponse) {
			resp.RequiresReplace = req.PlanValue.IsUnknown() || !sameCA(req.StateValue.ValueString(), req.PlanValue.ValueString())
		},
		"Changing the project's CA replaces this resource; a new NVFlare line alone does not.",
		"Changing the project's CA replaces this resource; a new NVFlare line alone does not.")}
}

// descriptorCheck validates a participant descriptor attribute.
var descriptorCheck = stringCheck{summary: "Invalid Participant Descriptor", desc: "a participant's descriptor (flare_<type>.<name>.descriptor)",
	check: func(s string) error { _, err := parseDescriptor(s); return err }}

// projectIDCheck validates a project_id attribute.
var projectIDCheck = stringCheck{summary: "Invalid Project ID", desc: "a flare_project id",
	check: func(s string) error { _, err := parseProjectID(s); return err }}
