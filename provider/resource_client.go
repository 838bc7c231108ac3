package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework-validators/float64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/float64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/internal/project"
)

// NewClientResource is the flare_client factory.
func NewClientResource() resource.Resource {
	return &participantResource{kind: participantKind{
		typ: project.TypeClient,
		description: "An FL client (site) of a project: its key (a 0600 file in the CA directory) and certificate. " +
			"`num_gpus` and `mem_per_gpu_in_gib` are the site's capacity as the FLARE Dashboard records it; they go " +
			"into the kit's `local/resources.json.default` and change in place.",
		attrs: map[string]schema.Attribute{
			"num_gpus": schema.Int64Attribute{
				Optional: true, Computed: true, Default: int64default.StaticInt64(0),
				Validators:          []validator.Int64{int64validator.AtLeast(0)},
				MarkdownDescription: "GPUs the site offers to jobs. Defaults to 0.",
			},
			"mem_per_gpu_in_gib": schema.Float64Attribute{
				Optional: true, Computed: true, Default: float64default.StaticFloat64(0),
				Validators:          []validator.Float64{float64validator.AtLeast(0)},
				MarkdownDescription: "Memory per GPU in GiB (the Dashboard's `mem_per_gpu_in_GiB`). Defaults to 0.",
			},
			"connect_to": schema.StringAttribute{
				Optional:            true,
				Validators:          []validator.String{hostNameCheck},
				MarkdownDescription: "Name of a `flare_relay` of the same project this client connects through instead of the server.",
			},
		},
		read: func(ctx context.Context, src attrSource, p *project.Participant) diag.Diagnostics {
			var gpus types.Int64
			var mem types.Float64
			var relay types.String
			var diags diag.Diagnostics
			diags.Append(src.GetAttribute(ctx, path.Root("num_gpus"), &gpus)...)
			diags.Append(src.GetAttribute(ctx, path.Root("mem_per_gpu_in_gib"), &mem)...)
			diags.Append(src.GetAttribute(ctx, path.Root("connect_to"), &relay)...)
			p.NumGPUs, p.MemPerGPUInGiB, p.ConnectTo = int(gpus.ValueInt64()), mem.ValueFloat64(), relay.ValueString()
			return diags
		},
		write: func(ctx context.Context, st *tfsdk.State, _ project.Participant) diag.Diagnostics {
			var diags diag.Diagnostics
			diags.Append(st.SetAttribute(ctx, path.Root("num_gpus"), int64(0))...)
			diags.Append(st.SetAttribute(ctx, path.Root("mem_per_gpu_in_gib"), float64(0))...)
			return diags
		},
		dnsNames: func(p project.Participant) []string { return []string{p.Name} },
	}}
}
