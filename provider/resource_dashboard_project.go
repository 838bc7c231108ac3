package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/internal/dashclient"
)

var (
	_ resource.Resource                = (*dashboardProjectResource)(nil)
	_ resource.ResourceWithImportState = (*dashboardProjectResource)(nil)
	_ resource.ResourceWithModifyPlan  = (*dashboardProjectResource)(nil)
)

// NewDashboardProjectResource is the flare_dashboard_project factory.
func NewDashboardProjectResource() resource.Resource { return &dashboardProjectResource{} }

type dashboardProjectResource struct{ withProviderData }

type dashboardProjectModel struct {
	ID             types.String `tfsdk:"id"`
	ShortName      types.String `tfsdk:"short_name"`
	Title          types.String `tfsdk:"title"`
	Description    types.String `tfsdk:"description"`
	AppLocation    types.String `tfsdk:"app_location"`
	StartingDate   types.String `tfsdk:"starting_date"`
	EndDate        types.String `tfsdk:"end_date"`
	Server1        types.String `tfsdk:"server1"`
	Public         types.Bool   `tfsdk:"public"`
	NVFlareVersion types.String `tfsdk:"nvflare_version"`
	FedLearnPort   types.Int64  `tfsdk:"fed_learn_port"`
	AdminPort      types.Int64  `tfsdk:"admin_port"`
	Frozen         types.Bool   `tfsdk:"frozen"`
}

func (r *dashboardProjectResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_dashboard_project"
}

func (r *dashboardProjectResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	str := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString(""), MarkdownDescription: desc}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "The project of an NVFlare Dashboard (NVFlare's own, or `flare-dashboard`), set through its API as the " +
			"project admin of the provider's `dashboard` block. A Dashboard has exactly one project: creating this resource takes it over. " +
			"`frozen = true` freezes it, which makes the Dashboard's root CA, makes the fields read-only and opens sign-up; a frozen " +
			"project cannot be unfrozen or changed, and the plan says so. Destroying the resource leaves the project on the Dashboard.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, MarkdownDescription: "Always `project`.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}},
			"short_name": schema.StringAttribute{Required: true, MarkdownDescription: "Project name in the kits (up to 16 characters, as NVFlare cuts it).",
				Validators: []validator.String{stringvalidator.LengthBetween(1, 16)}},
			"server1": schema.StringAttribute{Required: true, MarkdownDescription: "Host name of the FL server; kits dial it.",
				Validators: []validator.String{hostNameCheck}},
			"title":         str("Title shown on the Dashboard."),
			"description":   str("Description."),
			"app_location":  str("Application location."),
			"starting_date": str("Start date, as the Dashboard stores it (free text)."),
			"end_date":      str("End date."),
			"public":        schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(false), MarkdownDescription: "Public project."},
			"nvflare_version": schema.StringAttribute{Optional: true, MarkdownDescription: "NVFlare line of `flare-dashboard`'s kits (`project_props.nvflare_version`: " +
				"`2.7`, `2.8`, `2.9`; unset: the newest). NVFlare's own Dashboard stores it and always builds its own line's kits.",
				Validators: []validator.String{stringvalidator.OneOf("2.7", "2.8", "2.9")}},
			"fed_learn_port": schema.Int64Attribute{Optional: true, MarkdownDescription: "Server's federated-learning port (`server_props.fed_learn_port`; the Dashboard's default is 8002).",
				Validators: []validator.Int64{int64validator.Between(1, 65535)}},
			"admin_port": schema.Int64Attribute{Optional: true, MarkdownDescription: "Server's admin port (`server_props.admin_port`; default: `fed_learn_port`).",
				Validators: []validator.Int64{int64validator.Between(1, 65535)}},
			"frozen": schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(false),
				MarkdownDescription: "Freeze the project. Cannot be undone."},
		},
	}
}

// patchFields is the PATCH /project body for m (frozen last: the
// Dashboard freezes with the fields of the same patch).
func (m *dashboardProjectModel) patchFields(freeze bool) map[string]any {
	f := map[string]any{
		"short_name": m.ShortName.ValueString(), "server1": m.Server1.ValueString(),
		"title": m.Title.ValueString(), "description": m.Description.ValueString(),
		"app_location": m.AppLocation.ValueString(), "starting_date": m.StartingDate.ValueString(),
		"end_date": m.EndDate.ValueString(), "public": m.Public.ValueBool(),
	}
	if v := m.NVFlareVersion.ValueString(); v != "" {
		f["project_props"] = map[string]any{"nvflare_version": v}
	}
	sp := map[string]any{}
	if !m.FedLearnPort.IsNull() {
		sp["fed_learn_port"] = m.FedLearnPort.ValueInt64()
	}
	if !m.AdminPort.IsNull() {
		sp["admin_port"] = m.AdminPort.ValueInt64()
	}
	if len(sp) > 0 {
		f["server_props"] = sp
	}
	if freeze {
		f["frozen"] = true
	}
	return f
}

