package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/objectdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/objectplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"

	"github.com/flarekit/terraform-provider-flare/internal/kit"
	"github.com/flarekit/terraform-provider-flare/internal/localca"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/project"
	"github.com/flarekit/terraform-provider-flare/internal/vaultca"
)

var (
	_ resource.Resource                   = (*projectResource)(nil)
	_ resource.ResourceWithImportState    = (*projectResource)(nil)
	_ resource.ResourceWithValidateConfig = (*projectResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*projectResource)(nil)
	_ resource.ResourceWithUpgradeState   = (*projectResource)(nil)
)

// NewProjectResource is the flare_project factory.
func NewProjectResource() resource.Resource { return &projectResource{} }

type projectResource struct {
	withProviderData
}

type projectModel struct {
	ID                types.String `tfsdk:"id"`
	Name              types.String `tfsdk:"name"`
	Description       types.String `tfsdk:"description"`
	NVFlareVersion    types.String `tfsdk:"nvflare_version"`
	ValidityDays      types.Int64  `tfsdk:"validity_days"`
	CA                types.Object `tfsdk:"ca"`
	RootCAPEM         types.String `tfsdk:"root_ca_pem"`
	RootCAFingerprint types.String `tfsdk:"root_ca_fingerprint"`
	RootCANotAfter    types.String `tfsdk:"root_ca_not_after"`
	LatestKeyVersion  types.Int64  `tfsdk:"latest_key_version"`
}

type caModel struct {
	Backend      types.String `tfsdk:"backend"`
	Dir          types.String `tfsdk:"dir"`
	TransitMount types.String `tfsdk:"transit_mount"`
	KeyName      types.String `tfsdk:"key_name"`
	KeyType      types.String `tfsdk:"key_type"`
	KeyVersion   types.Int64  `tfsdk:"key_version"`
	KVMount      types.String `tfsdk:"kv_mount"`
	KVPath       types.String `tfsdk:"kv_path"`
}

var caAttrTypes = map[string]attr.Type{
	"backend": types.StringType, "dir": types.StringType, "transit_mount": types.StringType,
	"key_name": types.StringType, "key_type": types.StringType, "key_version": types.Int64Type,
	"kv_mount": types.StringType, "kv_path": types.StringType,
}

const (
	caBackendLocal    = "local"
	caBackendVault    = "vault_transit"
	defaultCADir      = ".flare-ca"
	defaultRootCADays = 3650
)

func (r *projectResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_project"
}

