package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/internal/project"
)

// NewAdminResource is the flare_admin factory.
func NewAdminResource() resource.Resource {
	return &participantResource{kind: participantKind{
		typ: project.TypeAdmin,
		description: "An admin user of a project, named by email. The role is written into the certificate, where " +
			"NVFlare's authorization reads it; changing it issues a new certificate.",
		attrs: map[string]schema.Attribute{
			"role": schema.StringAttribute{
				Required:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.RequiresReplace()},
				Validators:          []validator.String{stringvalidator.OneOf(project.AdminRoles...)},
				MarkdownDescription: "One of `project_admin`, `org_admin`, `lead`, `member`.",
			},
		},
		read: func(ctx context.Context, src attrSource, p *project.Participant) diag.Diagnostics {
			var role types.String
			diags := src.GetAttribute(ctx, path.Root("role"), &role)
			p.Role = role.ValueString()
			return diags
		},
		write: func(ctx context.Context, st *tfsdk.State, p project.Participant) diag.Diagnostics {
			return st.SetAttribute(ctx, path.Root("role"), p.Role)
		},
		dnsNames: func(project.Participant) []string { return nil }, // an email is no DNS name
	}}
}
