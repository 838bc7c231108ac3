package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

var _ datasource.DataSource = (*dashboardRegistrationsDataSource)(nil)

// NewDashboardRegistrationsDataSource is the flare_dashboard_registrations factory.
func NewDashboardRegistrationsDataSource() datasource.DataSource {
	return &dashboardRegistrationsDataSource{}
}

type dashboardRegistrationsDataSource struct{ withDashboardData }

type dashboardRegistrationsModel struct {
	ApprovedOnly types.Bool   `tfsdk:"approved_only"`
	Organization types.String `tfsdk:"organization"`
	Users        types.List   `tfsdk:"users"`
	Clients      types.List   `tfsdk:"clients"`
	Frozen       types.Bool   `tfsdk:"frozen"`
	ShortName    types.String `tfsdk:"short_name"`
}

var dashboardUserType = types.ObjectType{AttrTypes: map[string]attr.Type{
	"id": types.Int64Type, "email": types.StringType, "name": types.StringType, "organization": types.StringType,
	"role": types.StringType, "approval_state": types.Int64Type, "approved": types.BoolType, "download_count": types.Int64Type,
}}

var dashboardClientType = types.ObjectType{AttrTypes: map[string]attr.Type{
	"id": types.Int64Type, "name": types.StringType, "organization": types.StringType, "description": types.StringType,
	"approval_state": types.Int64Type, "approved": types.BoolType, "download_count": types.Int64Type,
	"num_gpus": types.Int64Type, "mem_per_gpu_in_gib": types.Float64Type,
}}

func (d *dashboardRegistrationsDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_dashboard_registrations"
}

func (d *dashboardRegistrationsDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "The users and sites registered on an NVFlare Dashboard (NVFlare's own, or `flare-dashboard`), read " +
			"through its API as the project admin of the provider's `dashboard` block, with their organization, role, capacity and " +
			"approval state, so a pipeline can feed approved sites into `flare_clients` or `flare_cvm_kit`. Sorted by id.",
		Attributes: map[string]schema.Attribute{
			"approved_only": schema.BoolAttribute{Optional: true, MarkdownDescription: "List only approved registrations (approval_state ≥ 100)."},
			"organization":  schema.StringAttribute{Optional: true, MarkdownDescription: "List only this organization's registrations."},
			"frozen":        schema.BoolAttribute{Computed: true, MarkdownDescription: "Whether the project is frozen (kits can be downloaded)."},
			"short_name":    schema.StringAttribute{Computed: true, MarkdownDescription: "The project's short name."},
			"users": schema.ListNestedAttribute{Computed: true, MarkdownDescription: "Registered users.",
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"id":             schema.Int64Attribute{Computed: true, MarkdownDescription: "Id on the Dashboard."},
					"email":          schema.StringAttribute{Computed: true, MarkdownDescription: "Email (the admin kit's name)."},
					"name":           schema.StringAttribute{Computed: true, MarkdownDescription: "Name."},
					"organization":   schema.StringAttribute{Computed: true, MarkdownDescription: "Organization."},
					"role":           schema.StringAttribute{Computed: true, MarkdownDescription: "`project_admin`, `org_admin`, `lead` or `member`."},
					"approval_state": schema.Int64Attribute{Computed: true, MarkdownDescription: "0 pending, 100 approved, 200 the seed project admin, negative refused."},
					"approved":       schema.BoolAttribute{Computed: true, MarkdownDescription: "approval_state ≥ 100."},
					"download_count": schema.Int64Attribute{Computed: true, MarkdownDescription: "Kit downloads so far."},
				}}},
			"clients": schema.ListNestedAttribute{Computed: true, MarkdownDescription: "Registered sites.",
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"id":                 schema.Int64Attribute{Computed: true, MarkdownDescription: "Id on the Dashboard."},
					"name":               schema.StringAttribute{Computed: true, MarkdownDescription: "Site name."},
					"organization":       schema.StringAttribute{Computed: true, MarkdownDescription: "Organization."},
					"description":        schema.StringAttribute{Computed: true, MarkdownDescription: "Description."},
					"approval_state":     schema.Int64Attribute{Computed: true, MarkdownDescription: "0 pending, 100 approved, negative refused."},
					"approved":           schema.BoolAttribute{Computed: true, MarkdownDescription: "approval_state ≥ 100."},
					"download_count":     schema.Int64Attribute{Computed: true, MarkdownDescription: "Kit downloads so far."},
					"num_gpus":           schema.Int64Attribute{Computed: true, MarkdownDescription: "Capacity: GPUs (0 when not given)."},
					"mem_per_gpu_in_gib": schema.Float64Attribute{Computed: true, MarkdownDescription: "Capacity: memory per GPU in GiB (0 when not given)."},
				}}},
		},
	}
}

func (d *dashboardRegistrationsDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m dashboardRegistrationsModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, err := d.data.dashboardClient()
	if err != nil {
		resp.Diagnostics.AddError("Dashboard Registrations", err.Error())
		return
	}
	p, err := c.GetProject(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Dashboard Registrations", err.Error())
		return
	}
	users, err := c.Users(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Dashboard Registrations", err.Error())
		return
	}
	clients, err := c.Clients(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Dashboard Registrations", err.Error())
		return
	}
	keep := func(org string, state int64) bool {
		if m.ApprovedOnly.ValueBool() && state < 100 {
			return false
		}
		return m.Organization.IsNull() || m.Organization.ValueString() == org
	}
	uv := []attr.Value{}
	for _, u := range users {
		if !keep(u.Organization, u.ApprovalState) {
			continue
		}
		o, diags := types.ObjectValue(dashboardUserType.AttrTypes, map[string]attr.Value{
			"id": types.Int64Value(u.ID), "email": types.StringValue(u.Email), "name": types.StringValue(u.Name),
			"organization": types.StringValue(u.Organization), "role": types.StringValue(u.Role),
			"approval_state": types.Int64Value(u.ApprovalState), "approved": types.BoolValue(u.ApprovalState >= 100),
			"download_count": types.Int64Value(u.DownloadCount),
		})
		resp.Diagnostics.Append(diags...)
		uv = append(uv, o)
	}
	cv := []attr.Value{}
	for _, cl := range clients {
		if !keep(cl.Organization, cl.ApprovalState) {
			continue
		}
		var gpus int64
		var mem float64
		if cl.Capacity != nil {
			gpus, mem = int64(cl.Capacity.NumOfGPUs), cl.Capacity.MemPerGPUInGB
		}
		o, diags := types.ObjectValue(dashboardClientType.AttrTypes, map[string]attr.Value{
			"id": types.Int64Value(cl.ID), "name": types.StringValue(cl.Name), "organization": types.StringValue(cl.Organization),
			"description": types.StringValue(cl.Description), "approval_state": types.Int64Value(cl.ApprovalState),
			"approved": types.BoolValue(cl.ApprovalState >= 100), "download_count": types.Int64Value(cl.DownloadCount),
			"num_gpus": types.Int64Value(gpus), "mem_per_gpu_in_gib": types.Float64Value(mem),
		})
		resp.Diagnostics.Append(diags...)
		cv = append(cv, o)
	}
	ul, d1 := types.ListValue(dashboardUserType, uv)
	cl, d2 := types.ListValue(dashboardClientType, cv)
	resp.Diagnostics.Append(d1...)
	resp.Diagnostics.Append(d2...)
	m.Users, m.Clients = ul, cl
	m.Frozen, m.ShortName = types.BoolValue(p.Frozen), types.StringValue(p.ShortName)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