func (r *projectResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		// 1: ca.kv_mount and ca.kv_path (the Vault key store).
		Version: 1,
		MarkdownDescription: "An NVIDIA FLARE project and its root CA. The root certificate signs every participant " +
			"certificate and every kit's `signature.json`. With the default `local` CA backend the root key is " +
			"written with mode 0600 to `ca.dir`; it never enters Terraform state.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed: true,
				MarkdownDescription: "Reference to the project's CA and NVFlare line (`local:<dir>?nvflare=<line>`). Pass it as " +
					"`project_id` to participants.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"name": schema.StringAttribute{
				Required:            true,
				MarkdownDescription: "Project name; the root certificate's common name. Changing it makes a new CA.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.RequiresReplace()},
				Validators:          []validator.String{stringCheck{summary: "Invalid Project Name", desc: "a name NVFlare accepts", check: project.ValidateProjectName}},
			},
			"description": schema.StringAttribute{
				Optional:            true,
				MarkdownDescription: "Free text describing the project.",
			},
			"nvflare_version": schema.StringAttribute{
				Optional: true,
				Computed: true,
				Default:  stringdefault.StaticString(kit.DefaultVersion()),
				MarkdownDescription: fmt.Sprintf("The NVIDIA FLARE release line the federation runs: %s. Defaults to %q, the newest. "+
					"It selects the kit layout (`fed_*.json`, `local/*.default`, scripts) and the certificate profile of that "+
					"line's `nvflare provision`, so that line's runtime starts from the kits unchanged. Changing it on an "+
					"applied project rewrites every kit and reissues no key or certificate: the existing root CA and "+
					"participant certificates pass the newer runtime's checks. It rides in `id`, so everything made from "+
					"the project follows it.", "`"+strings.Join(kit.Versions(), "`, `")+"`", kit.DefaultVersion()),
				Validators: []validator.String{stringvalidator.OneOf(kit.Versions()...)},
			},
			"validity_days": schema.Int64Attribute{
				Optional:            true,
				Computed:            true,
				Default:             int64default.StaticInt64(defaultRootCADays),
				MarkdownDescription: fmt.Sprintf("Days the root certificate is valid. Defaults to %d. Changing it makes a new CA.", defaultRootCADays),
				PlanModifiers:       []planmodifier.Int64{int64planmodifier.RequiresReplace()},
				Validators:          []validator.Int64{int64validator.Between(1, 36500)},
			},
			"ca": schema.SingleNestedAttribute{
				Optional: true,
				Computed: true,
				MarkdownDescription: "Where the root CA key lives. Defaults to the embedded local CA in `.flare-ca`. " +
					"Changing any of it makes a new CA (and so new certificates and kits).",
				Default: objectdefault.StaticValue(types.ObjectValueMust(caAttrTypes, map[string]attr.Value{
					"backend":       types.StringValue(caBackendLocal),
					"dir":           types.StringValue(defaultCADir),
					"transit_mount": types.StringNull(),
					"key_name":      types.StringNull(),
					"key_type":      types.StringNull(),
					"key_version":   types.Int64Null(),
					"kv_mount":      types.StringNull(),
					"kv_path":       types.StringNull(),
				})),
				PlanModifiers: []planmodifier.Object{objectplanmodifier.RequiresReplace()},
				Attributes: map[string]schema.Attribute{
					"backend": schema.StringAttribute{
						Optional: true,
						Computed: true,
						Default:  stringdefault.StaticString(caBackendLocal),
						MarkdownDescription: "CA backend. `local`: the root key is a 0600 file in `dir`. " +
							"`vault_transit`: the root key is a non-exportable Vault Transit key (`key_name`) that never leaves Vault; " +
							"the participants' keys are kept in Vault KV v2 (`kv_mount`, `kv_path`) and the root certificate in state " +
							"(with a copy in KV), so a pipeline runner needs nothing on disk.",
						Validators: []validator.String{stringvalidator.OneOf(caBackendLocal, caBackendVault)},
					},
					"transit_mount": schema.StringAttribute{
						Optional:            true,
						MarkdownDescription: "`vault_transit`: where Transit is mounted. Defaults to `transit`.",
					},
					"key_name": schema.StringAttribute{
						Optional: true,
						MarkdownDescription: "`vault_transit`: the Transit key. Created non-exportable if missing; an existing key is " +
							"adopted only if it is non-exportable RSA without plaintext backup.",
					},
					"key_type": schema.StringAttribute{
						Optional:            true,
						MarkdownDescription: "`vault_transit`: `rsa-2048` (default), `rsa-3072` or `rsa-4096` for a new key.",
						Validators:          []validator.String{stringvalidator.OneOf(vaultca.KeyTypeRSA2048, vaultca.KeyTypeRSA3072, vaultca.KeyTypeRSA4096)},
					},
					"key_version": schema.Int64Attribute{
						Optional: true, Computed: true,
						PlanModifiers: []planmodifier.Int64{int64planmodifier.UseStateForUnknown()},
						MarkdownDescription: "`vault_transit`: the Transit key version the root certificate is made with. Unset: the " +
							"latest version at creation, then pinned. After rotating the key in Vault, set it to the new version " +
							"to roll the CA over: a new root certificate, new participant certificates and new kits.",
						Validators: []validator.Int64{int64validator.AtLeast(1)},
					},
					"kv_mount": schema.StringAttribute{
						Optional: true,
						MarkdownDescription: "`vault_transit`: the Vault KV v2 mount that keeps the participants' private keys and a copy of the root " +
							"certificate, so that any runner with the project's state and Vault access finds them (nothing is kept on the " +
							"runner's disk). Defaults to `" + defaultKVMount + "`.",
						Validators: []validator.String{kvNameCheck},
					},
					"kv_path": schema.StringAttribute{
						Optional: true,
						MarkdownDescription: "`vault_transit`: the folder in `kv_mount`; entries go to `<kv_path>/<key_name>/v<key_version>/root` " +
							"and `.../participants/<name>` (fields `private_key`, `certificate`), written once at issue and deleted with their " +
							"resource. Defaults to `" + defaultKVFolder + "`. The provider's Vault token needs `create` and `read` on " +
							"`<kv_mount>/data/<kv_path>/*` and `delete` on `<kv_mount>/metadata/<kv_path>/*`.",
						Validators: []validator.String{kvNameCheck},
					},
					"dir": schema.StringAttribute{
						Optional: true,
						Computed: true,
						Default:  stringdefault.StaticString(defaultCADir),
						MarkdownDescription: "`local`: directory for the root key and the participants' private keys, relative to the working " +
							"directory. Defaults to `.flare-ca`. Keep it out of version control, and in a pipeline on a persistent volume. " +
							"`vault_transit` projects keep nothing here (projects made before the Vault key store keep their root certificate " +
							"and participant keys here).",
						Validators: []validator.String{stringvalidator.LengthAtLeast(1)},
					},
				},
			},
			"root_ca_pem": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "Root certificate in PEM (`rootCA.pem` of every kit).",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"root_ca_fingerprint": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "Hex SHA-256 of the root certificate's DER.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"latest_key_version": schema.Int64Attribute{
				Computed: true,
				MarkdownDescription: "`vault_transit`: the Transit key's latest version, read on refresh. When it is above " +
					"`ca.key_version` the key was rotated and the plan warns.",
			},
			"root_ca_not_after": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "RFC 3339 time the root certificate expires.",
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
		},
	}
}

