package provider

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/internal/dashclient"
)

// The Dashboard (NVFlare's, or flare-dashboard) that flare_dashboard_*
// manage, from the provider's dashboard block or the environment. Provider
// settings are never written to state, so the password and the session
// token stay out of it.

type dashboardModel struct {
	URL        types.String `tfsdk:"url"`
	Email      types.String `tfsdk:"email"`
	Password   types.String `tfsdk:"password"`
	CACert     types.String `tfsdk:"ca_cert"`
	SkipVerify types.Bool   `tfsdk:"skip_verify"`
}

func dashboardProviderSchema() schema.SingleNestedAttribute {
	return schema.SingleNestedAttribute{
		Optional: true,
		MarkdownDescription: "The NVFlare Dashboard (NVFlare's own or `flare-dashboard`) that `flare_dashboard_project`, " +
			"`flare_dashboard_approval` and `flare_dashboard_registrations` manage through its API, logged in as its project admin. " +
			"Unset fields fall back to `FLARE_DASHBOARD_URL`, `FLARE_DASHBOARD_EMAIL`, `FLARE_DASHBOARD_PASSWORD` and " +
			"`FLARE_DASHBOARD_CACERT`. Use provider aliases for several Dashboards.",
		Attributes: map[string]schema.Attribute{
			"url": schema.StringAttribute{Optional: true, MarkdownDescription: "The Dashboard's address, e.g. `https://dashboard.example.com:8443` " +
				"(the API is under `/nvflare-dashboard/api/v1`, or give the full API base ending in `/api/v1`). Defaults to `FLARE_DASHBOARD_URL`."},
			"email": schema.StringAttribute{Optional: true, MarkdownDescription: "The project admin's email. Defaults to `FLARE_DASHBOARD_EMAIL`."},
			"password": schema.StringAttribute{Optional: true, Sensitive: true,
				MarkdownDescription: "The project admin's password. Defaults to `FLARE_DASHBOARD_PASSWORD`; prefer the environment in pipelines."},
			"ca_cert": schema.StringAttribute{Optional: true, MarkdownDescription: "PEM bundle, or the path of one, that signs the Dashboard's TLS certificate " +
				"(`web.crt`). Defaults to `FLARE_DASHBOARD_CACERT`, else the system roots."},
			"skip_verify": schema.BoolAttribute{Optional: true, MarkdownDescription: "Do not verify the Dashboard's TLS certificate (tests only; gives a warning)."},
		},
	}
}

type dashboardSettings struct {
	cfg dashclient.Config

	mu     sync.Mutex
	client *dashclient.Client
}

func (d *dashboardSettings) configure(ctx context.Context, obj types.Object) diag.Diagnostics {
	var diags diag.Diagnostics
	var m dashboardModel
	if !obj.IsNull() && !obj.IsUnknown() {
		diags.Append(obj.As(ctx, &m, basetypesObjectAsOptions)...)
	}
	or := func(v types.String, env string) string {
		if s := v.ValueString(); s != "" {
			return s
		}
		return os.Getenv(env)
	}
	d.cfg = dashclient.Config{
		URL: or(m.URL, "FLARE_DASHBOARD_URL"), Email: or(m.Email, "FLARE_DASHBOARD_EMAIL"),
		Password: or(m.Password, "FLARE_DASHBOARD_PASSWORD"), CACert: or(m.CACert, "FLARE_DASHBOARD_CACERT"),
		SkipVerify: m.SkipVerify.ValueBool(),
	}
	if d.cfg.SkipVerify {
		diags.AddWarning("Dashboard TLS Verification Off", "dashboard.skip_verify is set: anyone on the path can read the project admin's password. For tests only.")
	}
	return diags
}

// dashboardClient is the Dashboard client, made on first use so that
// configurations without flare_dashboard_* need no dashboard block.
func (d *providerData) dashboardClient() (*dashclient.Client, error) {
	if d == nil {
		return nil, fmt.Errorf("the provider is not configured")
	}
	s := &d.dashboard
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return s.client, nil
	}
	c, err := dashclient.New(s.cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: set the provider's dashboard block (url, email, password) or FLARE_DASHBOARD_URL, FLARE_DASHBOARD_EMAIL and FLARE_DASHBOARD_PASSWORD", err)
	}
	s.client = c
	return c, nil
}

// withDashboard gives a data source the provider's configuration.
type withDashboardData struct {
	data *providerData
}

func (w *withDashboardData) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	if req.ProviderData == nil {
		return
	}
	d, ok := req.ProviderData.(*providerData)
	if !ok {
		resp.Diagnostics.AddError("Unexpected Data Source Configure Type",
			fmt.Sprintf("Expected *providerData, got: %T. Please report this issue to the provider developers.", req.ProviderData))
		return
	}
	w.data = d
}
