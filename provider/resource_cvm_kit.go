package provider

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/internal/atomicfile"
	"github.com/flarekit/terraform-provider-flare/internal/cvm"
	"github.com/flarekit/terraform-provider-flare/internal/kit"
	"github.com/flarekit/terraform-provider-flare/internal/measure"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/kbs"
)

var (
	_ resource.ResourceWithModifyPlan     = (*cvmKitResource)(nil)
	_ resource.ResourceWithValidateConfig = (*cvmKitResource)(nil)
)

// NewCVMKitResource is the flare_cvm_kit factory.
func NewCVMKitResource() resource.Resource { return &cvmKitResource{} }

type cvmKitResource struct{ withProviderData }

type cvmKitModel struct {
	ID               types.String `tfsdk:"id"`
	ProjectID        types.String `tfsdk:"project_id"`
	StartupKitDir    types.String `tfsdk:"startup_kit_dir"`
	StartupKitSHA256 types.String `tfsdk:"startup_kit_sha256"`
	OutputDir        types.String `tfsdk:"output_dir"`

	ComputeEnv          types.String `tfsdk:"compute_env"`
	CCCPUMechanism      types.String `tfsdk:"cc_cpu_mechanism"`
	Role                types.String `tfsdk:"role"`
	RootDriveSize       types.Int64  `tfsdk:"root_drive_size"`
	AppLogDriveSize     types.Int64  `tfsdk:"applog_drive_size"`
	UserConfigDriveSize types.Int64  `tfsdk:"user_config_drive_size"`
	UserDataDriveSize   types.Int64  `tfsdk:"user_data_drive_size"`
	DockerArchive       types.String `tfsdk:"docker_archive"`
	UserConfig          types.Map    `tfsdk:"user_config"`
	AllowedPorts        types.List   `tfsdk:"allowed_ports"`
	AllowedOutPorts     types.List   `tfsdk:"allowed_out_ports"`
	HostsEntries        types.Map    `tfsdk:"hosts_entries"`
	CCIssuers           types.List   `tfsdk:"cc_issuers"`
	CheckFrequency      types.Int64  `tfsdk:"check_frequency"`

	VCPUs         types.Int64  `tfsdk:"vcpus"`
	VCPUType      types.String `tfsdk:"vcpu_type"`
	MemoryMiB     types.Int64  `tfsdk:"memory_mib"`
	Firmware      types.String `tfsdk:"firmware"`
	Kernel        types.String `tfsdk:"kernel"`
	Initrd        types.String `tfsdk:"initrd"`
	KernelCmdline types.String `tfsdk:"kernel_cmdline"`
	GuestPolicy   types.String `tfsdk:"guest_policy"`
	GuestFeatures types.String `tfsdk:"guest_features"`
	HostData      types.String `tfsdk:"host_data"`
	EncryptRoot   types.Bool   `tfsdk:"encrypt_root"`
	GuestInit     types.String `tfsdk:"guest_init"`
	KernelModules types.String `tfsdk:"kernel_modules"`
	KeyRelease    types.Object `tfsdk:"key_release"`

	KitDir              types.String `tfsdk:"kit_dir"`
	ArchivePath         types.String `tfsdk:"archive_path"`
	ExpectedMeasurement types.String `tfsdk:"expected_measurement"`
	LaunchManifest      types.String `tfsdk:"launch_manifest"`
	KitSHA256           types.String `tfsdk:"kit_sha256"`
	RootEncrypted       types.Bool   `tfsdk:"root_encrypted"`
	RootKeyFile         types.String `tfsdk:"root_key_file"`
	Notes               types.List   `tfsdk:"notes"`
}

type issuerModel struct {
	ID              types.String `tfsdk:"id"`
	Path            types.String `tfsdk:"path"`
	TokenExpiration types.Int64  `tfsdk:"token_expiration"`
}

func (r *cvmKitResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_cvm_kit"
}