func (m *projectModel) ca(ctx context.Context) (caModel, error) {
	var ca caModel
	if diags := m.CA.As(ctx, &ca, basetypesObjectAsOptions); diags.HasError() {
		return ca, fmt.Errorf("reading ca: %v", diags)
	}
	return ca, nil
}

func (m *projectModel) setCert(cert *x509Cert) {
	m.RootCAPEM = types.StringValue(string(pki.CertPEM(cert)))
	m.RootCAFingerprint = types.StringValue(pki.CertFingerprint(cert))
	m.RootCANotAfter = types.StringValue(cert.NotAfter.UTC().Format(time.RFC3339))
}

// ValidateConfig checks that the CA settings fit the backend.
func (r *projectResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m projectModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() || m.CA.IsNull() || m.CA.IsUnknown() {
		return
	}
	ca, err := m.ca(ctx)
	if err != nil || ca.Backend.IsUnknown() {
		return
	}
	caPath := path.Root("ca")
	if ca.Backend.ValueString() == caBackendVault {
		if ca.KeyName.IsNull() {
			resp.Diagnostics.AddAttributeError(caPath.AtName("key_name"), "Missing Transit Key Name",
				"ca.key_name: the vault_transit backend needs the name of the Transit key that holds the root CA key, e.g. key_name = \"flare-root\"")
		}
		return
	}
	for name, v := range map[string]attr.Value{"transit_mount": ca.TransitMount, "key_name": ca.KeyName, "key_type": ca.KeyType, "key_version": ca.KeyVersion,
		"kv_mount": ca.KVMount, "kv_path": ca.KVPath} {
		if !v.IsNull() {
			resp.Diagnostics.AddAttributeError(caPath.AtName(name), "Setting Needs The Vault Backend",
				fmt.Sprintf("ca.%s applies to backend = \"vault_transit\" only; remove it or set the backend", name))
		}
	}
}

