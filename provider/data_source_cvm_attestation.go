package provider

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/client"
	"github.com/flarekit/terraform-provider-flare/internal/attest"
	"github.com/flarekit/terraform-provider-flare/internal/cvm"
)

var _ datasource.DataSource = (*cvmAttestationDataSource)(nil)

// NewCVMAttestationDataSource is the flare_cvm_attestation factory.
func NewCVMAttestationDataSource() datasource.DataSource { return &cvmAttestationDataSource{} }

type cvmAttestationDataSource struct{}

type cvmAttestationModel struct {
	AgentURL            types.String `tfsdk:"agent_url"`
	AuthKitDir          types.String `tfsdk:"auth_kit_dir"`
	KitDir              types.String `tfsdk:"kit_dir"`
	CVMID               types.String `tfsdk:"cvm_id"`
	Nonce               types.String `tfsdk:"nonce"`
	ExpectedMeasurement types.String `tfsdk:"expected_measurement"`
	AllowSimulated      types.Bool   `tfsdk:"allow_simulated"`
	RequireVerified     types.Bool   `tfsdk:"require_verified"`
	MinimumTCB          types.String `tfsdk:"minimum_tcb"`
	VCEKCacheDir        types.String `tfsdk:"vcek_cache_dir"`

	Verified      types.Bool   `tfsdk:"verified"`
	Reasons       types.List   `tfsdk:"reasons"`
	AgentVerified types.Bool   `tfsdk:"agent_verified"`
	Simulated     types.Bool   `tfsdk:"simulated"`
	Mode          types.String `tfsdk:"mode"`
	Measurement   types.String `tfsdk:"measurement"`
	Policy        types.String `tfsdk:"policy"`
	PolicyDebug   types.Bool   `tfsdk:"policy_debug"`
	HostData      types.String `tfsdk:"host_data"`
	ReportData    types.String `tfsdk:"report_data"`
	ChipID        types.String `tfsdk:"chip_id"`
	GuestKey      types.String `tfsdk:"guest_key"`
	ReportVersion types.Int64  `tfsdk:"report_version"`
	VMPL          types.Int64  `tfsdk:"vmpl"`
	GuestSVN      types.Int64  `tfsdk:"guest_svn"`
	ProductLine   types.String `tfsdk:"product_line"`
	Firmware      types.String `tfsdk:"firmware"`
	SigningKey    types.String `tfsdk:"signing_key"`
	VCEKSource    types.String `tfsdk:"vcek_source"`
	TCB           types.Object `tfsdk:"tcb"`
	Evidence      types.String `tfsdk:"evidence"`
	AttestedAt    types.String `tfsdk:"attested_at"`
}

var tcbAttrTypes = map[string]attr.Type{
	"current": types.StringType, "reported": types.StringType, "committed": types.StringType, "launch": types.StringType,
	"bl_spl": types.Int64Type, "tee_spl": types.Int64Type, "snp_spl": types.Int64Type, "ucode_spl": types.Int64Type,
}

var measurementHex = stringvalidator.RegexMatches(regexp.MustCompile(`^[0-9a-fA-F]{96}$`), "must be 96 hex digits (48 bytes, SHA-384)")

func (d *cvmAttestationDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_cvm_attestation"
}