func (r *cvmKitResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	size := func(what string) schema.Int64Attribute {
		return schema.Int64Attribute{Required: true, Validators: []validator.Int64{int64validator.AtLeast(1)},
			MarkdownDescription: "Size in GB (GiB) of the " + what + " drive."}
	}
	port := listPortsValidator()
	resp.Schema = schema.Schema{
		MarkdownDescription: "Builds the confidential-VM kit a site launches for one participant from its startup kit " +
			"and NVFlare's confidential-computing settings (the keys of the CC deployment guide): drive images " +
			"(root from a `docker save` archive, user_config holding the startup kit, user_data, applog), " +
			"firmware, kernel and initrd, `launch.json` for flare-agent, `launch_vm.sh` for QEMU 9.1+, README.txt, " +
			"and the expected SEV-SNP launch measurement (computed as `sev-snp-measure` does, at plan time). " +
			"Written to `<output_dir>/<participant>/cvm_<id>/` with `<participant>.tgz` beside it.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, MarkdownDescription: "The CVM kit directory (its name follows the inputs, so any change moves it)."},
			"project_id": schema.StringAttribute{Required: true,
				MarkdownDescription: "`flare_project.<name>.id`: the project whose root CA signs the kit (`signature.json` over " +
					"`launch.json`, which holds the SHA-256 of every drive and boot file, and the script and README). " +
					"flare-agent launches only kits that verify against its project's root. The startup kit must be of this project.",
				Validators: []validator.String{projectIDCheck}},
			"startup_kit_dir": schema.StringAttribute{Required: true,
				MarkdownDescription: "`flare_startup_kit.<name>.kit_dir`: the participant's startup kit, copied to `nvflare/` on the user_config drive."},
			"startup_kit_sha256": schema.StringAttribute{Required: true,
				MarkdownDescription: "`flare_startup_kit.<name>.kit_sha256`, so a rewritten startup kit rebuilds this kit in the same apply."},
			"output_dir": schema.StringAttribute{Required: true, PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
				MarkdownDescription: "Directory for CVM kits; this one goes to `<output_dir>/<participant>/cvm_<id>/`."},

			"compute_env": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString(cvm.ComputeEnvOnPremCVM),
				Validators: []validator.String{stringvalidator.OneOf(cvm.ComputeEnvOnPremCVM)}, MarkdownDescription: "`onprem_cvm`."},
			"cc_cpu_mechanism": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString(cvm.CPUMechanismSNP),
				Validators: []validator.String{stringvalidator.OneOf(cvm.CPUMechanismSNP)}, MarkdownDescription: "`amd_sev_snp`."},
			"role": schema.StringAttribute{Required: true, Validators: []validator.String{stringvalidator.OneOf("server", "client")},
				MarkdownDescription: "`server` or `client`: what the CVM runs."},
			"root_drive_size":        size("root"),
			"applog_drive_size":      size("application log"),
			"user_config_drive_size": size("user_config"),
			"user_data_drive_size":   size("user_data"),
			"docker_archive": schema.StringAttribute{Required: true,
				MarkdownDescription: "A `docker save` archive (tar or tar.gz) whose layers are flattened into the root drive; no Docker daemon is needed."},
			"user_config": schema.MapAttribute{Optional: true, ElementType: types.StringType,
				MarkdownDescription: "Files to put on the user_config drive: key → host path, mounted in the guest at `/user_config/<key>`. `nvflare` is reserved for the startup kit."},
			"allowed_ports":     schema.ListAttribute{Optional: true, ElementType: types.Int64Type, Validators: port, MarkdownDescription: "Inbound ports the guest firewall opens."},
			"allowed_out_ports": schema.ListAttribute{Optional: true, ElementType: types.Int64Type, Validators: port, MarkdownDescription: "Outbound ports the guest may connect to."},
			"hosts_entries": schema.MapAttribute{Optional: true, ElementType: types.StringType,
				MarkdownDescription: "Host name → address entries for the guest's /etc/hosts."},
			"cc_issuers": schema.ListNestedAttribute{Optional: true,
				MarkdownDescription: "Attestation token issuers (`id`, `path` of the Python class, `token_expiration` seconds; it must be below `check_frequency`), recorded in `launch.json`. " +
					"NVFlare in the CVM runs the issuers of its startup kit's CCManager (`flare_startup_kit.cc`); apply warns when the two differ.",
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"id":               schema.StringAttribute{Required: true, MarkdownDescription: "Issuer id."},
					"path":             schema.StringAttribute{Required: true, MarkdownDescription: "Python class path of the issuer."},
					"token_expiration": schema.Int64Attribute{Required: true, Validators: []validator.Int64{int64validator.AtLeast(1)}, MarkdownDescription: "Token lifetime in seconds."},
				}},
			},
			"check_frequency": schema.Int64Attribute{Optional: true, Computed: true, Default: int64default.StaticInt64(cvm.DefaultCheckFrequency),
				Validators:          []validator.Int64{int64validator.AtLeast(1)},
				MarkdownDescription: fmt.Sprintf("`cc_attestation.check_frequency`: seconds between attestation checks. Defaults to %d.", cvm.DefaultCheckFrequency)},

			"vcpus": schema.Int64Attribute{Required: true, Validators: []validator.Int64{int64validator.Between(1, 512)}, MarkdownDescription: "Virtual CPUs; part of the measurement."},
			"vcpu_type": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString(cvm.DefaultVCPUType),
				Validators:          []validator.String{stringvalidator.OneOf(measure.VCPUTypes()...)},
				MarkdownDescription: "QEMU CPU model, one sev-snp-measure knows (e.g. `EPYC-v4`, `EPYC-Milan`, `EPYC-Genoa`); part of the measurement."},
			"memory_mib": schema.Int64Attribute{Required: true, Validators: []validator.Int64{int64validator.AtLeast(512)}, MarkdownDescription: "Guest memory in MiB."},
			"firmware":   schema.StringAttribute{Required: true, MarkdownDescription: "OVMF built for SEV-SNP with kernel hashes (AmdSev build); copied into the kit."},
			"kernel":     schema.StringAttribute{Required: true, MarkdownDescription: "Guest kernel; copied into the kit and measured."},
			"initrd": schema.StringAttribute{Optional: true, MarkdownDescription: "An initrd of your own; copied into the kit and measured. " +
				"Unset, the kit gets its own: `flare-init` (`guest_init`) as `/init`, the measured guest settings (firewall, hosts, key broker, drives) " +
				"and the kernel modules it needs; it attests to `key_release`, opens the encrypted root and runs the image."},
			"kernel_cmdline": schema.StringAttribute{Optional: true, Computed: true,
				MarkdownDescription: "Kernel command line; measured. Defaults to `" + cvm.DefaultKernelCmdline + "` (with an encrypted root: `" + cvm.DefaultKernelCmdlineEncrypted + "`)."},
			"guest_policy": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString(fmt.Sprintf("0x%x", cvm.DefaultGuestPolicy)),
				Validators:          []validator.String{hexNumber},
				MarkdownDescription: fmt.Sprintf("SNP guest policy as a hex number. Defaults to `0x%x`.", cvm.DefaultGuestPolicy)},
			"guest_features": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString(fmt.Sprintf("0x%x", cvm.DefaultGuestFeatures)),
				Validators:          []validator.String{hexNumber},
				MarkdownDescription: "SEV features of the guest's VMSA (QEMU/KVM's value; `0x1` for upstream KVM, `0x21` with debug-swap); part of the measurement."},
			"host_data": schema.StringAttribute{Optional: true,
				Validators:          []validator.String{stringvalidator.RegexMatches(regexp.MustCompile(`^[0-9a-fA-F]{64}$`), "must be 64 hex digits (32 bytes)")},
				MarkdownDescription: "32 bytes (64 hex digits) the host binds into every attestation report."},
			"encrypt_root": schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(true),
				MarkdownDescription: "Write the root drive, which carries the startup kit with the participant's private key, as a LUKS container " +
					"(made by qemu-img, no privileges needed). Its key goes to the `key_release` store (or `root_key_file`, 0600), never to state. " +
					"A qemu-img without the luks driver is an error, never a plaintext root. Defaults to `true`; `false` builds a root the host can read, and the plan says so."},
			"guest_init": schema.StringAttribute{Optional: true, Computed: true,
				MarkdownDescription: "The static `flare-init` binary the kit's own initrd runs as `/init` (when `initrd` is not set). " +
					"Defaults to `$FLARE_GUEST_INIT`, else `flare-init` beside the provider's executable (`make flare-init`)."},
			"kernel_modules": schema.StringAttribute{Optional: true,
				MarkdownDescription: "The kernel's module folder (`/lib/modules/<version>` with `modules.dep`) for the kit's own initrd. " +
					"Defaults to `<root>/lib/modules/<version>` for a `kernel` at `<root>/boot/vmlinuz-<version>` " +
					"(`make guest-kernel` unpacks Debian's 6.12 cloud kernel, which has the sev-guest driver, that way)."},
			"key_release": keyReleaseSchema(),

			"kit_dir":              schema.StringAttribute{Computed: true, MarkdownDescription: "The CVM kit directory, `<output_dir>/<participant>/cvm_<id>`; the id is a hash of the inputs."},
			"archive_path":         schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "`<output_dir>/<participant>/<participant>.tgz`."},
			"expected_measurement": schema.StringAttribute{Computed: true, MarkdownDescription: "The SEV-SNP launch digest (96 hex digits) the guest must report, computed at plan time."},
			"launch_manifest":      schema.StringAttribute{Computed: true, MarkdownDescription: "`launch.json`, the manifest flare-agent launches from."},
			"kit_sha256":           schema.StringAttribute{Computed: true, MarkdownDescription: "Digest of the kit on disk; changes when a file is edited outside Terraform."},
			"root_encrypted":       schema.BoolAttribute{Computed: true, MarkdownDescription: "Whether the root drive is encrypted."},
			"root_key_file":        schema.StringAttribute{Computed: true, MarkdownDescription: "Path of the root drive's LUKS key (0600), when encrypted."},
			"notes":                schema.ListAttribute{Computed: true, ElementType: types.StringType, MarkdownDescription: "What the builder wants a human to know (also in README.txt), e.g. that the root drive is not encrypted."},
		},
	}
}