func (r *projectResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan projectModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ca, err := plan.ca(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Invalid CA Configuration", err.Error())
		return
	}
	ref := caRef{Dir: ca.Dir.ValueString(), Line: plan.NVFlareVersion.ValueString()}
	line, err := ref.line()
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("nvflare_version"), "Unsupported NVFlare Line", err.Error())
		return
	}
	store := ref.store()
	validity := pki.ValidityFor(now(), int(plan.ValidityDays.ValueInt64()))
	var root pki.CA
	if ca.Backend.ValueString() == caBackendVault {
		signer, warnings, err := r.vaultSigner(ctx, ca)
		for _, w := range warnings {
			resp.Diagnostics.AddAttributeWarning(path.Root("ca").AtName("key_name"), "Vault Transit Key", w)
		}
		if err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("ca"), "Cannot Use Vault Transit Key", err.Error())
			return
		}
		ref.Vault = &vaultKeyRef{Mount: transitMount(ca), Key: ca.KeyName.ValueString(), Version: signer.KeyVersion()}
		ref.KV = &kvRef{Mount: valueOr(ca.KVMount, defaultKVMount), Path: valueOr(ca.KVPath, defaultKVFolder)}
		ref.Dir = ""
		ca.KeyVersion = types.Int64Value(int64(signer.KeyVersion()))
		plan.LatestKeyVersion = ca.KeyVersion
		st, err := r.data.store(ctx, ref)
		if err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("ca"), "Cannot Open Vault Key Store", err.Error())
			return
		}
		cert, err := pki.NewRootCA(signer, plan.Name.ValueString(), validity, line.Certs)
		if err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("ca"), "Cannot Create Root CA", err.Error())
			return
		}
		root = pki.CA{Cert: cert, Signer: signer}
		if err := st.(kvStore).CreateRoot(ctx, root.Cert); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("ca").AtName("kv_path"), "Cannot Create Root CA", err.Error())
			return
		}
	} else {
		ca.KeyVersion = types.Int64Null()
		plan.LatestKeyVersion = types.Int64Null()
		root, err = store.Create(plan.Name.ValueString(), validity, line.Certs)
		if err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("ca").AtName("dir"), "Cannot Create Root CA", err.Error())
			return
		}
	}
	obj, diags := types.ObjectValueFrom(ctx, caAttrTypes, ca)
	resp.Diagnostics.Append(diags...)
	plan.CA = obj
	plan.ID = types.StringValue(ref.ID())
	plan.setCert(root.Cert)
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func valueOr(v types.String, def string) string {
	if v.IsNull() || v.IsUnknown() || v.ValueString() == "" {
		return def
	}
	return v.ValueString()
}

// kvNameCheck refuses what cannot ride in a project id.
var kvNameCheck = stringCheck{summary: "Invalid Vault KV Path", desc: "a Vault path without ':', '#', '?' or spaces",
	check: func(s string) error {
		if strings.Trim(s, "/") == "" || strings.ContainsAny(s, ":#?% ") {
			return fmt.Errorf("%q must be a non-empty Vault path without ':', '#', '?', '%%' or spaces", s)
		}
		return nil
	}}

func transitMount(ca caModel) string {
	if m := ca.TransitMount.ValueString(); m != "" {
		return m
	}
	return vaultca.DefaultTransitMount
}

// vaultSigner creates or adopts the Transit key and pins a version.
func (r *projectResource) vaultSigner(ctx context.Context, ca caModel) (*vaultca.Signer, []string, error) {
	if r.data == nil {
		return nil, nil, fmt.Errorf("the provider is not configured")
	}
	client, err := r.data.vaultClient(ctx)
	if err != nil {
		return nil, nil, err
	}
	_, warnings, err := vaultca.EnsureKey(ctx, client, transitMount(ca), ca.KeyName.ValueString(), ca.KeyType.ValueString())
	if err != nil {
		return nil, warnings, err
	}
	signer, err := vaultca.NewSigner(ctx, client, transitMount(ca), ca.KeyName.ValueString(), int(ca.KeyVersion.ValueInt64()))
	return signer, warnings, err
}

func (r *projectResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state projectModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ref, err := parseProjectID(state.ID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Invalid Project ID", err.Error())
		return
	}
	state.LatestKeyVersion = types.Int64Null()
	cert, diags := r.readRoot(ctx, ref, &state)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	state.setCert(cert)
	if state.NVFlareVersion.IsNull() { // import, or state from before lines: the id says
		state.NVFlareVersion = types.StringValue(ref.Line)
	}
	if state.Name.IsNull() { // import
		state.Name = types.StringValue(cert.Subject.CommonName)
		state.ValidityDays = types.Int64Value(validityDaysOf(cert))
		ca := map[string]attr.Value{
			"backend": types.StringValue(caBackendLocal), "dir": types.StringValue(ref.Dir),
			"transit_mount": types.StringNull(), "key_name": types.StringNull(), "key_type": types.StringNull(), "key_version": types.Int64Null(),
			"kv_mount": types.StringNull(), "kv_path": types.StringNull(),
		}
		if ref.KV != nil {
			ca["dir"] = types.StringValue(defaultCADir)
			if ref.KV.Mount != defaultKVMount {
				ca["kv_mount"] = types.StringValue(ref.KV.Mount)
			}
			if ref.KV.Path != defaultKVFolder {
				ca["kv_path"] = types.StringValue(ref.KV.Path)
			}
		}
		if ref.Vault != nil {
			ca["backend"] = types.StringValue(caBackendVault)
			ca["transit_mount"] = types.StringValue(ref.Vault.Mount)
			ca["key_name"] = types.StringValue(ref.Vault.Key)
			ca["key_version"] = types.Int64Value(int64(ref.Vault.Version))
		}
		state.CA = types.ObjectValueMust(caAttrTypes, ca)
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, state)...)
}

