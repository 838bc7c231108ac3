package provider

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/objectdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/objectplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/internal/localca"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/project"
)

var (
	_ resource.Resource                = (*projectResource)(nil)
	_ resource.ResourceWithImportState = (*projectResource)(nil)
)

// NewProjectResource is the flare_project factory.
func NewProjectResource() resource.Resource { return &projectResource{} }

type projectResource struct{}

type projectModel struct {
	ID                types.String `tfsdk:"id"`
	Name              types.String `tfsdk:"name"`
	Description       types.String `tfsdk:"description"`
	ValidityDays      types.Int64  `tfsdk:"validity_days"`
	CA                types.Object `tfsdk:"ca"`
	RootCAPEM         types.String `tfsdk:"root_ca_pem"`
	RootCAFingerprint types.String `tfsdk:"root_ca_fingerprint"`
	RootCANotAfter    types.String `tfsdk:"root_ca_not_after"`
}

type caModel struct {
	Backend types.String `tfsdk:"backend"`
	Dir     types.String `tfsdk:"dir"`
}

var caAttrTypes = map[string]attr.Type{"backend": types.StringType, "dir": types.StringType}

const (
	caBackendLocal    = "local"
	defaultCADir      = ".flare-ca"
	defaultRootCADays = 3650
)

func (r *projectResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_project"
}

func (r *projectResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "An NVIDIA FLARE project and its root CA. The root certificate signs every participant " +
			"certificate and every kit's `signature.json`. With the default `local` CA backend the root key is " +
			"written with mode 0600 to `ca.dir`; it never enters Terraform state.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "Reference to the project's CA (`local:<dir>`). Pass it as `project_id` to participants.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"name": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: "Project name; the root certificate's common name. Changing it makes a new CA.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.RequiresReplace()},
				Validators:          []validator.String{stringCheck{summary: "Invalid Project Name", desc: "a name NVFlare accepts", check: projectNameFromConfig}},
			},
			"description": schema.StringAttribute{
				Optional:            true,
				MarkdownDescription: "Free text describing the project.",
			},
			"validity_days": schema.Int64Attribute{
				Optional:            true,
				Computed:            true,
				Default:             int64default.StaticInt64(defaultRootCADays),
				MarkdownDescription: fmt.Sprintf("Days the root certificate is valid. Defaults to %d. Changing it makes a new CA.", defaultRootCADays),
				PlanModifiers:       []planmodifier.Int64{int64planmodifier.RequiresReplace()},
				Validators:          []validator.Int64{int64validator.Between(1, 36500)},
			},
			"ca": schema.SingleNestedAttribute{
				Optional:            true,
				Computed:            true,
				MarkdownDescription: "Where the root CA key lives. Defaults to the embedded local CA in `.flare-ca`.",
				Default: objectdefault.StaticValue(types.ObjectValueMust(caAttrTypes, map[string]attr.Value{
					"backend": types.StringValue(caBackendLocal),
					"dir":     types.StringValue(defaultCADir),
				})),
				PlanModifiers: []planmodifier.Object{objectplanmodifier.RequiresReplace()},
				Attributes: map[string]schema.Attribute{
					"backend": schema.StringAttribute{
						Optional:            true,
						Computed:            true,
						Default:             stringdefault.StaticString(caBackendLocal),
						MarkdownDescription: "CA backend. `local`: the key is a 0600 file in `dir`.",
						Validators:          []validator.String{stringvalidator.OneOf(caBackendLocal)},
					},
					"dir": schema.StringAttribute{
						Optional:            true,
						Computed:            true,
						Default:             stringdefault.StaticString(defaultCADir),
						MarkdownDescription: "Directory for the root key and the participants' private keys, relative to the working directory. Defaults to `.flare-ca`. Keep it out of version control.",
						Validators:          []validator.String{stringvalidator.LengthAtLeast(1)},
					},
				},
			},
			"root_ca_pem": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "Root certificate in PEM (`rootCA.pem` of every kit).",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"root_ca_fingerprint": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "Hex SHA-256 of the root certificate's DER.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"root_ca_not_after": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "RFC 3339 time the root certificate expires.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
		},
	}
}

func (m *projectModel) caDir(ctx context.Context) (string, error) {
	var ca caModel
	if diags := m.CA.As(ctx, &ca, basetypesObjectAsOptions); diags.HasError() {
		return "", fmt.Errorf("reading ca: %v", diags)
	}
	return ca.Dir.ValueString(), nil
}

func (m *projectModel) setCert(cert *x509Cert) {
	m.RootCAPEM = types.StringValue(string(pki.CertPEM(cert)))
	m.RootCAFingerprint = types.StringValue(pki.CertFingerprint(cert))
	m.RootCANotAfter = types.StringValue(cert.NotAfter.UTC().Format(time.RFC3339))
}

func (r *projectResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan projectModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	dir, err := plan.caDir(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Invalid CA Configuration", err.Error())
		return
	}
	store := localca.Store{Dir: dir}
	ca, err := store.Create(plan.Name.ValueString(), pki.ValidityFor(now(), int(plan.ValidityDays.ValueInt64())))
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("ca").AtName("dir"), "Cannot Create Root CA", err.Error())
		return
	}
	plan.ID = types.StringValue(localProjectID(dir))
	plan.setCert(ca.Cert)
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func (r *projectResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state projectModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	store, err := storeFromProjectID(state.ID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Invalid Project ID", err.Error())
		return
	}
	ca, err := store.Load()
	if errors.Is(err, localca.ErrNoCA) {
		resp.Diagnostics.AddWarning("Root CA Missing",
			fmt.Sprintf("%v. The project will be planned for creation with a new CA; every participant certificate and kit signed by the old one will be replaced.", err))
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Cannot Read Root CA", err.Error())
		return
	}
	state.setCert(ca.Cert)
	if state.Name.IsNull() { // import
		state.Name = types.StringValue(ca.Cert.Subject.CommonName)
		state.ValidityDays = types.Int64Value(validityDaysOf(ca.Cert))
		state.CA = types.ObjectValueMust(caAttrTypes, map[string]attr.Value{
			"backend": types.StringValue(caBackendLocal),
			"dir":     types.StringValue(store.Dir),
		})
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, state)...)
}

// Update only ever changes description: everything else requires replacement.
func (r *projectResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan projectModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func (r *projectResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state projectModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	store, err := storeFromProjectID(state.ID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Invalid Project ID", err.Error())
		return
	}
	if err := store.Destroy(); err != nil {
		resp.Diagnostics.AddError("Cannot Remove Root CA", err.Error())
	}
}

// ImportState takes the CA directory (or a project id "local:<dir>").
func (r *projectResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	id := req.ID
	if !strings.HasPrefix(id, localRefPrefix) {
		id = localProjectID(id)
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), id)...)
}

// validityDaysOf recovers validity_days from a certificate made by pki.ValidityFor.
func validityDaysOf(cert *x509Cert) int64 {
	d := cert.NotAfter.Sub(cert.NotBefore.Add(pki.Backdate)).Hours() / 24
	return int64(math.Round(d))
}

func projectNameFromConfig(name string) error {
	return project.ValidateProjectName(name)
}
