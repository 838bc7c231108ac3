package provider

import (
	"context"
	"os"

	"github.com/hashicorp/terraform-plugin-framework-validators/datasourcevalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/internal/project"
)

var (
	_ datasource.DataSource                     = (*projectConfigDataSource)(nil)
	_ datasource.DataSourceWithConfigValidators = (*projectConfigDataSource)(nil)
)

// NewProjectConfigDataSource is the flare_project_config factory.
func NewProjectConfigDataSource() datasource.DataSource { return &projectConfigDataSource{} }

type projectConfigDataSource struct{}

type projectConfigModel struct {
	Path         types.String `tfsdk:"path"`
	Content      types.String `tfsdk:"content"`
	APIVersion   types.Int64  `tfsdk:"api_version"`
	Name         types.String `tfsdk:"name"`
	Description  types.String `tfsdk:"description"`
	Participants types.List   `tfsdk:"participants"`
	Servers      types.Map    `tfsdk:"servers"`
	Clients      types.Map    `tfsdk:"clients"`
	Admins       types.Map    `tfsdk:"admins"`
	Relays       types.Map    `tfsdk:"relays"`
}

var participantObjectType = types.ObjectType{AttrTypes: map[string]attr.Type{
	"name":               types.StringType,
	"type":               types.StringType,
	"org":                types.StringType,
	"fed_learn_port":     types.Int64Type,
	"admin_port":         types.Int64Type,
	"default_host":       types.StringType,
	"host_names":         types.ListType{ElemType: types.StringType},
	"role":               types.StringType,
	"connect_to":         types.StringType,
	"port":               types.Int64Type,
	"num_gpus":           types.Int64Type,
	"mem_per_gpu_in_gib": types.Float64Type,
}}

func (d *projectConfigDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_project_config"
}

func (d *projectConfigDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	byName := func(kind string) schema.MapAttribute {
		return schema.MapAttribute{Computed: true, ElementType: participantObjectType,
			MarkdownDescription: "The " + kind + " keyed by name, ready for `for_each`."}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "Parses an existing NVFlare `project.yml` (api_version 3) so a project provisioned with " +
			"`nvflare provision` can move to Terraform: feed `clients` to `flare_client` with `for_each`. The file " +
			"is checked as NVFlare checks it: names, duplicates, one server, relays named by `connect_to`.",
		Attributes: map[string]schema.Attribute{
			"path":         schema.StringAttribute{Optional: true, MarkdownDescription: "Path of the project.yml. Exactly one of `path` and `content`."},
			"content":      schema.StringAttribute{Optional: true, MarkdownDescription: "The project.yml text itself."},
			"api_version":  schema.Int64Attribute{Computed: true, MarkdownDescription: "Always 3."},
			"name":         schema.StringAttribute{Computed: true, MarkdownDescription: "Project name."},
			"description":  schema.StringAttribute{Computed: true, MarkdownDescription: "Project description."},
			"participants": schema.ListAttribute{Computed: true, ElementType: participantObjectType, MarkdownDescription: "Every participant in file order. Fields that do not apply to a type are null."},
			"servers":      byName("servers"),
			"clients":      byName("clients"),
			"admins":       byName("admins"),
			"relays":       byName("relays"),
		},
	}
}

func (d *projectConfigDataSource) ConfigValidators(context.Context) []datasource.ConfigValidator {
	return []datasource.ConfigValidator{
		datasourcevalidator.ExactlyOneOf(path.MatchRoot("path"), path.MatchRoot("content")),
	}
}

func (d *projectConfigDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m projectConfigModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	data := []byte(m.Content.ValueString())
	attrPath := path.Root("content")
	if !m.Path.IsNull() {
		attrPath = path.Root("path")
		var err error
		if data, err = os.ReadFile(m.Path.ValueString()); err != nil {
			resp.Diagnostics.AddAttributeError(attrPath, "Cannot Read project.yml", err.Error())
			return
		}
	}
	f, err := project.ParseFile(data)
	if err != nil {
		resp.Diagnostics.AddAttributeError(attrPath, "Invalid project.yml", err.Error())
		return
	}
	all := make([]attr.Value, 0, len(f.Participants))
	groups := map[project.Type]map[string]attr.Value{
		project.TypeServer: {}, project.TypeClient: {}, project.TypeAdmin: {}, project.TypeRelay: {},
	}
	for _, p := range f.Participants {
		obj := participantObject(p)
		all = append(all, obj)
		groups[p.Type][p.Name] = obj
	}
	m.APIVersion = types.Int64Value(int64(f.APIVersion))
	m.Name = types.StringValue(f.Name)
	m.Description = types.StringValue(f.Description)
	m.Participants = types.ListValueMust(participantObjectType, all)
	m.Servers = types.MapValueMust(participantObjectType, groups[project.TypeServer])
	m.Clients = types.MapValueMust(participantObjectType, groups[project.TypeClient])
	m.Admins = types.MapValueMust(participantObjectType, groups[project.TypeAdmin])
	m.Relays = types.MapValueMust(participantObjectType, groups[project.TypeRelay])
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

func participantObject(p project.Participant) attr.Value {
	nullInt, nullStr := types.Int64Null(), types.StringNull()
	v := map[string]attr.Value{
		"name": types.StringValue(p.Name), "type": types.StringValue(string(p.Type)), "org": types.StringValue(p.Org),
		"fed_learn_port": nullInt, "admin_port": nullInt, "default_host": nullStr,
		"host_names": types.ListNull(types.StringType), "role": nullStr, "connect_to": nullStr, "port": nullInt,
		"num_gpus": nullInt, "mem_per_gpu_in_gib": types.Float64Null(),
	}
	optStr := func(s string) attr.Value {
		if s == "" {
			return nullStr
		}
		return types.StringValue(s)
	}
	switch p.Type {
	case project.TypeServer:
		v["fed_learn_port"] = types.Int64Value(int64(p.FedLearnPort))
		v["admin_port"] = types.Int64Value(int64(p.AdminPort))
		v["default_host"] = optStr(p.DefaultHost)
		hosts := make([]attr.Value, 0, len(p.HostNames))
		for _, h := range p.HostNames {
			hosts = append(hosts, types.StringValue(h))
		}
		v["host_names"] = types.ListValueMust(types.StringType, hosts)
	case project.TypeClient:
		v["connect_to"] = optStr(p.ConnectTo)
		v["num_gpus"] = types.Int64Value(int64(p.NumGPUs))
		v["mem_per_gpu_in_gib"] = types.Float64Value(p.MemPerGPUInGiB)
	case project.TypeAdmin:
		v["role"] = types.StringValue(p.Role)
	case project.TypeRelay:
		v["port"] = types.Int64Value(int64(p.Port))
		v["default_host"] = optStr(p.DefaultHost)
	}
	return types.ObjectValueMust(participantObjectType.AttrTypes, v)
}