// readRoot loads the project's root certificate and checks that its key is
// still there: the key file of a local CA, the pinned version of the Transit
// key. Anything missing is an error with a restore hint, never a silent
// replacement. It fills latest_key_version and warns about a rotated key.
func (r *projectResource) readRoot(ctx context.Context, ref caRef, state *projectModel) (*x509Cert, diag.Diagnostics) {
	var diags diag.Diagnostics
	name := state.Name.ValueString()
	if name == "" {
		name = ref.caID() // import: the name comes from the certificate
	}
	store := ref.store()
	if ref.Vault == nil {
		ca, err := store.Load()
		if errors.Is(err, localca.ErrNoCA) {
			diags.AddError("Root CA Missing", rootMissingDetail(name, err.Error(), localRestore(ref.Dir)))
			return nil, diags
		}
		if err != nil {
			diags.AddError("Cannot Read Root CA", rootMissingDetail(name, "its root CA cannot be read: "+err.Error(), localRestore(ref.Dir)))
			return nil, diags
		}
		return ca.Cert, diags
	}
	var cert *x509Cert
	if ref.KV != nil {
		if cert, diags = r.readKVRoot(ctx, ref, name, state); diags.HasError() {
			return nil, diags
		}
	} else {
		var err error
		cert, err = store.LoadCert()
		if errors.Is(err, localca.ErrNoCA) {
			diags.AddError("Root Certificate Missing", rootMissingDetail(name, err.Error(), localRestore(ref.Dir)))
			return nil, diags
		}
		if err != nil {
			diags.AddError("Cannot Read Root CA", rootMissingDetail(name, "its root certificate cannot be read: "+err.Error(), localRestore(ref.Dir)))
			return nil, diags
		}
	}
	info, d := r.checkTransitKey(ctx, ref, name, cert)
	diags.Append(d...)
	if diags.HasError() {
		return nil, diags
	}
	state.LatestKeyVersion = types.Int64Value(int64(info.LatestVersion))
	if info.LatestVersion > ref.Vault.Version {
		diags.AddWarning("Transit Key Rotated",
			fmt.Sprintf("%s is at version %d, the CA uses version %d. Set ca.key_version = %d to roll the CA over: a new root "+
				"certificate, new participant certificates and new kits. Kits made with version %d stay verifiable until destroyed.",
				info.Path(), info.LatestVersion, ref.Vault.Version, info.LatestVersion, ref.Vault.Version))
	}
	return cert, diags
}