func (d *cvmAttestationDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	str := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, MarkdownDescription: desc}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "Asks a site's flare-agent for a fresh SEV-SNP attestation report of a running CVM and " +
			"verifies it **here**, not on the agent's word: the report's signature and VCEK chain to AMD's roots " +
			"(go-sev-guest verify, offline), and its measurement, guest policy and host data against the CVM kit " +
			"Terraform built, and REPORT_DATA = SHA-512(nonce ‖ guest key) against the nonce sent. " +
			"A report that fails a check is an error naming the reasons, so nothing that depends on the data " +
			"source goes ahead (`require_verified`, default true); with `require_verified = false` the read only " +
			"warns, `verified` is false and `reasons` says why, for a `postcondition` of your own. Reports of CVMs " +
			"the agent runs in its simulated mode (no SEV-SNP on the host) come from a test device and a fake AMD " +
			"chain; they are refused unless `allow_simulated` is set, which itself is refused unless the " +
			"environment variable `" + AllowSimulatedEnv + "=1` is set too (tests only); then `simulated` is true.",
		Attributes: map[string]schema.Attribute{
			"agent_url": schema.StringAttribute{Required: true, Validators: []validator.String{agentURLCheck},
				MarkdownDescription: "The site's flare-agent, `https://host:port`. Its certificate must be the site's " +
					"(the CVM kit's participant) from this project's CA."},
			"auth_kit_dir": schema.StringAttribute{Required: true, Validators: []validator.String{authKitCheck},
				MarkdownDescription: "A startup kit of the project (`flare_startup_kit.<name>.kit_dir`) whose certificate " +
					"authenticates to the agent; any participant or admin of the project may read attestations."},
			"kit_dir": schema.StringAttribute{Required: true, Validators: []validator.String{cvmKitDirCheck},
				MarkdownDescription: "The CVM kit (`flare_cvm_kit.<name>.kit_dir`): its `launch.json` gives the site, the " +
					"expected measurement, guest policy and host data."},
			"cvm_id": schema.StringAttribute{Optional: true, Computed: true,
				MarkdownDescription: "The CVM to attest (`flare_cvm_instance.<name>.id`). Unset: the one running CVM of this kit on the agent."},
			"nonce": schema.StringAttribute{Optional: true, Computed: true, Validators: []validator.String{nonceCheck},
				MarkdownDescription: "16 to 1024 bytes in hex bound into the report. Unset: 32 fresh random bytes at every read."},
			"expected_measurement": schema.StringAttribute{Optional: true, Computed: true, Validators: []validator.String{measurementHex},
				MarkdownDescription: "The launch digest the report must carry (96 hex digits). Unset: the kit's " +
					"`expected_measurement`; set it to pin a value computed elsewhere (e.g. `flare_snp_measurement`)."},
			"allow_simulated": schema.BoolAttribute{Optional: true, Validators: []validator.Bool{allowSimulatedGate{}},
				MarkdownDescription: "Accept reports of a CVM the agent runs in simulated mode. They prove nothing about the hardware: for tests " +
					"only, and refused unless the environment variable `" + AllowSimulatedEnv + "=1` is set where Terraform runs."},
			"require_verified": schema.BoolAttribute{Optional: true,
				MarkdownDescription: "A report that does not verify is an error (the default, `true`). `false` turns the error into a " +
					"warning and sets `verified = false` with the `reasons`, for a caller that decides itself (e.g. a `postcondition`)."},
			"minimum_tcb": schema.StringAttribute{Optional: true, Validators: []validator.String{minimumTCBCheck},
				MarkdownDescription: "The lowest REPORTED_TCB accepted, as a TCB_VERSION in hex (each SPL compared on its own)."},
			"vcek_cache_dir": schema.StringAttribute{Optional: true,
				MarkdownDescription: "Folder of VCEK certificates for reports whose guest sends none; nothing is ever fetched from AMD."},

			"verified": schema.BoolAttribute{Computed: true, MarkdownDescription: "The report passed every check here."},
			"reasons": schema.ListAttribute{Computed: true, ElementType: types.StringType,
				MarkdownDescription: "What failed, as `<check>: <detail>` (empty when verified)."},
			"agent_verified": schema.BoolAttribute{Computed: true, MarkdownDescription: "What the agent itself concluded (informational)."},
			"simulated":      schema.BoolAttribute{Computed: true, MarkdownDescription: "The report came from the simulated platform: it proves nothing about SEV-SNP."},
			"mode":           str("How the agent runs the CVM: `snp` or `simulated`."),
			"measurement":    str("The report's MEASUREMENT (hex)."),
			"policy":         str("The report's guest POLICY (0x-hex)."),
			"policy_debug":   schema.BoolAttribute{Computed: true, MarkdownDescription: "The policy allows debugging the guest."},
			"host_data":      str("The report's HOST_DATA (hex)."),
			"report_data":    str("The report's REPORT_DATA (hex): SHA-512(nonce ‖ guest key)."),
			"chip_id":        str("The CHIP_ID of the processor that signed (hex)."),
			"guest_key":      str("SHA-256 fingerprint (hex) of the guest's per-boot key, bound into REPORT_DATA with the nonce."),
			"report_version": schema.Int64Attribute{Computed: true, MarkdownDescription: "The report format version."},
			"vmpl":           schema.Int64Attribute{Computed: true, MarkdownDescription: "The VMPL the report was requested from."},
			"guest_svn":      schema.Int64Attribute{Computed: true, MarkdownDescription: "The guest's security version number."},
			"product_line":   str("The processor line (Milan, Genoa, Turin) when known."),
			"firmware":       str("The SEV firmware version (major.minor.build)."),
			"signing_key":    str("`VCEK` or `VLEK`."),
			"vcek_source":    str("Where the endorsement certificate came from: `cert_table` (the guest's extended report) or `cache`."),
			"tcb": schema.SingleNestedAttribute{Computed: true,
				MarkdownDescription: "TCB versions (0x-hex TCB_VERSION) and the reported TCB's security patch levels.",
				Attributes: map[string]schema.Attribute{
					"current":   str("CURRENT_TCB."),
					"reported":  str("REPORTED_TCB."),
					"committed": str("COMMITTED_TCB."),
					"launch":    str("LAUNCH_TCB."),
					"bl_spl":    schema.Int64Attribute{Computed: true, MarkdownDescription: "Boot loader SPL of REPORTED_TCB."},
					"tee_spl":   schema.Int64Attribute{Computed: true, MarkdownDescription: "TEE SPL of REPORTED_TCB."},
					"snp_spl":   schema.Int64Attribute{Computed: true, MarkdownDescription: "SNP firmware SPL of REPORTED_TCB."},
					"ucode_spl": schema.Int64Attribute{Computed: true, MarkdownDescription: "Microcode SPL of REPORTED_TCB."},
				}},
			"evidence":    str("The evidence the guest sent (base64 of its JSON: report and certificate table), for re-verification elsewhere."),
			"attested_at": str("When the agent fetched the report (RFC 3339)."),
		},
	}
}