var hexNumber = stringCheck{summary: "Invalid Hex Number", desc: "a hex number like 0x30000", check: func(s string) error {
	_, err := parseHex(s)
	return err
}}

func parseHex(s string) (uint64, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(s), "0x"), 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a hex number like 0x30000", s)
	}
	return v, nil
}

// config converts the model to the builder's configuration.
func (m *cvmKitModel) config(ctx context.Context) (cvm.Config, diag.Diagnostics) {
	var diags diag.Diagnostics
	c := cvm.Config{
		ComputeEnv: m.ComputeEnv.ValueString(), CCCPUMechanism: m.CCCPUMechanism.ValueString(), Role: m.Role.ValueString(),
		RootDriveSizeGB: int(m.RootDriveSize.ValueInt64()), AppLogDriveSizeGB: int(m.AppLogDriveSize.ValueInt64()),
		UserConfigDriveSizeGB: int(m.UserConfigDriveSize.ValueInt64()), UserDataDriveSizeGB: int(m.UserDataDriveSize.ValueInt64()),
		DockerArchive: m.DockerArchive.ValueString(),
		CCAttestation: &cvm.Attestation{CheckFrequency: int(m.CheckFrequency.ValueInt64())},
		VCPUs:         int(m.VCPUs.ValueInt64()), VCPUType: m.VCPUType.ValueString(), MemoryMiB: int(m.MemoryMiB.ValueInt64()),
		Firmware: m.Firmware.ValueString(), Kernel: m.Kernel.ValueString(), Initrd: m.Initrd.ValueString(),
		KernelCmdline: m.KernelCmdline.ValueString(), HostData: strings.ToLower(m.HostData.ValueString()),
		EncryptRoot: m.EncryptRoot.IsNull() || m.EncryptRoot.ValueBool(), // null: the default, true
		GuestInit:   m.GuestInit.ValueString(), KernelModules: m.KernelModules.ValueString(),
	}
	if c.GuestInit == "" && c.Initrd == "" {
		c.GuestInit = defaultGuestInit()
	}
	kr, d := m.keyRelease(ctx)
	diags.Append(d...)
	c.KeyRelease = kr.guest()
	c.GuestPolicy, _ = parseHex(m.GuestPolicy.ValueString())
	c.GuestFeatures, _ = parseHex(m.GuestFeatures.ValueString())
	diags.Append(m.UserConfig.ElementsAs(ctx, &c.UserConfig, true)...)
	diags.Append(m.HostsEntries.ElementsAs(ctx, &c.HostsEntries, true)...)
	var in, out []int64
	diags.Append(m.AllowedPorts.ElementsAs(ctx, &in, true)...)
	diags.Append(m.AllowedOutPorts.ElementsAs(ctx, &out, true)...)
	for _, p := range in {
		c.AllowedPorts = append(c.AllowedPorts, int(p))
	}
	for _, p := range out {
		c.AllowedOutPorts = append(c.AllowedOutPorts, int(p))
	}
	var issuers []issuerModel
	diags.Append(m.CCIssuers.ElementsAs(ctx, &issuers, true)...)
	for _, is := range issuers {
		c.CCIssuers = append(c.CCIssuers, cvm.Issuer{ID: is.ID.ValueString(), Path: is.Path.ValueString(), TokenExpiration: int(is.TokenExpiration.ValueInt64())})
	}
	return c.WithDefaults(), diags
}