// readKVRoot checks the copy of the root certificate in Vault KV against
// the one in state (the authority; on import there is none yet and the
// copy is read). Participants and kits of the project load it from KV.
func (r *projectResource) readKVRoot(ctx context.Context, ref caRef, name string, state *projectModel) (*x509Cert, diag.Diagnostics) {
	var diags diag.Diagnostics
	if r.data == nil {
		diags.AddError("Provider Not Configured", "the provider is not configured; cannot reach Vault")
		return nil, diags
	}
	st, err := r.data.store(ctx, ref)
	if err != nil {
		diags.AddError("Cannot Reach Vault Key Store", rootMissingDetail(name, "its Vault key store cannot be opened: "+err.Error(),
			"make Vault reachable (the provider's vault settings, VAULT_ADDR, VAULT_TOKEN), then plan again."))
		return nil, diags
	}
	kv := st.(kvStore)
	var inState *x509Cert
	if pemText := state.RootCAPEM.ValueString(); pemText != "" {
		if inState, err = pki.ParseCertPEM([]byte(pemText)); err != nil {
			diags.AddError("Invalid Root Certificate In State", err.Error())
			return nil, diags
		}
	}
	copyCert, err := kv.RootCert(ctx)
	switch {
	case errors.Is(err, localca.ErrNoCA) && inState != nil:
		diags.AddError("Root Certificate Missing From Vault KV", rootMissingDetail(name, err.Error(),
			kv.Restore()+fmt.Sprintf(" The certificate itself is public and in state: `terraform state show` prints root_ca_pem; write it back with\n\n"+
				"  bao kv put -mount=%s %s/%s %s=@rootCA.pem\n\n(a create, so the token needs create on it).", kv.kv.Mount, kv.kv.Path, kvRootEntry, kvFieldCert)))
		return nil, diags
	case errors.Is(err, localca.ErrNoCA):
		diags.AddError("Root Certificate Missing", rootMissingDetail(name, err.Error(), kv.Restore()))
		return nil, diags
	case err != nil:
		diags.AddError("Cannot Read Root CA", rootMissingDetail(name, "its root certificate cannot be read from Vault KV: "+err.Error(), kv.Restore()))
		return nil, diags
	}
	if inState == nil {
		return copyCert, diags
	}
	if !copyCert.Equal(inState) {
		diags.AddError("Root Certificate In Vault KV Differs", rootMissingDetail(name,
			fmt.Sprintf("%s holds another root certificate than state (another project with the same Transit key version and kv_path?)", kv.kv.Location(kvRootEntry)),
			"point the provider at the Vault (address, namespace) that holds the project's key store, or give each project its own ca.kv_path."))
		return nil, diags
	}
	return inState, diags
}

// checkTransitKey reads the project's Transit key: it must exist, be
// reachable and still hold the pinned version the root certificate was
// made with. Refresh fails otherwise, as for a local CA whose key is gone.
func (r *projectResource) checkTransitKey(ctx context.Context, ref caRef, name string, cert *x509Cert) (vaultca.KeyInfo, diag.Diagnostics) {
	var diags diag.Diagnostics
	keyPath := ref.Vault.Mount + "/keys/" + ref.Vault.Key
	if r.data == nil {
		diags.AddError("Provider Not Configured", "the provider is not configured; cannot reach Vault for "+keyPath)
		return vaultca.KeyInfo{}, diags
	}
	client, err := r.data.vaultClient(ctx)
	var info vaultca.KeyInfo
	if err == nil {
		info, err = vaultca.ReadKey(ctx, client, ref.Vault.Mount, ref.Vault.Key)
	}
	if errors.Is(err, vaultca.ErrKeyNotFound) {
		diags.AddError("Transit Key Missing", rootMissingDetail(name, "its root CA key, Transit key "+keyPath+", is not in Vault: "+err.Error(),
			"check the provider's Vault address, namespace and token (the key may be in another Vault or namespace); "+
				"restore the key from a Vault snapshot or Transit backup; deleting Transit keys takes deletion_allowed, so a key gone for good was deleted on purpose."))
		return info, diags
	}
	if err != nil {
		diags.AddError("Cannot Reach Transit Key", rootMissingDetail(name, "its root CA key, Transit key "+keyPath+", cannot be read: "+err.Error(),
			"make Vault reachable with a token that may read "+keyPath+" (see the provider's vault settings, VAULT_ADDR and VAULT_TOKEN), then plan again."))
		return info, diags
	}
	pub, ok := info.PublicKeys[ref.Vault.Version]
	if !ok {
		diags.AddError("Transit Key Version Missing", rootMissingDetail(name,
			fmt.Sprintf("Transit key %s no longer has version %d, which the root certificate was made with (versions present: %v)", keyPath, ref.Vault.Version, info.Versions()),
			"restore the key from a Vault snapshot or Transit backup taken before the version was trimmed."))
		return info, diags
	}
	if !pub.Equal(cert.PublicKey) {
		diags.AddError("Root Certificate Does Not Match Transit Key", rootMissingDetail(name,
			fmt.Sprintf("the root certificate is not the one of Transit key %s version %d (another key of the same name?)", keyPath, ref.Vault.Version),
			"point the provider at the Vault (address, namespace) that holds the project's key, or put the project's root certificate back."))
	}
	return info, diags
}

