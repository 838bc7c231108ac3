// Package provider adapts the federation model to Terraform: schemas,
// models, CRUD and validation. The work itself lives in internal/.
package provider

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
)

var _ provider.Provider = (*flareProvider)(nil)

type flareProvider struct {
	version string
}

// New returns the provider factory main.go and the tests serve.
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &flareProvider{version: version} }
}

func (p *flareProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "flare"
	resp.Version = p.version
}

func (p *flareProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "Provisions NVIDIA FLARE federations: a root CA, participants with their " +
			"certificates, and startup kits the NVFlare runtime starts from unchanged. Private keys are written " +
			"to files with mode 0600 and never stored in Terraform state.",
	}
}

func (p *flareProvider) Configure(_ context.Context, _ provider.ConfigureRequest, _ *provider.ConfigureResponse) {
}

func (p *flareProvider) Resources(_ context.Context) []func() resource.Resource {
	return []func() resource.Resource{
		NewProjectResource,
		NewServerResource,
		NewClientResource,
		NewAdminResource,
		NewRelayResource,
		NewStartupKitResource,
	}
}

func (p *flareProvider) DataSources(_ context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{
		NewProjectConfigDataSource,
	}
}