// fieldPath turns the builder's field names ("cc_issuers[0].token_expiration",
// "user_config.nvflare", "allowed_ports[2]") into attribute paths.
func fieldPath(field string) path.Path {
	field = strings.TrimPrefix(field, "cc_attestation.")
	name, rest, _ := strings.Cut(field, ".")
	p := path.Root(name)
	if i := strings.Index(name, "["); i > 0 {
		idx, _ := strconv.Atoi(strings.TrimSuffix(name[i+1:], "]"))
		p = path.Root(name[:i]).AtListIndex(idx)
	}
	if rest != "" {
		if strings.HasPrefix(name, "cc_issuers") {
			return p.AtName(rest)
		}
		return p.AtMapKey(rest)
	}
	return p
}

// ValidateConfig runs the builder's own checks (files readable, docker
// archive valid, token_expiration < check_frequency, ...) at plan time.
func (r *cvmKitResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m cvmKitModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() || !m.ccKnown() {
		return
	}
	c, diags := m.config(ctx)
	resp.Diagnostics.Append(diags...)
	if diags.HasError() {
		return
	}
	for _, fe := range c.Validate() {
		resp.Diagnostics.AddAttributeError(fieldPath(fe.Field), "Invalid CVM Configuration", fe.Error())
	}
}

