package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/listplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/internal/project"
)

const (
	defaultFedLearnPort = 8002
)

// NewServerResource is the flare_server factory.
func NewServerResource() resource.Resource {
	return &participantResource{kind: participantKind{
		typ: project.TypeServer,
		description: "The FL server of a project: its key (a 0600 file in the CA directory) and certificate, whose " +
			"subjectAltNames are the name, `default_host` and `host_names`. Clients and admins connect to " +
			"`default_host` (or the name) on `fed_learn_port` / `admin_port`.",
		attrs: map[string]schema.Attribute{
			"fed_learn_port": portAttribute(defaultFedLearnPort, "Port clients connect to for federated learning."),
			"admin_port": schema.Int64Attribute{
				Optional: true, Computed: true,
				Validators:          []validator.Int64{int64validator.Between(1, 65535)},
				PlanModifiers:       []planmodifier.Int64{sameAsFedLearnPort{}},
				MarkdownDescription: "Port admin consoles connect to. 1–65535. Defaults to `fed_learn_port`, as NVFlare does; the server then serves admins on that one port.",
			},
			"default_host": schema.StringAttribute{
				Optional:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.RequiresReplace()},
				Validators:          []validator.String{hostNameCheck},
				MarkdownDescription: "Host name clients and admins dial. Defaults to the server's name.",
			},
			"host_names": schema.ListAttribute{
				Optional:            true,
				ElementType:         types.StringType,
				PlanModifiers:       []planmodifier.List{listplanmodifier.RequiresReplace()},
				Validators:          []validator.List{listOfHostNames},
				MarkdownDescription: "Extra DNS names for the certificate's subjectAltName.",
			},
		},
		read: func(ctx context.Context, src attrSource, p *project.Participant) diag.Diagnostics {
			var fed, admin types.Int64
			var host types.String
			var hostList types.List
			var diags diag.Diagnostics
			diags.Append(src.GetAttribute(ctx, path.Root("fed_learn_port"), &fed)...)
			diags.Append(src.GetAttribute(ctx, path.Root("admin_port"), &admin)...)
			diags.Append(src.GetAttribute(ctx, path.Root("default_host"), &host)...)
			diags.Append(src.GetAttribute(ctx, path.Root("host_names"), &hostList)...)
			p.FedLearnPort, p.AdminPort = int(fed.ValueInt64()), int(admin.ValueInt64())
			p.DefaultHost = host.ValueString()
			if !hostList.IsUnknown() && !hostList.IsNull() {
				diags.Append(hostList.ElementsAs(ctx, &p.HostNames, false)...)
			}
			return diags
		},
		write: func(ctx context.Context, st *tfsdk.State, p project.Participant) diag.Diagnostics {
			var diags diag.Diagnostics
			diags.Append(st.SetAttribute(ctx, path.Root("fed_learn_port"), int64(defaultFedLearnPort))...)
			diags.Append(st.SetAttribute(ctx, path.Root("admin_port"), int64(defaultFedLearnPort))...)
			if len(p.HostNames) > 0 {
				diags.Append(st.SetAttribute(ctx, path.Root("host_names"), p.HostNames)...)
			}
			return diags
		},
		// As NVFlare's CertBuilder: the host clients dial first, then the
		// other host names; the name itself only when it is that host.
		dnsNames: func(p project.Participant) []string {
			return append([]string{p.ServerHost()}, p.HostNames...)
		},
	}}
}

func portAttribute(def int64, desc string) schema.Int64Attribute {
	return schema.Int64Attribute{
		Optional: true, Computed: true,
		Default:             int64default.StaticInt64(def),
		Validators:          []validator.Int64{int64validator.Between(1, 65535)},
		MarkdownDescription: desc + " 1–65535.",
	}
}

// sameAsFedLearnPort plans admin_port = fed_learn_port when admin_port is
// not configured.
type sameAsFedLearnPort struct{}

func (sameAsFedLearnPort) Description(context.Context) string {
	return "defaults to fed_learn_port"
}

func (m sameAsFedLearnPort) MarkdownDescription(ctx context.Context) string {
	return m.Description(ctx)
}

func (sameAsFedLearnPort) PlanModifyInt64(ctx context.Context, req planmodifier.Int64Request, resp *planmodifier.Int64Response) {
	if !req.ConfigValue.IsNull() {
		return
	}
	var fed types.Int64
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, path.Root("fed_learn_port"), &fed)...)
	resp.PlanValue = fed
}
