// Package provider adapts the federation model to Terraform: schemas,
// models, CRUD and validation. The work itself lives in internal/.
package provider

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/vault/api"

	"github.com/flarekit/terraform-provider-flare/internal/vaultca"
)

var _ provider.Provider = (*flareProvider)(nil)

type flareProvider struct {
	version string
}

// New returns the provider factory main.go and the tests serve.
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &flareProvider{version: version} }
}

type providerModel struct {
	Vault     types.Object `tfsdk:"vault"`
	Dashboard types.Object `tfsdk:"dashboard"`
}

type vaultModel struct {
	Address    types.String `tfsdk:"address"`
	Namespace  types.String `tfsdk:"namespace"`
	CACert     types.String `tfsdk:"ca_cert"`
	SkipVerify types.Bool   `tfsdk:"skip_verify"`
	Token      types.String `tfsdk:"token"`
	AppRole    types.Object `tfsdk:"approle"`
	JWT        types.Object `tfsdk:"jwt"`
}

type appRoleModel struct {
	RoleID   types.String `tfsdk:"role_id"`
	SecretID types.String `tfsdk:"secret_id"`
	Mount    types.String `tfsdk:"mount"`
}

type jwtModel struct {
	Role  types.String `tfsdk:"role"`
	JWT   types.String `tfsdk:"jwt"`
	Mount types.String `tfsdk:"mount"`
}

func (p *flareProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "flare"
	resp.Version = p.version
}

func (p *flareProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "Provisions NVIDIA FLARE federations: a root CA, participants with their " +
			"certificates, and startup kits the NVFlare runtime starts from unchanged. Private keys are written " +
			"to files with mode 0600 or kept in Vault Transit, and never stored in Terraform state.",
		Attributes: map[string]schema.Attribute{
			"dashboard": dashboardProviderSchema(),
			"vault": schema.SingleNestedAttribute{
				Optional: true,
				MarkdownDescription: "How to reach Vault (or OpenBao) for projects whose `ca.backend` is `vault_transit`. " +
					"Unset fields fall back to `VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_NAMESPACE`, `VAULT_CACERT` as the Vault CLI does. " +
					"Provider settings are never written to state. Log in with a token, `approle` or `jwt` (one of them).",
				Attributes: map[string]schema.Attribute{
					"address":     schema.StringAttribute{Optional: true, MarkdownDescription: "Vault address, e.g. `https://vault.example.com:8200`. Defaults to `VAULT_ADDR`."},
					"namespace":   schema.StringAttribute{Optional: true, MarkdownDescription: "Vault namespace. Defaults to `VAULT_NAMESPACE`."},
					"ca_cert":     schema.StringAttribute{Optional: true, MarkdownDescription: "PEM bundle, or the path of one, that signs Vault's TLS certificate. Defaults to `VAULT_CACERT`."},
					"skip_verify": schema.BoolAttribute{Optional: true, MarkdownDescription: "Do not verify Vault's TLS certificate. For tests only: it (or `VAULT_SKIP_VERIFY`) gives a warning, as does an `http://` address of a host that is not loopback."},
					"token": schema.StringAttribute{Optional: true, Sensitive: true,
						MarkdownDescription: "Vault token. Defaults to `VAULT_TOKEN`. Prefer the environment or `approle`/`jwt` in pipelines."},
					"approle": schema.SingleNestedAttribute{
						Optional:            true,
						MarkdownDescription: "Log in with AppRole.",
						Attributes: map[string]schema.Attribute{
							"role_id":   schema.StringAttribute{Required: true, MarkdownDescription: "AppRole role ID."},
							"secret_id": schema.StringAttribute{Required: true, Sensitive: true, MarkdownDescription: "AppRole secret ID."},
							"mount":     schema.StringAttribute{Optional: true, MarkdownDescription: "Auth mount path. Defaults to `approle`."},
						},
					},
					"jwt": schema.SingleNestedAttribute{
						Optional:            true,
						MarkdownDescription: "Log in with a JWT (e.g. a CI pipeline's OIDC token).",
						Attributes: map[string]schema.Attribute{
							"role":  schema.StringAttribute{Required: true, MarkdownDescription: "JWT auth role."},
							"jwt":   schema.StringAttribute{Required: true, Sensitive: true, MarkdownDescription: "The token."},
							"mount": schema.StringAttribute{Optional: true, MarkdownDescription: "Auth mount path. Defaults to `jwt`."},
						},
					},
				},
			},
		},
	}
}