// ModifyPlan computes the expected measurement at plan time, so a changed
// kernel, cmdline or vCPU count shows in the plan, and plans a rebuild
// when the kit on disk is not what apply wrote.
func (r *cvmKitResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() {
		return
	}
	var plan cvmKitModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, participant, known := plan.measuredConfig(ctx)
	var cfgInit types.String
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("guest_init"), &cfgInit)...)
	if cfgInit.IsUnknown() {
		known = false // measuredConfig read it as unset
	} else if cfgInit.IsNull() {
		v := types.StringUnknown()
		if !plan.Initrd.IsUnknown() {
			v = guestInitValue(plan.Initrd, defaultGuestInit())
		}
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("guest_init"), v)...)
	}
	var cfgResource types.String
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("key_release").AtName("resource"), &cfgResource)...)
	if kr, _ := plan.keyRelease(ctx); kr != nil && cfgResource.IsNull() {
		v := types.StringUnknown()
		if participant != "" {
			v = types.StringValue(cvm.DefaultKeyResource(participant))
		}
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("key_release").AtName("resource"), v)...)
	}
	if !plan.EncryptRoot.ValueBool() && !plan.EncryptRoot.IsUnknown() {
		resp.Diagnostics.AddAttributeWarning(path.Root("encrypt_root"), "Plaintext Root Drive",
			"encrypt_root = false: the root drive carries the startup kit with the participant's private key in plaintext, "+
				"so whoever holds the kit or the site host can read the key and change the image. Set encrypt_root = true with key_release.")
	}
	if known {
		if plan.KernelCmdline.IsUnknown() {
			resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("kernel_cmdline"), c.KernelCmdline)...)
		}
		digest, err := measureConfig(c, participant)
		if err != nil {
			resp.Diagnostics.AddAttributeError(measureErrPath(err), "Cannot Compute SEV-SNP Measurement", err.Error())
			return
		}
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("expected_measurement"), digest)...)
	}
	if req.State.Raw.IsNull() {
		return
	}
	var state cvmKitModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	written, diags := req.Private.GetKey(ctx, privateWrittenDigest)
	resp.Diagnostics.Append(diags...)
	var want string
	if written != nil && json.Unmarshal(written, &want) == nil && want != state.KitSHA256.ValueString() {
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("kit_sha256"), types.StringUnknown())...)
		// A rebuild after the broker lost the key makes a new key, so a new
		// root drive and launch.json.
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("launch_manifest"), types.StringUnknown())...)
	}
}

// ccKnown reports whether every confidential-computing setting is known;
// the startup kit (usually known only after apply) is not one of them.
func (m *cvmKitModel) ccKnown() bool {
	for _, v := range []attr.Value{m.ComputeEnv, m.CCCPUMechanism, m.Role, m.RootDriveSize, m.AppLogDriveSize,
		m.UserConfigDriveSize, m.UserDataDriveSize, m.DockerArchive, m.UserConfig, m.AllowedPorts, m.AllowedOutPorts,
		m.HostsEntries, m.CCIssuers, m.CheckFrequency, m.VCPUs, m.VCPUType, m.MemoryMiB, m.Firmware, m.Kernel,
		m.Initrd, m.KernelCmdline, m.GuestPolicy, m.GuestFeatures, m.HostData, m.EncryptRoot, m.GuestInit, m.KernelModules, m.KeyRelease} {
		if v.IsUnknown() {
			return false
		}
	}
	return true
}