// ModifyPlan puts a new NVFlare line into the planned id, so participants
// and kits plan their updates from known values.
func (r *projectResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() {
		return
	}
	var plan, state projectModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || plan.NVFlareVersion.IsUnknown() || plan.ID.IsUnknown() {
		return
	}
	ref, err := parseProjectID(state.ID.ValueString())
	if err != nil || ref.Line == plan.NVFlareVersion.ValueString() {
		return
	}
	from := ref.Line
	ref.Line = plan.NVFlareVersion.ValueString()
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("id"), ref.ID())...)
	resp.Diagnostics.AddAttributeWarning(path.Root("nvflare_version"), "NVFlare Line Changes",
		fmt.Sprintf("The project moves from NVFlare %s to %s: every startup kit is rewritten for %s (the plan lists them); "+
			"no key or certificate is reissued. Sites must run NVFlare %s with the new kits.", from, ref.Line, ref.Line, ref.Line))
}

// Update changes description and the NVFlare line (and with it the id):
// everything else requires replacement.
func (r *projectResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan projectModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ref, err := parseProjectID(plan.ID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Invalid Project ID", err.Error())
		return
	}
	ref.Line = plan.NVFlareVersion.ValueString()
	plan.ID = types.StringValue(ref.ID())
	// Refresh's reading of the Transit key stays until the next refresh.
	resp.Diagnostics.Append(req.State.GetAttribute(ctx, path.Root("latest_key_version"), &plan.LatestKeyVersion)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func (r *projectResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state projectModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	ref, err := parseProjectID(state.ID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Invalid Project ID", err.Error())
		return
	}
	// A Transit key is left in Vault: deleting keys is Vault's operators' call.
	if ref.KV != nil {
		st, err := r.data.store(ctx, ref)
		if err == nil {
			err = st.(kvStore).RemoveRoot(ctx)
		}
		if err != nil {
			resp.Diagnostics.AddError("Cannot Remove Root Certificate From Vault KV", err.Error())
		}
		return
	}
	if err := ref.store().Destroy(); err != nil {
		resp.Diagnostics.AddError("Cannot Remove Root CA", err.Error())
	}
}

// ImportState takes the CA directory of a local CA, or a project id.
func (r *projectResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	id := req.ID
	if !strings.HasPrefix(id, localRefPrefix) && !strings.HasPrefix(id, vaultRefPrefix) {
		id = caRef{Dir: id, Line: kit.DefaultVersion()}.ID()
	}
	if _, err := parseProjectID(id); err != nil {
		resp.Diagnostics.AddError("Invalid Import ID", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), id)...)
}

// UpgradeState brings state of earlier schema versions to the current one.
func (r *projectResource) UpgradeState(context.Context) map[int64]resource.StateUpgrader {
	return map[int64]resource.StateUpgrader{0: {StateUpgrader: upgradeProjectStateV0}}
}

// upgradeProjectStateV0 adds ca.kv_mount and ca.kv_path (null) to state
// written before the Vault key store. Nothing else changes: a
// vault_transit project of then keeps its id, and with it its root
// certificate and participant keys in ca.dir.
func upgradeProjectStateV0(_ context.Context, req resource.UpgradeStateRequest, resp *resource.UpgradeStateResponse) {
	if req.RawState == nil {
		resp.Diagnostics.AddError("Cannot Upgrade flare_project State", "no prior state")
		return
	}
	var raw map[string]any
	if err := json.Unmarshal(req.RawState.JSON, &raw); err != nil {
		resp.Diagnostics.AddError("Cannot Upgrade flare_project State", fmt.Sprintf("state of schema version 0 is not JSON: %v", err))
		return
	}
	if ca, ok := raw["ca"].(map[string]any); ok {
		for _, k := range []string{"kv_mount", "kv_path"} {
			if _, had := ca[k]; !had {
				ca[k] = nil
			}
		}
	}
	b, err := json.Marshal(raw)
	if err != nil {
		resp.Diagnostics.AddError("Cannot Upgrade flare_project State", err.Error())
		return
	}
	resp.DynamicValue = &tfprotov6.DynamicValue{JSON: b}
}

// validityDaysOf recovers validity_days from a certificate made by pki.ValidityFor.
func validityDaysOf(cert *x509Cert) int64 {
	d := cert.NotAfter.Sub(cert.NotBefore.Add(pki.Backdate)).Hours() / 24
	return int64(math.Round(d))
}