// providerData is what resources get from Configure: how to reach Vault,
// logged in lazily so configurations without a Vault CA never need one.
type providerData struct {
	vault     vaultca.Config
	dashboard dashboardSettings

	mu     sync.Mutex
	client *api.Client
}

func (d *providerData) vaultClient(ctx context.Context) (*api.Client, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.client != nil {
		return d.client, nil
	}
	c, err := vaultca.Login(ctx, d.vault)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	d.client = c
	return c, nil
}

func (p *flareProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var m providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	data := &providerData{}
	if !m.Vault.IsNull() && !m.Vault.IsUnknown() {
		var v vaultModel
		resp.Diagnostics.Append(m.Vault.As(ctx, &v, basetypesObjectAsOptions)...)
		data.vault = vaultca.Config{
			Address: v.Address.ValueString(), Namespace: v.Namespace.ValueString(),
			CACert: v.CACert.ValueString(), SkipVerify: v.SkipVerify.ValueBool(), Token: v.Token.ValueString(),
		}
		if !v.AppRole.IsNull() {
			var a appRoleModel
			resp.Diagnostics.Append(v.AppRole.As(ctx, &a, basetypesObjectAsOptions)...)
			data.vault.AppRole = &vaultca.AppRoleAuth{RoleID: a.RoleID.ValueString(), SecretID: a.SecretID.ValueString(), MountPath: a.Mount.ValueString()}
		}
		if !v.JWT.IsNull() {
			var j jwtModel
			resp.Diagnostics.Append(v.JWT.As(ctx, &j, basetypesObjectAsOptions)...)
			data.vault.JWT = &vaultca.JWTAuth{Role: j.Role.ValueString(), JWT: j.JWT.ValueString(), MountPath: j.Mount.ValueString()}
		}
		if data.vault.AppRole != nil && data.vault.JWT != nil {
			resp.Diagnostics.AddAttributeError(path.Root("vault").AtName("jwt"), "Conflicting Vault Logins",
				"vault: set one of approle and jwt, not both")
		}
		for _, r := range vaultca.TransportRisks(data.vault) {
			resp.Diagnostics.AddAttributeWarning(path.Root("vault").AtName(r.Field), r.Summary, r.Detail)
		}
	} else if os.Getenv(api.EnvVaultAddress) != "" {
		// No vault block: a vault_transit project reaches Vault through
		// the environment alone.
		for _, r := range vaultca.TransportRisks(data.vault) {
			resp.Diagnostics.AddWarning(r.Summary, r.Detail)
		}
	}
	resp.Diagnostics.Append(data.dashboard.configure(ctx, m.Dashboard)...)
	resp.ResourceData = data
	resp.DataSourceData = data
}

func (p *flareProvider) Resources(_ context.Context) []func() resource.Resource {
	return []func() resource.Resource{
		NewProjectResource,
		NewServerResource,
		NewClientResource,
		NewClientsResource,
		NewAdminResource,
		NewRelayResource,
		NewStartupKitResource,
		NewCVMKitResource,
		NewCVMInstanceResource,
		NewAgentIdentityResource,
		NewRequestApprovalResource,
		NewRequestApprovalsResource,
		NewDashboardProjectResource,
		NewDashboardApprovalResource,
	}
}

func (p *flareProvider) DataSources(_ context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{
		NewProjectConfigDataSource,
		NewSNPMeasurementDataSource,
		NewCVMAttestationDataSource,
		NewDashboardRegistrationsDataSource,
	}
}