// measuredConfig is the part of the configuration the launch digest depends
// on, with defaults applied; known is false while any of it is unknown.
// With the kit's own initrd that is every guest setting and the
// participant (the initrd carries them).
func (m *cvmKitModel) measuredConfig(ctx context.Context) (cvm.Config, string, bool) {
	participant := ""
	if !m.StartupKitDir.IsUnknown() && !m.StartupKitDir.IsNull() {
		participant = filepath.Base(filepath.Clean(m.StartupKitDir.ValueString()))
	}
	if m.Initrd.IsNull() {
		// Computed attributes are unknown in a plan that changes the kit;
		// unset in the configuration, they take their defaults.
		mm := *m
		if mm.KernelCmdline.IsUnknown() {
			mm.KernelCmdline = types.StringNull()
		}
		if mm.GuestInit.IsUnknown() {
			mm.GuestInit = types.StringNull()
		}
		if !mm.ccKnown() || participant == "" {
			return cvm.Config{}, participant, false
		}
		c, d := mm.config(ctx)
		return c, participant, !d.HasError()
	}
	// kernel_cmdline is Optional+Computed: unknown in the plan means unset,
	// and WithDefaults fills it.
	for _, v := range []attr.Value{m.Firmware, m.Kernel, m.Initrd, m.VCPUs, m.VCPUType, m.GuestFeatures, m.EncryptRoot} {
		if v.IsUnknown() {
			return cvm.Config{}, participant, false
		}
	}
	features, _ := parseHex(m.GuestFeatures.ValueString())
	c := cvm.Config{
		Firmware: m.Firmware.ValueString(), Kernel: m.Kernel.ValueString(), Initrd: m.Initrd.ValueString(),
		KernelCmdline: m.KernelCmdline.ValueString(), VCPUs: int(m.VCPUs.ValueInt64()), VCPUType: m.VCPUType.ValueString(),
		GuestFeatures: features, EncryptRoot: m.EncryptRoot.ValueBool(),
	}
	return c.WithDefaults(), participant, true
}

// guestInitValue is guest_init's planned value: the binary used for the
// kit's own initrd, null with an initrd of the caller's.
func guestInitValue(initrd types.String, guestInit string) types.String {
	if !initrd.IsNull() || guestInit == "" {
		return types.StringNull()
	}
	return types.StringValue(guestInit)
}

var measureCache = measure.NewCache(0)

