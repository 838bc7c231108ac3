package provider

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/internal/measure"
)

var (
	_ datasource.DataSource                   = (*snpMeasurementDataSource)(nil)
	_ datasource.DataSourceWithValidateConfig = (*snpMeasurementDataSource)(nil)
)

// snpMeasureCache lets every flare_snp_measurement in one run hash a shared
// firmware, kernel or initrd once (an allow-list over several vCPU counts).
var snpMeasureCache = measure.NewCache(32)

// NewSNPMeasurementDataSource is the flare_snp_measurement factory.
func NewSNPMeasurementDataSource() datasource.DataSource { return &snpMeasurementDataSource{} }

type snpMeasurementDataSource struct{}

type snpMeasurementModel struct {
	OVMF          types.String `tfsdk:"ovmf"`
	Kernel        types.String `tfsdk:"kernel"`
	Initrd        types.String `tfsdk:"initrd"`
	Cmdline       types.String `tfsdk:"cmdline"`
	VCPUs         types.Int64  `tfsdk:"vcpus"`
	VCPUType      types.String `tfsdk:"vcpu_type"`
	GuestFeatures types.Int64  `tfsdk:"guest_features"`
	VMMType       types.String `tfsdk:"vmm_type"`
	Measurement   types.String `tfsdk:"measurement"`
}

// snpInputAttr maps measure.InputError inputs to this data source's attributes.
var snpInputAttr = map[string]string{
	"OVMF": "ovmf", "Kernel": "kernel", "Initrd": "initrd", "Cmdline": "cmdline", "VCPUs": "vcpus",
	"VCPUType": "vcpu_type", "GuestFeatures": "guest_features", "VMM": "vmm_type",
}

func (d *snpMeasurementDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_snp_measurement"
}

func (d *snpMeasurementDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	cpuTypes := measure.VCPUTypes()
	resp.Schema = schema.Schema{
		MarkdownDescription: "Computes the AMD SEV-SNP launch measurement of a QEMU guest ahead of time: the " +
			"`MEASUREMENT` its attestation reports must carry. The result equals what " +
			"[sev-snp-measure](https://github.com/virtee/sev-snp-measure) `--mode snp` prints for the same " +
			"inputs. Everything that enters the measurement is an argument here: the firmware, the " +
			"kernel, initrd and command line of a direct boot, the vCPU count and model, and the SEV features. " +
			"Files are read at every plan, so a changed file shows up as a changed measurement.",
		Attributes: map[string]schema.Attribute{
			"ovmf": schema.StringAttribute{Required: true,
				MarkdownDescription: "Path of the OVMF firmware image QEMU boots with `-bios`. It must carry SEV " +
					"metadata (Debian's `/usr/share/ovmf/OVMF.fd` does; the split `OVMF_CODE_4M.fd` does not). With " +
					"`kernel`, it must be edk2's AmdSev build (`OvmfPkg/AmdSev/AmdSevX64.dsc`, often shipped as " +
					"`OVMF.amdsev.fd`), the only one with a kernel hashes page.",
				Validators: []validator.String{stringvalidator.LengthAtLeast(1)}},
			"kernel": schema.StringAttribute{Optional: true,
				MarkdownDescription: "Path of the kernel QEMU boots with `-kernel`. QEMU then writes the SHA-256 of " +
					"kernel, initrd and command line into the firmware's hashes page, which is measured."},
			"initrd": schema.StringAttribute{Optional: true,
				MarkdownDescription: "Path of the initrd (`-initrd`). Needs `kernel`. Omitted, it is measured as empty.",
				Validators:          []validator.String{stringvalidator.AlsoRequires(path.MatchRoot("kernel"))}},
			"cmdline": schema.StringAttribute{Optional: true,
				MarkdownDescription: "Kernel command line (`-append`), byte for byte as QEMU gets it. Needs `kernel`.",
				Validators:          []validator.String{stringvalidator.AlsoRequires(path.MatchRoot("kernel"))}},
			"vcpus": schema.Int64Attribute{Required: true,
				MarkdownDescription: fmt.Sprintf("Number of vCPUs (`-smp`), 1 to %d: each adds a VMSA page to the measurement.", measure.MaxVCPUs),
				Validators:          []validator.Int64{int64validator.Between(1, measure.MaxVCPUs)}},
			"vcpu_type": schema.StringAttribute{Optional: true,
				MarkdownDescription: "QEMU `-cpu` model; its CPUID signature is in every VMSA. Required with " +
					"`vmm_type = \"QEMU\"`. One of " + quoteList(cpuTypes) + ".",
				Validators: []validator.String{stringvalidator.OneOf(cpuTypes...)}},
			"guest_features": schema.Int64Attribute{Optional: true, Computed: true,
				MarkdownDescription: "The VMSA `SEV_FEATURES` value, default `1` (SNPActive), which is what upstream " +
					"KVM (Linux 6.11+) with QEMU 9.1+ sets. Bit 0 must be set. Use `33` (0x21, SNPActive and " +
					"DebugSwap) for older AMD development kernels that enabled DebugSwap by default.",
				Validators: []validator.Int64{snpActiveBit{}}},
			"vmm_type": schema.StringAttribute{Optional: true, Computed: true,
				MarkdownDescription: "The hypervisor whose initial vCPU state is measured: `QEMU` (default), " +
					"`ec2` or `gce`.",
				Validators: []validator.String{stringvalidator.OneOf(string(measure.VMMQEMU), string(measure.VMMEC2), string(measure.VMMGCE))}},
			"measurement": schema.StringAttribute{Computed: true,
				MarkdownDescription: "The launch measurement: 96 lower-case hex characters (48 bytes, SHA-384). " +
					"Compare it with the report's `MEASUREMENT` (go-sev-guest `validate.Options.Measurement`)."},
		},
	}
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = "`" + s + "`"
	}
	return strings.Join(q, ", ")
}