func (m *dashboardProjectModel) fromProject(p *dashclient.Project) {
	m.ID = types.StringValue("project")
	m.ShortName, m.Server1 = types.StringValue(p.ShortName), types.StringValue(p.Server1)
	m.Title, m.Description = types.StringValue(p.Title), types.StringValue(p.Description)
	m.AppLocation = types.StringValue(p.AppLocation)
	m.StartingDate, m.EndDate = types.StringValue(p.StartingDate), types.StringValue(p.EndDate)
	m.Public, m.Frozen = types.BoolValue(p.Public), types.BoolValue(p.Frozen)
	if v, ok := p.ProjectProps["nvflare_version"].(string); ok && v != "" {
		m.NVFlareVersion = types.StringValue(v)
	} else if !m.NVFlareVersion.IsNull() {
		m.NVFlareVersion = types.StringNull()
	}
	port := func(key string, cur types.Int64) types.Int64 {
		if v, ok := p.ServerProps[key].(float64); ok && v != 0 {
			return types.Int64Value(int64(v))
		}
		return types.Int64Null()
	}
	m.FedLearnPort = port("fed_learn_port", m.FedLearnPort)
	m.AdminPort = port("admin_port", m.AdminPort)
}

// ModifyPlan refuses, at plan time, to change or unfreeze a frozen project.
func (r *dashboardProjectResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() {
		return
	}
	var state, plan dashboardProjectModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() || !state.Frozen.ValueBool() {
		return
	}
	plan.ID = state.ID
	if plan != state {
		resp.Diagnostics.AddError("Dashboard Project Is Frozen",
			"The Dashboard's project is frozen: its fields are read-only and it cannot be unfrozen. "+
				"Make the configuration match the project (terraform plan shows the differences), or set up a new Dashboard.")
	}
}

func (r *dashboardProjectResource) apply(ctx context.Context, m *dashboardProjectModel) error {
	c, err := r.data.dashboardClient()
	if err != nil {
		return err
	}
	cur, err := c.GetProject(ctx)
	if err != nil {
		return err
	}
	if cur.Frozen {
		var have dashboardProjectModel
		have.NVFlareVersion, have.FedLearnPort, have.AdminPort = m.NVFlareVersion, m.FedLearnPort, m.AdminPort
		have.fromProject(cur)
		want := *m
		want.ID = have.ID
		want.Frozen = types.BoolValue(true)
		if have != want {
			return fmt.Errorf("the Dashboard's project is frozen and differs from the configuration: it can no longer be changed (import it and make the configuration match)")
		}
	} else {
		// Fields first, then the freeze, so a refused freeze leaves the
		// fields set and says why.
		if _, err := c.PatchProject(ctx, m.patchFields(false)); err != nil {
			return err
		}
		if m.Frozen.ValueBool() {
			if _, err := c.PatchProject(ctx, map[string]any{"frozen": true}); err != nil {
				return fmt.Errorf("freezing: %w", err)
			}
		}
	}
	p, err := c.GetProject(ctx)
	if err != nil {
		return err
	}
	m.fromProject(p)
	return nil
}

func (r *dashboardProjectResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m dashboardProjectModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if err := r.apply(ctx, &m); err != nil {
		resp.Diagnostics.AddError("Dashboard Project", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *dashboardProjectResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var m dashboardProjectModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, err := r.data.dashboardClient()
	if err != nil {
		resp.Diagnostics.AddError("Dashboard Project", err.Error())
		return
	}
	p, err := c.GetProject(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Dashboard Project", err.Error())
		return
	}
	m.fromProject(p)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *dashboardProjectResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var m dashboardProjectModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if err := r.apply(ctx, &m); err != nil {
		resp.Diagnostics.AddError("Dashboard Project", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// Delete forgets the project: a Dashboard cannot be without one.
func (r *dashboardProjectResource) Delete(_ context.Context, _ resource.DeleteRequest, resp *resource.DeleteResponse) {
	resp.Diagnostics.AddWarning("Dashboard Project Left In Place",
		"A Dashboard always has its one project: Terraform stops managing it and leaves it as it is.")
}

// ImportState takes "project".
func (r *dashboardProjectResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if req.ID != "project" {
		resp.Diagnostics.AddError("Invalid Import ID", `import flare_dashboard_project with the id "project"`)
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), "project")...)
}