func measureConfig(c cvm.Config, participant string) (string, error) {
	c, err := c.WithOwnInitrd(participant, initrdCache())
	if err != nil {
		return "", err
	}
	in := c.MeasureInput()
	d, err := measure.SNPLaunchDigest(measure.Options{
		OVMFPath: in.Firmware, KernelPath: in.Kernel, InitrdPath: in.Initrd, Cmdline: in.Cmdline,
		VCPUs: in.VCPUs, VCPUType: in.VCPUType, GuestFeatures: in.GuestFeatures, Cache: measureCache,
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(d[:]), nil
}

// measureErrPath names the attribute a measurement error is about.
func measureErrPath(err error) path.Path {
	var ie *measure.InputError
	if errors.As(err, &ie) {
		if name, ok := map[string]string{"OVMF": "firmware", "Kernel": "kernel", "Initrd": "initrd", "Cmdline": "kernel_cmdline",
			"VCPUs": "vcpus", "VCPUType": "vcpu_type", "GuestFeatures": "guest_features"}[ie.Input]; ok {
			return path.Root(name)
		}
	}
	return path.Root("firmware")
}

func (r *cvmKitResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan cvmKitModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	r.build(ctx, &plan, nil, resp.Private, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func (r *cvmKitResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state cvmKitModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	r.build(ctx, &plan, &state, resp.Private, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func (r *cvmKitResource) build(ctx context.Context, m *cvmKitModel, old *cvmKitModel, priv privateState, diags *diag.Diagnostics) {
	kitDir := m.StartupKitDir.ValueString()
	got, err := kit.DigestDir(kitDir)
	if err != nil {
		diags.AddAttributeError(path.Root("startup_kit_dir"), "Cannot Read Startup Kit", err.Error())
		return
	}
	if got != m.StartupKitSHA256.ValueString() {
		diags.AddAttributeError(path.Root("startup_kit_sha256"), "Startup Kit Changed",
			fmt.Sprintf("startup_kit_sha256: %s no longer has the content this plan was made for; run plan again", kitDir))
		return
	}
	c, d := m.config(ctx)
	diags.Append(d...)
	if diags.HasError() {
		return
	}
	ca, _, err := r.ca(ctx, m.ProjectID.ValueString())
	if err != nil {
		diags.AddAttributeError(path.Root("project_id"), "Cannot Load Project CA", err.Error())
		return
	}
	if err := sameProject(kitDir, ca.Cert); err != nil {
		diags.AddAttributeError(path.Root("startup_kit_dir"), "Startup Kit of Another Project", err.Error())
		return
	}
	participant := filepath.Base(filepath.Clean(kitDir))
	if w := ccIssuersMismatch(kitDir, c.CCIssuers); w != "" {
		diags.AddAttributeWarning(path.Root("cc_issuers"), "CC Issuers Differ From the Startup Kit's", w)
	}
	kr, d := m.keyRelease(ctx)
	diags.Append(d...)
	store, err := kr.store(ctx, r.data)
	if err != nil {
		diags.AddAttributeError(path.Root("key_release"), "Cannot Open the Key Broker's Store", err.Error())
		return
	}
	var keyPath kbs.ResourcePath
	if kr != nil {
		if keyPath, err = kr.resourcePath(participant); err != nil {
			diags.AddAttributeError(path.Root("key_release").AtName("resource"), "Invalid Key Resource", err.Error())
			return
		}
		if c.KeyRelease != nil {
			c.KeyRelease.Resource = keyPath.String()
		}
	}
	measurement, err := measureConfig(c, participant)
	if err != nil {
		diags.AddAttributeError(measureErrPath(err), "Cannot Compute SEV-SNP Measurement", err.Error())
		return
	}
	in := cvm.BuildInput{
		Config: c, StartupKitDir: kitDir, OutputDir: m.OutputDir.ValueString(), ParticipantName: participant,
		ExpectedMeasurement: measurement, Signer: ca.Signer,
	}
	keyFile := filepath.Join(m.OutputDir.ValueString(), participant, "cvm_root.key")
	if c.EncryptRoot {
		// Reuse the key of an earlier build so the same inputs give the same disk.
		if store != nil {
			if b, err := store.GetSecret(ctx, keyPath); err == nil {
				in.RootKey = b
			}
		} else if b, err := os.ReadFile(keyFile); err == nil {
			in.RootKey = []byte(strings.TrimSpace(string(b)))
		}
	}
	res, err := cvm.Build(ctx, in)
	if err != nil {
		var ve cvm.ValidationError
		if errors.As(err, &ve) {
			for _, fe := range ve {
				diags.AddAttributeError(fieldPath(fe.Field), "Invalid CVM Configuration", fe.Error())
			}
			return
		}
		diags.AddError("Cannot Build CVM Kit", err.Error())
		return
	}
	m.RootKeyFile = types.StringNull()
	switch {
	case res.RootEncrypted && store != nil:
		// The key straight to the broker's store, never to disk here; then
		// the rule: only this kit's measurement gets it.
		if err := store.PutSecret(ctx, keyPath, res.RootKey); err != nil {
			diags.AddAttributeError(path.Root("key_release"), "Cannot Store the Root Key", err.Error())
			return
		}
		if err := store.PutPolicy(ctx, keyPath, kbs.Policy{Measurements: []string{measurement}, HostData: c.HostData}); err != nil {
			diags.AddAttributeError(path.Root("key_release"), "Cannot Write the Key Broker's Rule", err.Error())
			return
		}
		os.Remove(keyFile) // from a build before key_release was set
	case res.RootEncrypted:
		if err := atomicfile.Write(keyFile, append(res.RootKey, '\n'), 0o600); err != nil {
			diags.AddError("Cannot Save Root Drive Key", err.Error())
			return
		}
		m.RootKeyFile = types.StringValue(keyFile)
	}
	clear(res.RootKey)
	if m.GuestInit.IsNull() || m.GuestInit.IsUnknown() {
		m.GuestInit = guestInitValue(m.Initrd, c.GuestInit)
	}
	if kr != nil {
		kr.Resource = types.StringValue(keyPath.String())
		o, d := types.ObjectValueFrom(ctx, keyReleaseAttrTypes, kr)
		diags.Append(d...)
		m.KeyRelease = o
	}
	if old != nil && old.KitDir.ValueString() != res.Dir {
		_ = os.RemoveAll(old.KitDir.ValueString()) // inputs changed: the old cvm_<id> is stale
	}
	manifest, _ := json.Marshal(res.Manifest)
	notes, d := types.ListValueFrom(ctx, types.StringType, res.Notes)
	diags.Append(d...)
	m.ID, m.KitDir, m.ArchivePath = types.StringValue(res.Dir), types.StringValue(res.Dir), types.StringValue(res.Archive)
	m.LaunchManifest, m.KitSHA256, m.Notes = types.StringValue(string(manifest)), types.StringValue(res.Digest), notes
	m.RootEncrypted, m.KernelCmdline = types.BoolValue(res.RootEncrypted), types.StringValue(c.KernelCmdline)
	m.ExpectedMeasurement = types.StringValue(measurement)
	b, _ := json.Marshal(res.Digest)
	diags.Append(priv.SetKey(ctx, privateWrittenDigest, b)...)
}

func (r *cvmKitResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state cvmKitModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	digest, err := kit.DigestTree(state.KitDir.ValueString())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		digest = "absent"
	case err != nil:
		resp.Diagnostics.AddError("Cannot Read CVM Kit", err.Error())
		return
	}
	if _, err := os.Stat(state.ArchivePath.ValueString()); errors.Is(err, fs.ErrNotExist) {
		digest += "+archive-absent"
	}
	// The broker's copy is part of the kit: without the key, or with a rule
	// for another measurement, the CVM cannot boot. The plan rebuilds it.
	if why := r.keyReleaseDrift(ctx, &state); why != "" {
		digest += "+" + why
	}
	state.KitSHA256 = types.StringValue(digest)
	resp.Diagnostics.Append(resp.State.Set(ctx, state)...)
}

func (r *cvmKitResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state cvmKitModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if kr, d := state.keyRelease(ctx); kr != nil && !d.HasError() {
		store, err := kr.store(ctx, r.data)
		if err == nil && store != nil {
			var p kbs.ResourcePath
			if p, err = kr.resourcePath(filepath.Base(filepath.Clean(state.StartupKitDir.ValueString()))); err == nil {
				if err = store.DeleteSecret(ctx, p); err == nil {
					err = store.DeletePolicy(ctx, p)
				}
			}
		}
		if err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("key_release"), "Cannot Remove the Root Key from the Key Broker", err.Error())
			return
		}
	}
	for _, p := range []string{state.KitDir.ValueString(), state.ArchivePath.ValueString(), state.RootKeyFile.ValueString()} {
		if p == "" {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			resp.Diagnostics.AddError("Cannot Remove CVM Kit", err.Error())
		}
	}
	os.Remove(filepath.Dir(state.KitDir.ValueString())) // the participant folder, if empty
}

// ccIssuersMismatch compares cc_issuers (recorded in launch.json) with the
// issuers the CVM's NVFlare will run: those of the startup kit's CCManager
// (flare_startup_kit.cc). "" when they agree.
func ccIssuersMismatch(kitDir string, issuers []cvm.Issuer) string {
	var want []string
	for _, is := range issuers {
		want = append(want, is.ID)
	}
	got, _ := kit.CCIssuerIDs(kitDir) // an unreadable file reads as no CC, and warns
	slices.Sort(want)
	slices.Sort(got)
	if slices.Equal(want, got) {
		return ""
	}
	if len(got) == 0 {
		return fmt.Sprintf("cc_issuers names %v, but the startup kit has no CC configuration, so NVFlare in the CVM runs no attestation "+
			"checks: set cc on its flare_startup_kit (the issuers NVFlare runs), or drop cc_issuers here", want)
	}
	return fmt.Sprintf("cc_issuers names %v; NVFlare in the CVM runs the startup kit's %v (flare_startup_kit.cc), which launch.json should record: make them the same", want, got)
}

// keyReleaseDrift says what is missing at the broker's store for the kit
// in state: "" when the key and the rule for its measurement are there (or
// the kit has no store).
func (r *cvmKitResource) keyReleaseDrift(ctx context.Context, state *cvmKitModel) string {
	kr, d := state.keyRelease(ctx)
	if kr == nil || d.HasError() || !state.RootEncrypted.ValueBool() {
		return ""
	}
	store, err := kr.store(ctx, r.data)
	if err != nil || store == nil {
		return ""
	}
	p, err := kr.resourcePath(filepath.Base(filepath.Clean(state.StartupKitDir.ValueString())))
	if err != nil {
		return ""
	}
	if _, err := store.GetSecret(ctx, p); errors.Is(err, kbs.ErrNotFound) {
		return "broker-key-absent"
	}
	pol, err := store.GetPolicy(ctx, p)
	if errors.Is(err, kbs.ErrNotFound) {
		return "broker-rule-absent"
	}
	if err == nil && !slices.Contains(pol.Measurements, state.ExpectedMeasurement.ValueString()) {
		return "broker-rule-other-measurement"
	}
	return ""
}

// sameProject checks that the startup kit trusts root: its rootCA.pem is
// the project's root certificate.
func sameProject(kitDir string, root *x509Cert) error {
	b, err := os.ReadFile(filepath.Join(kitDir, "startup", "rootCA.pem"))
	if err != nil {
		return err
	}
	got, err := pki.ParseCertPEM(b)
	if err != nil {
		return fmt.Errorf("%s/startup/rootCA.pem: %w", kitDir, err)
	}
	if !got.Equal(root) {
		return fmt.Errorf("%s was made by project %q, not by project_id's %q: a CVM kit is signed by the root its startup kit trusts",
			kitDir, got.Subject.CommonName, root.Subject.CommonName)
	}
	return nil
}

func listPortsValidator() []validator.List {
	return []validator.List{listvalidator.ValueInt64sAre(int64validator.Between(1, 65535))}
}