func (d *snpMeasurementDataSource) ValidateConfig(ctx context.Context, req datasource.ValidateConfigRequest, resp *datasource.ValidateConfigResponse) {
	var m snpMeasurementModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	qemu := m.VMMType.IsNull() || m.VMMType.ValueString() == string(measure.VMMQEMU)
	if qemu && m.VCPUType.IsNull() {
		resp.Diagnostics.AddAttributeError(path.Root("vcpu_type"), "Missing vCPU Type",
			"vcpu_type is required when vmm_type is QEMU: the -cpu model's CPUID signature enters the measurement. "+
				"Set it to the model QEMU runs with, one of: "+strings.Join(measure.VCPUTypes(), ", ")+".")
	}
}

func (d *snpMeasurementDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m snpMeasurementModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if m.GuestFeatures.IsNull() {
		m.GuestFeatures = types.Int64Value(measure.DefaultGuestFeatures)
	}
	if m.VMMType.IsNull() {
		m.VMMType = types.StringValue(string(measure.VMMQEMU))
	}
	opts := measure.Options{
		OVMFPath:      m.OVMF.ValueString(),
		KernelPath:    m.Kernel.ValueString(),
		InitrdPath:    m.Initrd.ValueString(),
		Cmdline:       m.Cmdline.ValueString(),
		VCPUs:         int(m.VCPUs.ValueInt64()),
		VCPUType:      m.VCPUType.ValueString(),
		GuestFeatures: uint64(m.GuestFeatures.ValueInt64()),
		VMM:           measure.VMMType(m.VMMType.ValueString()),
		Cache:         snpMeasureCache,
	}
	if opts.VMM != measure.VMMQEMU {
		opts.VCPUType = "" // EC2 and GCE put a fixed signature in the VMSA.
	}
	digest, err := measure.SNPLaunchDigest(opts)
	if err != nil {
		var ie *measure.InputError
		attr := "ovmf"
		if errors.As(err, &ie) && snpInputAttr[ie.Input] != "" {
			attr = snpInputAttr[ie.Input]
		}
		resp.Diagnostics.AddAttributeError(path.Root(attr), "Cannot Compute SEV-SNP Measurement",
			fmt.Sprintf("%s: %v", attr, err))
		return
	}
	m.Measurement = types.StringValue(hex.EncodeToString(digest[:]))
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// snpActiveBit checks guest_features: SNPActive (bit 0) is set in every
// SNP guest's VMSA, so a value without it cannot match any report.
type snpActiveBit struct{}

var _ validator.Int64 = snpActiveBit{}

func (snpActiveBit) Description(context.Context) string {
	return "must have bit 0 (SNPActive) set"
}
func (v snpActiveBit) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (snpActiveBit) ValidateInt64(_ context.Context, req validator.Int64Request, resp *validator.Int64Response) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if v := req.ConfigValue.ValueInt64(); v < 1 || v&1 == 0 {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid Guest Features",
			fmt.Sprintf("%s is %d (0x%x) but bit 0 (SNPActive) is set in every SEV-SNP guest: use %d (0x%x), "+
				"or 1 for upstream KVM's default.", req.Path, v, v, v|1, v|1))
	}
}
