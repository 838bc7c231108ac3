package provider

import (
	"context"

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

const defaultRelayPort = 8102

// NewRelayResource is the flare_relay factory.
func NewRelayResource() resource.Resource {
	return &participantResource{kind: participantKind{
		typ: project.TypeRelay,
		description: "A relay of a project: clients with `connect_to` set to its name reach the server through it. " +
			"Its certificate names `default_host` (or the name).",
		attrs: map[string]schema.Attribute{
			"port": portAttribute(defaultRelayPort, "Port the relay listens on."),
			"default_host": schema.StringAttribute{
				Optional:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.RequiresReplace()},
				Validators:          []validator.String{hostNameCheck},
				MarkdownDescription: "Host name clients dial to reach the relay. Defaults to the relay's name.",
			},
		},
		read: func(ctx context.Context, src attrSource, p *project.Participant) diag.Diagnostics {
			var port types.Int64
			var host types.String
			var diags diag.Diagnostics
			diags.Append(src.GetAttribute(ctx, path.Root("port"), &port)...)
			diags.Append(src.GetAttribute(ctx, path.Root("default_host"), &host)...)
			p.Port, p.DefaultHost = int(port.ValueInt64()), host.ValueString()
			return diags
		},
		write: func(ctx context.Context, st *tfsdk.State, _ project.Participant) diag.Diagnostics {
			return st.SetAttribute(ctx, path.Root("port"), int64(defaultRelayPort))
		},
		// One certificate serves as the relay's client.crt (NVFlare: its
		// name) and server.crt (NVFlare: its listening host), so it names both.
		dnsNames: func(p project.Participant) []string { return []string{p.Name, p.DefaultHost} },
	}}
}
