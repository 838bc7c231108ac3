package provider

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/internal/cvm"
	"github.com/flarekit/terraform-provider-flare/internal/guestconfig"
	"github.com/flarekit/terraform-provider-flare/kbs"
)

// keyReleaseModel is flare_cvm_kit.key_release: the key broker the guest
// attests to, and where Terraform puts the root key and the broker's rule.
type keyReleaseModel struct {
	URL        types.String `tfsdk:"url"`
	CACertPEM  types.String `tfsdk:"ca_cert_pem"`
	Resource   types.String `tfsdk:"resource"`
	StoreDir   types.String `tfsdk:"store_dir"`
	VaultMount types.String `tfsdk:"vault_mount"`
}

var keyReleaseAttrTypes = map[string]attr.Type{
	"url": types.StringType, "ca_cert_pem": types.StringType, "resource": types.StringType,
	"store_dir": types.StringType, "vault_mount": types.StringType,
}

func keyReleaseSchema() schema.SingleNestedAttribute {
	return schema.SingleNestedAttribute{Optional: true,
		MarkdownDescription: "The key broker (flare-kbs, or Trustee's KBS: the same protocol) the guest attests to for its root key. " +
			"Required with `encrypt_root` and the kit's own initrd. On apply Terraform writes the root key and the broker's rule " +
			"(this kit's `expected_measurement` and `host_data` may get the key at `resource`, nothing else) to `vault_mount` or " +
			"`store_dir`; the key never enters state. A changed kernel, initrd or command line changes the measurement in the plan " +
			"and the rule in the same apply; the old kit gets no key any more.",
		Attributes: map[string]schema.Attribute{
			"url": schema.StringAttribute{Required: true,
				Validators:          []validator.String{stringvalidator.RegexMatches(httpsURL, "must be an https:// URL")},
				MarkdownDescription: "The broker's base URL as the guest reaches it, e.g. `https://kbs.example.org:8999`."},
			"ca_cert_pem": schema.StringAttribute{Required: true,
				MarkdownDescription: "The broker's TLS CA certificate (PEM). The guest trusts no other, so a host cannot hand it a key for a disk of its own."},
			"resource": schema.StringAttribute{Optional: true, Computed: true,
				MarkdownDescription: "The key's path at the broker, `<repository>/<type>/<tag>`. Defaults to `flare/root-key/<participant>`."},
			"store_dir": schema.StringAttribute{Optional: true,
				MarkdownDescription: "A flare-kbs directory store (`store: {dir: …}` in its config) Terraform writes the key (0600) and the rule into."},
			"vault_mount": schema.StringAttribute{Optional: true,
				MarkdownDescription: "A Vault/OpenBao KV version 1 mount (the provider's `vault` connection) Terraform writes the key into at Trustee's layout " +
					"(`<mount>/<repository>/<type>/<tag>`, field `data`) and the rule beside it; flare-kbs (or Trustee) reads it from there."},
		},
	}
}

var httpsURL = regexp.MustCompile(`^https://[^\s/]+(/\S*)?$`)

func (m *cvmKitModel) keyRelease(ctx context.Context) (*keyReleaseModel, diag.Diagnostics) {
	if m.KeyRelease.IsNull() || m.KeyRelease.IsUnknown() {
		return nil, nil
	}
	var kr keyReleaseModel
	d := m.KeyRelease.As(ctx, &kr, basetypesObjectAsOptions)
	return &kr, d
}

// guest is what the guest is told (measured, in its initrd).
func (kr *keyReleaseModel) guest() *guestconfig.KeyRelease {
	if kr == nil {
		return nil
	}
	return &guestconfig.KeyRelease{URL: kr.URL.ValueString(), CACertPEM: kr.CACertPEM.ValueString(), Resource: kr.Resource.ValueString()}
}

// resourcePath is the broker path of the kit's key.
func (kr *keyReleaseModel) resourcePath(participant string) (kbs.ResourcePath, error) {
	r := kr.Resource.ValueString()
	if r == "" {
		r = cvm.DefaultKeyResource(participant)
	}
	parts := strings.Split(r, "/")
	if len(parts) != 3 {
		return kbs.ResourcePath{}, fmt.Errorf("key_release.resource %q is not <repository>/<type>/<tag>", r)
	}
	p := kbs.ResourcePath{Repo: parts[0], Type: parts[1], Tag: parts[2]}
	return p, p.Validate()
}

// store opens where the key and the rule go; nil when neither store_dir
// nor vault_mount is set (the key then goes to root_key_file).
func (kr *keyReleaseModel) store(ctx context.Context, d *providerData) (kbs.Store, error) {
	switch {
	case kr == nil:
		return nil, nil
	case kr.VaultMount.ValueString() != "":
		if d == nil {
			return nil, errors.New("key_release.vault_mount needs the provider's vault connection")
		}
		c, err := d.vaultClient(ctx)
		if err != nil {
			return nil, err
		}
		return kbs.NewVaultStore(c, kr.VaultMount.ValueString(), "")
	case kr.StoreDir.ValueString() != "":
		return kbs.NewDirStore(kr.StoreDir.ValueString())
	}
	return nil, nil
}

// defaultGuestInit is guest_init when unset: $FLARE_GUEST_INIT, else
// flare-init beside the provider's executable (a release ships both).
func defaultGuestInit() string {
	if p := os.Getenv("FLARE_GUEST_INIT"); p != "" {
		return p
	}
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	p := filepath.Join(filepath.Dir(exe), "flare-init")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// initrdCache holds the kits' own initrds built at plan time to measure
// them (named by content; no secrets in them).
func initrdCache() string { return filepath.Join(os.TempDir(), "flare-initrd-cache") }
