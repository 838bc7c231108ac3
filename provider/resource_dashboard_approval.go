package provider

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/internal/dashclient"
)

var (
	_ resource.Resource                = (*dashboardApprovalResource)(nil)
	_ resource.ResourceWithImportState = (*dashboardApprovalResource)(nil)
)

// NewDashboardApprovalResource is the flare_dashboard_approval factory.
func NewDashboardApprovalResource() resource.Resource { return &dashboardApprovalResource{} }

type dashboardApprovalResource struct{ withProviderData }

type dashboardApprovalModel struct {
	ID            types.String `tfsdk:"id"`
	Kind          types.String `tfsdk:"kind"`
	Name          types.String `tfsdk:"name"`
	ApprovalState types.Int64  `tfsdk:"approval_state"`
	DashboardID   types.Int64  `tfsdk:"dashboard_id"`
	Organization  types.String `tfsdk:"organization"`
}

func (r *dashboardApprovalResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_dashboard_approval"
}

func (r *dashboardApprovalResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		MarkdownDescription: "Approves a registration on an NVFlare Dashboard (NVFlare's own, or `flare-dashboard`): a site " +
			"(`kind = \"client\"`, by name) or a user (`kind = \"user\"`, by email), as the project admin of the provider's " +
			"`dashboard` block. The registration must exist (the site or user registered it on the Dashboard); " +
			"`flare_dashboard_registrations` lists them. A state changed on the Dashboard shows in the plan. " +
			"Destroying the resource sets the registration back to pending (0).",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, MarkdownDescription: "`<kind>:<name>`.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}},
			"kind": schema.StringAttribute{Required: true, PlanModifiers: replace,
				MarkdownDescription: "`client` (a site) or `user`.", Validators: []validator.String{stringvalidator.OneOf("client", "user")}},
			"name": schema.StringAttribute{Required: true, PlanModifiers: replace,
				MarkdownDescription: "The site's name, or the user's email."},
			"approval_state": schema.Int64Attribute{Optional: true, Computed: true, Default: int64default.StaticInt64(100),
				MarkdownDescription: "The approval state to hold: `100` approved (the default), `0` pending, `-1` refused " +
					"(`flare-dashboard` then refuses the user's logins).",
				Validators: []validator.Int64{int64validator.OneOf(-1, 0, 100)}},
			"dashboard_id": schema.Int64Attribute{Computed: true, MarkdownDescription: "The registration's id on the Dashboard."},
			"organization": schema.StringAttribute{Computed: true, MarkdownDescription: "The registration's organization."},
		},
	}
}

// find returns the registration's id, organization and approval state.
func (r *dashboardApprovalResource) find(ctx context.Context, c *dashclient.Client, kind, name string) (int64, string, int64, error) {
	if kind == "user" {
		u, err := c.UserByEmail(ctx, name)
		if err != nil {
			return 0, "", 0, err
		}
		return u.ID, u.Organization, u.ApprovalState, nil
	}
	cl, err := c.ClientByName(ctx, name)
	if err != nil {
		return 0, "", 0, err
	}
	return cl.ID, cl.Organization, cl.ApprovalState, nil
}

func (r *dashboardApprovalResource) set(ctx context.Context, m *dashboardApprovalModel, state int64) error {
	c, err := r.data.dashboardClient()
	if err != nil {
		return err
	}
	kind, name := m.Kind.ValueString(), m.Name.ValueString()
	id, org, cur, err := r.find(ctx, c, kind, name)
	if err != nil {
		return err
	}
	if cur >= 200 {
		return fmt.Errorf("%s %s is the Dashboard's seed project admin (approval_state %d): its state is not managed", kind, name, cur)
	}
	if cur != state {
		if kind == "user" {
			_, err = c.SetUserApproval(ctx, id, state)
		} else {
			_, err = c.SetClientApproval(ctx, id, state)
		}
		if err != nil {
			return err
		}
		if _, _, cur, err = r.find(ctx, c, kind, name); err != nil {
			return err
		}
		if cur != state {
			return fmt.Errorf("%s %s: the Dashboard kept approval_state %d, not %d", kind, name, cur, state)
		}
	}
	m.ID = types.StringValue(kind + ":" + name)
	m.DashboardID, m.Organization, m.ApprovalState = types.Int64Value(id), types.StringValue(org), types.Int64Value(cur)
	return nil
}

func (r *dashboardApprovalResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m dashboardApprovalModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if err := r.set(ctx, &m, m.ApprovalState.ValueInt64()); err != nil {
		resp.Diagnostics.AddError("Dashboard Approval", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *dashboardApprovalResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var m dashboardApprovalModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, err := r.data.dashboardClient()
	if err != nil {
		resp.Diagnostics.AddError("Dashboard Approval", err.Error())
		return
	}
	id, org, state, err := r.find(ctx, c, m.Kind.ValueString(), m.Name.ValueString())
	if errors.Is(err, dashclient.ErrNotFound) {
		resp.State.RemoveResource(ctx) // the registration was deleted
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Dashboard Approval", err.Error())
		return
	}
	m.ID = types.StringValue(m.Kind.ValueString() + ":" + m.Name.ValueString())
	m.DashboardID, m.Organization, m.ApprovalState = types.Int64Value(id), types.StringValue(org), types.Int64Value(state)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

func (r *dashboardApprovalResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var m dashboardApprovalModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if err := r.set(ctx, &m, m.ApprovalState.ValueInt64()); err != nil {
		resp.Diagnostics.AddError("Dashboard Approval", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// Delete sets the registration back to pending.
func (r *dashboardApprovalResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var m dashboardApprovalModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	err := r.set(ctx, &m, 0)
	if err != nil && !errors.Is(err, dashclient.ErrNotFound) {
		resp.Diagnostics.AddError("Dashboard Approval", err.Error())
	}
}

// ImportState takes "client:<name>" or "user:<email>".
func (r *dashboardApprovalResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	kind, name, ok := strings.Cut(req.ID, ":")
	if !ok || (kind != "client" && kind != "user") || name == "" {
		resp.Diagnostics.AddError("Invalid Import ID", `import flare_dashboard_approval with "client:<site name>" or "user:<email>"`)
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), req.ID)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("kind"), kind)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("name"), name)...)
}