func (d *cvmAttestationDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m cvmAttestationModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	kit, err := readCVMKit(m.KitDir.ValueString())
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("kit_dir"), "Cannot Read CVM Kit", err.Error())
		return
	}
	opts, diags := attestationOptions(m.ExpectedMeasurement, m.AllowSimulated, m.MinimumTCB, m.VCEKCacheDir)
	resp.Diagnostics.Append(diags...)
	nonce, err := parseNonce(m.Nonce.ValueString())
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("nonce"), "Invalid Nonce", err.Error())
	}
	c, err := agentClientFor(m.AgentURL.ValueString(), m.AuthKitDir.ValueString(), kit.Participant)
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("auth_kit_dir"), "Cannot Use Startup Kit", err.Error())
	}
	if resp.Diagnostics.HasError() {
		return
	}
	target, err := findCVM(ctx, c, m.CVMID.ValueString(), kit)
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("cvm_id"), "No CVM to Attest", err.Error())
		return
	}
	v, err := attestCVM(ctx, c, target, nonce, kit, opts)
	if err != nil {
		resp.Diagnostics.AddError("Attestation Failed", err.Error())
		return
	}
	m.CVMID = types.StringValue(target.ID)
	m.Nonce = types.StringValue(hex.EncodeToString(nonce))
	m.ExpectedMeasurement = types.StringValue(v.local.ExpectedMeasurement)
	resp.Diagnostics.Append(m.setVerdict(v)...)
	resp.Diagnostics.Append(unverifiedDiag(v.local, target.ID, m.AgentURL.ValueString(), m.RequireVerified)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// unverifiedDiag is what a report that failed a check gives: an error
// (fail closed) unless require_verified is false, then a warning.
func unverifiedDiag(v *api.Verdict, cvmID, agentURL string, requireVerified types.Bool) diag.Diagnostics {
	var diags diag.Diagnostics
	if v.Verified {
		return diags
	}
	detail := fmt.Sprintf("CVM %s on %s: %s", cvmID, agentURL, strings.Join(v.Reasons, "; "))
	if requireVerified.IsNull() || requireVerified.IsUnknown() || requireVerified.ValueBool() {
		diags.AddError("CVM Attestation Not Verified", detail+
			"\nThe report failed the checks above, so nothing that depends on it goes ahead. Set require_verified = false "+
			"to read an unverified report (verified = false, reasons) and decide with a postcondition instead.")
		return diags
	}
	diags.AddWarning("CVM Attestation Not Verified", detail)
	return diags
}

// attestationOptions reads the verification attributes both the data
// source and flare_cvm_instance have.
func attestationOptions(expected types.String, allowSimulated types.Bool, minimumTCB, vcekCache types.String) (checkOptions, diag.Diagnostics) {
	var diags diag.Diagnostics
	o := checkOptions{ExpectedMeasurement: expected.ValueString(), AllowSimulated: allowSimulated.ValueBool(), VCEKCacheDir: vcekCache.ValueString()}
	if o.AllowSimulated && !simulatedEnabled() {
		// Validation refuses this already; the environment may have
		// changed between plan and apply.
		diags.AddAttributeError(path.Root("allow_simulated"), "Simulated Attestation Not Enabled", errSimulatedNotEnabled)
	}
	if s := minimumTCB.ValueString(); s != "" {
		v, err := attest.ParseTCBVersion(s)
		if err != nil {
			diags.AddAttributeError(path.Root("minimum_tcb"), "Invalid TCB Version", err.Error())
		}
		o.MinimumTCB = v
	}
	return o, diags
}

// findCVM returns the CVM id names, checking it runs this kit, or the one
// running CVM of the kit.
func findCVM(ctx context.Context, c *client.Client, id string, kit *cvm.Manifest) (*api.CVM, error) {
	if id != "" {
		v, err := c.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if v.KitID != kit.ID {
			return nil, fmt.Errorf("CVM %s runs kit %s, not this kit (%s): kit_dir and cvm_id disagree", id, v.KitID, kit.ID)
		}
		return v, nil
	}
	all, err := c.List(ctx)
	if err != nil {
		return nil, err
	}
	var found []api.CVM
	for _, v := range all {
		if v.KitID == kit.ID && api.Active(v.State) {
			found = append(found, v)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("the agent runs no CVM of kit %s (participant %s): launch one with flare_cvm_instance", kit.ID, kit.Participant)
	case 1:
		return &found[0], nil
	default:
		ids := make([]string, len(found))
		for i, v := range found {
			ids[i] = v.ID
		}
		return nil, fmt.Errorf("the agent runs %d CVMs of kit %s (%s): set cvm_id", len(found), kit.ID, strings.Join(ids, ", "))
	}
}

// attestation is one round trip: what the agent said and what we found.
type attestation struct {
	agent, local *api.Verdict
}

// attestCVM asks the agent for a report bound to nonce and verifies it here.
func attestCVM(ctx context.Context, c *client.Client, target *api.CVM, nonce []byte, kit *cvm.Manifest, o checkOptions) (*attestation, error) {
	av, err := c.Attest(ctx, target.ID, nonce)
	if err != nil {
		return nil, err
	}
	lv, err := checkEvidence(av, nonce, kit, target.Mode, o)
	if err != nil {
		return nil, fmt.Errorf("CVM %s: verifying the evidence: %w", target.ID, err)
	}
	return &attestation{agent: av, local: lv}, nil
}

func (m *cvmAttestationModel) setVerdict(a *attestation) diag.Diagnostics {
	v := a.local
	var diags diag.Diagnostics
	reasons, d := types.ListValueFrom(context.Background(), types.StringType, nonNil(v.Reasons))
	diags.Append(d...)
	m.Reasons = reasons
	m.Verified, m.AgentVerified, m.Simulated = types.BoolValue(v.Verified), types.BoolValue(a.agent.Verified), types.BoolValue(v.Simulated)
	m.Mode, m.Measurement, m.Policy = types.StringValue(v.Mode), types.StringValue(v.Measurement), types.StringValue(v.Policy)
	m.PolicyDebug, m.HostData, m.ReportData = types.BoolValue(v.PolicyDebug), types.StringValue(v.HostData), types.StringValue(v.ReportData)
	m.ChipID, m.GuestKey = types.StringValue(v.ChipID), types.StringValue(v.GuestKey)
	m.ReportVersion, m.VMPL, m.GuestSVN = types.Int64Value(int64(v.ReportVersion)), types.Int64Value(int64(v.VMPL)), types.Int64Value(int64(v.GuestSVN))
	m.ProductLine, m.Firmware = types.StringValue(v.ProductLine), types.StringValue(v.Firmware)
	m.SigningKey, m.VCEKSource = types.StringValue(v.SigningKey), types.StringValue(v.VCEKSource)
	tcb, d := types.ObjectValue(tcbAttrTypes, map[string]attr.Value{
		"current": types.StringValue(v.TCB.Current), "reported": types.StringValue(v.TCB.Reported),
		"committed": types.StringValue(v.TCB.Committed), "launch": types.StringValue(v.TCB.Launch),
		"bl_spl": types.Int64Value(int64(v.TCB.BlSPL)), "tee_spl": types.Int64Value(int64(v.TCB.TeeSPL)),
		"snp_spl": types.Int64Value(int64(v.TCB.SnpSPL)), "ucode_spl": types.Int64Value(int64(v.TCB.UcodeSPL)),
	})
	diags.Append(d...)
	m.TCB = tcb
	m.Evidence = types.StringValue(base64.StdEncoding.EncodeToString(v.Evidence))
	m.AttestedAt = types.StringValue(v.At.UTC().Format(time.RFC3339))
	return diags
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
