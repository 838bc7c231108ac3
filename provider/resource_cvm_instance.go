package provider

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/boolplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/client"
	"github.com/flarekit/terraform-provider-flare/internal/attest"
	"github.com/flarekit/terraform-provider-flare/internal/cvm"
)

var (
	_ resource.Resource                = (*cvmInstanceResource)(nil)
	_ resource.ResourceWithImportState = (*cvmInstanceResource)(nil)
)

// NewCVMInstanceResource is the flare_cvm_instance factory.
func NewCVMInstanceResource() resource.Resource { return &cvmInstanceResource{} }

type cvmInstanceResource struct{}

type cvmInstanceModel struct {
	ID             types.String `tfsdk:"id"`
	AgentURL       types.String `tfsdk:"agent_url"`
	AuthKitDir     types.String `tfsdk:"auth_kit_dir"`
	KitDir         types.String `tfsdk:"kit_dir"`
	KitSHA256      types.String `tfsdk:"kit_sha256"`
	Archive        types.String `tfsdk:"archive"`
	AllowSimulated types.Bool   `tfsdk:"allow_simulated"`
	MinimumTCB     types.String `tfsdk:"minimum_tcb"`
	VCEKCacheDir   types.String `tfsdk:"vcek_cache_dir"`
	ReadyTimeout   types.String `tfsdk:"ready_timeout"`

	Participant types.String `tfsdk:"participant"`
	KitID       types.String `tfsdk:"kit_id"`
	Mode        types.String `tfsdk:"mode"`
	State       types.String `tfsdk:"state"`
	Measurement types.String `tfsdk:"measurement"`
	Simulated   types.Bool   `tfsdk:"simulated"`
	GuestKey    types.String `tfsdk:"guest_key"`
	ChipID      types.String `tfsdk:"chip_id"`
	AttestedAt  types.String `tfsdk:"attested_at"`
}

const defaultReadyTimeout = "10m"

var durationCheck = stringCheck{summary: "Invalid Duration", desc: "a Go duration such as 10m or 90s",
	check: func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return fmt.Errorf("%q is not a positive duration such as 10m or 90s", s)
		}
		return nil
	}}

var fileCheck = stringCheck{summary: "Missing File", desc: "a readable file",
	check: func(p string) error {
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a readable file: name the CVM kit archive, flare_cvm_kit.<name>.archive_path", p)
		}
		return nil
	}}

func (r *cvmInstanceResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_cvm_instance"
}

func (r *cvmInstanceResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	computed := func(desc string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: desc}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "Launches a CVM kit (`flare_cvm_kit`) on a site's flare-agent and waits until the guest " +
			"attests: its attestation responder answers, and a report bound to a fresh nonce verifies **here** " +
			"against the kit (signature and VCEK chain to AMD's roots, measurement, guest policy, host data). " +
			"A CVM that does not attest within `ready_timeout` is stopped and the apply fails with the reasons. " +
			"Destroy stops the CVM (ACPI power-down, then quit). A CVM that has stopped or crashed on the agent " +
			"is gone from state at the next refresh, so the plan launches it again.\n\n" +
			"An agent on a host without SEV-SNP runs guests in its **simulated** mode (no memory encryption, " +
			"reports from a test device signed by a fake AMD chain). Launching there fails unless " +
			"`allow_simulated` is set, which itself is refused unless the environment variable `" + AllowSimulatedEnv +
			"=1` is set too (tests only); then `simulated` is true.",
		Attributes: map[string]schema.Attribute{
			"id": computed("The CVM's id on the agent."),
			"agent_url": schema.StringAttribute{Required: true, PlanModifiers: replace, Validators: []validator.String{agentURLCheck},
				MarkdownDescription: "The site's flare-agent, `https://host:port`. Its certificate must be the site's (the kit's participant) from this project's CA."},
			"auth_kit_dir": schema.StringAttribute{Required: true, Validators: []validator.String{launcherKitCheck},
				MarkdownDescription: "The startup kit (`flare_startup_kit.<name>.kit_dir`) whose certificate authenticates to the agent: a " +
					"`project_admin`, or an `org_admin` of the site's org, may launch and stop."},
			"kit_dir": schema.StringAttribute{Required: true, PlanModifiers: replace, Validators: []validator.String{cvmKitDirCheck},
				MarkdownDescription: "The CVM kit (`flare_cvm_kit.<name>.kit_dir`). Without `archive` the agent launches it by this path, " +
					"so it must be the same path on the agent's host; its `launch.json` holds the values the attestation must show."},
			"kit_sha256": schema.StringAttribute{Optional: true, PlanModifiers: replace,
				MarkdownDescription: "`flare_cvm_kit.<name>.kit_sha256`: a rebuilt kit launches a new CVM."},
			"archive": schema.StringAttribute{Optional: true, PlanModifiers: replace, Validators: []validator.String{fileCheck},
				MarkdownDescription: "The kit's archive (`flare_cvm_kit.<name>.archive_path`) to upload instead, for an agent on another " +
					"host. The agent checks every file against `launch.json` before it launches."},
			"allow_simulated": schema.BoolAttribute{Optional: true, Computed: true, Default: booldefault.StaticBool(false),
				Validators: []validator.Bool{allowSimulatedGate{}},
				MarkdownDescription: "Accept an agent that runs the CVM in simulated mode. Its reports prove nothing about the hardware: for tests " +
					"only, and refused unless the environment variable `" + AllowSimulatedEnv + "=1` is set where Terraform runs."},
			"minimum_tcb": schema.StringAttribute{Optional: true, Validators: []validator.String{minimumTCBCheck},
				MarkdownDescription: "The lowest REPORTED_TCB accepted, as a TCB_VERSION in hex."},
			"vcek_cache_dir": schema.StringAttribute{Optional: true,
				MarkdownDescription: "Folder of VCEK certificates for reports whose guest sends none; nothing is fetched from AMD."},
			"ready_timeout": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString(defaultReadyTimeout),
				Validators:          []validator.String{durationCheck},
				MarkdownDescription: "How long create waits for the guest to boot and attest. Defaults to `" + defaultReadyTimeout + "`."},

			"participant": computed("The site the kit is for; the agent must present that site's agent certificate (flare_agent_identity, CN `<site>:flare-agent`), never a participant certificate."),
			"kit_id":      computed("`launch.json`'s id of the launched kit."),
			"mode":        computed("How the agent runs the CVM: `snp` or `simulated`."),
			"state":       computed("The CVM's state on the agent at the last refresh (`running`, ...)."),
			"measurement": computed("The MEASUREMENT of the report that verified at create."),
			"simulated": schema.BoolAttribute{Computed: true, PlanModifiers: []planmodifier.Bool{boolplanmodifier.UseStateForUnknown()},
				MarkdownDescription: "The CVM runs in the agent's simulated mode: no SEV-SNP."},
			"guest_key":   computed("SHA-256 fingerprint of the guest's per-boot key, bound into the report at create."),
			"chip_id":     computed("The CHIP_ID of the processor that signed the report at create."),
			"attested_at": computed("When the report that verified at create was fetched (RFC 3339)."),
		},
	}
}

func (m *cvmInstanceModel) client() (*client.Client, *cvm.Manifest, error) {
	kit, err := readCVMKit(m.KitDir.ValueString())
	if err != nil {
		return nil, nil, err
	}
	c, err := agentClientFor(m.AgentURL.ValueString(), m.AuthKitDir.ValueString(), kit.Participant)
	return c, kit, err
}

func (r *cvmInstanceResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan cvmInstanceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, kit, err := plan.client()
	if err != nil {
		resp.Diagnostics.AddError("Cannot Reach flare-agent", err.Error())
		return
	}
	opts, diags := attestationOptions(types.StringNull(), plan.AllowSimulated, plan.MinimumTCB, plan.VCEKCacheDir)
	resp.Diagnostics.Append(diags...)
	timeout, _ := time.ParseDuration(plan.ReadyTimeout.ValueString())
	if resp.Diagnostics.HasError() {
		return
	}
	url := plan.AgentURL.ValueString()
	h, err := c.Health(ctx)
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("agent_url"), "Cannot Reach flare-agent", err.Error())
		return
	}
	if h.EffectiveMode == api.ModeSimulated && !opts.AllowSimulated {
		why := strings.Join(h.SNP.Reasons, "; ")
		if why == "" {
			why = "it is configured with mode: simulated"
		}
		resp.Diagnostics.AddAttributeError(path.Root("allow_simulated"), "flare-agent Cannot Launch SEV-SNP",
			fmt.Sprintf("the agent at %s would run this CVM in simulated mode (%s); set allow_simulated = true (with %s=1 in the environment) to accept that (tests only)", url, why, AllowSimulatedEnv))
		return
	}

	launched, err := launchKit(ctx, c, plan)
	if err != nil {
		if client.StatusCode(err) == http.StatusConflict {
			resp.Diagnostics.AddError("CVM Kit Already Running",
				fmt.Sprintf("%v\nTo manage the running CVM, import it: terraform import <address> '<cvm id>,%s,%s,%s'", err, url, plan.AuthKitDir.ValueString(), plan.KitDir.ValueString()))
			return
		}
		resp.Diagnostics.AddError("Cannot Launch CVM", err.Error())
		return
	}
	// From here on a CVM runs: anything short of a verified report stops it.
	fail := func(summary, detail string) {
		if _, err := stopCVM(c, launched.ID); err != nil {
			detail += fmt.Sprintf("\nStopping CVM %s failed too (%v): stop it on the agent by hand.", launched.ID, err)
		}
		resp.Diagnostics.AddError(summary, detail)
	}
	if launched.KitID != kit.ID {
		fail("CVM Kit Mismatch", fmt.Sprintf("the agent launched kit %s, but kit_dir holds kit %s: archive and kit_dir must be the same flare_cvm_kit", launched.KitID, kit.ID))
		return
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ready, err := c.WaitReady(wctx, launched.ID)
	if err != nil {
		fail("CVM Not Ready", fmt.Sprintf("%v (ready_timeout %s)%s", err, timeout, consoleTail(c, launched.ID)))
		return
	}
	nonce, err := attest.NewNonce()
	if err != nil {
		fail("Cannot Make Nonce", err.Error())
		return
	}
	a, err := attestCVM(wctx, c, ready, nonce, kit, opts)
	if err != nil {
		fail("CVM Attestation Failed", err.Error())
		return
	}
	if !a.local.Verified {
		fail("CVM Attestation Not Verified", fmt.Sprintf("CVM %s on %s: %s", ready.ID, url, strings.Join(a.local.Reasons, "; ")))
		return
	}
	plan.ID, plan.Participant, plan.KitID = types.StringValue(ready.ID), types.StringValue(kit.Participant), types.StringValue(ready.KitID)
	plan.Mode, plan.State = types.StringValue(ready.Mode), types.StringValue(ready.State)
	plan.Measurement, plan.Simulated = types.StringValue(a.local.Measurement), types.BoolValue(a.local.Simulated)
	plan.GuestKey, plan.ChipID = types.StringValue(a.local.GuestKey), types.StringValue(a.local.ChipID)
	plan.AttestedAt = types.StringValue(a.local.At.UTC().Format(time.RFC3339))
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

// launchKit starts the kit by its path on the agent's host, or uploads
// its archive.
func launchKit(ctx context.Context, c *client.Client, m cvmInstanceModel) (*api.CVM, error) {
	if m.Archive.IsNull() {
		return c.Launch(ctx, m.KitDir.ValueString())
	}
	f, err := os.Open(m.Archive.ValueString())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return c.Upload(ctx, f)
}

// stopCVM stops a CVM on its own deadline, so a failed or cancelled apply
// still gets to stop what it started.
func stopCVM(c *client.Client, id string) (*api.CVM, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	v, err := c.Stop(ctx, id)
	if client.IsNotFound(err) {
		return nil, nil
	}
	return v, err
}

// consoleTail is the end of the CVM's serial console, for an error message.
func consoleTail(c *client.Client, id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := c.Logs(ctx, id, 20)
	if err != nil || len(l.Lines) == 0 {
		return ""
	}
	return "\nLast console lines:\n" + strings.Join(l.Lines, "\n")
}

func (r *cvmInstanceResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state cvmInstanceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, kit, err := state.client()
	if err != nil {
		resp.Diagnostics.AddError("Cannot Reach flare-agent", err.Error())
		return
	}
	v, err := c.Get(ctx, state.ID.ValueString())
	if client.IsNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Cannot Read CVM", err.Error())
		return
	}
	if !api.Active(v.State) {
		detail := fmt.Sprintf("CVM %s is %s on %s", v.ID, v.State, state.AgentURL.ValueString())
		if v.LastError != "" {
			detail += ": " + v.LastError
		}
		resp.Diagnostics.AddWarning("CVM No Longer Running", detail+"; the plan launches the kit again.")
		resp.State.RemoveResource(ctx)
		return
	}
	state.Participant, state.KitID = types.StringValue(kit.Participant), types.StringValue(v.KitID)
	state.Mode, state.State = types.StringValue(v.Mode), types.StringValue(v.State)
	state.Simulated = types.BoolValue(v.Mode == api.ModeSimulated)
	resp.Diagnostics.Append(resp.State.Set(ctx, state)...)
}

// Update changes only settings that do not touch the running CVM
// (credentials, timeouts, what a later check accepts).
func (r *cvmInstanceResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan cvmInstanceModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func (r *cvmInstanceResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state cvmInstanceModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c, _, err := state.client()
	if err != nil {
		resp.Diagnostics.AddError("Cannot Reach flare-agent", err.Error())
		return
	}
	v, err := c.Stop(ctx, state.ID.ValueString())
	switch {
	case client.IsNotFound(err):
	case err != nil:
		resp.Diagnostics.AddError("Cannot Stop CVM", err.Error())
	case api.Active(v.State):
		resp.Diagnostics.AddError("CVM Still Running", fmt.Sprintf("CVM %s is %s after the stop request", v.ID, v.State))
	}
}

// ImportState takes "<cvm id>,<agent_url>,<auth_kit_dir>,<kit_dir>": the
// agent, the credentials and the kit are needed to read the CVM at all.
func (r *cvmInstanceResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	parts := strings.Split(req.ID, ",")
	if len(parts) != 4 || slices.Contains(parts, "") {
		resp.Diagnostics.AddError("Invalid Import ID",
			fmt.Sprintf("%q: give \"<cvm id>,<agent_url>,<auth_kit_dir>,<kit_dir>\", e.g. \"1a2b3c4d-9f8e7d,https://site-1:8443,kits/admin@nvidia.com,cvm/site-1/cvm_1a2b3c4d\"", req.ID))
		return
	}
	if err := checkAgentURL(parts[1]); err != nil {
		resp.Diagnostics.AddError("Invalid Import ID", err.Error())
		return
	}
	m := cvmInstanceModel{AgentURL: types.StringValue(parts[1]), AuthKitDir: types.StringValue(parts[2]), KitDir: types.StringValue(parts[3])}
	c, kit, err := m.client()
	if err != nil {
		resp.Diagnostics.AddError("Cannot Import CVM", err.Error())
		return
	}
	v, err := c.Get(ctx, parts[0])
	if err != nil {
		resp.Diagnostics.AddError("Cannot Import CVM", err.Error())
		return
	}
	if v.KitID != kit.ID {
		resp.Diagnostics.AddError("Cannot Import CVM", fmt.Sprintf("CVM %s runs kit %s, not the kit at %s (%s)", v.ID, v.KitID, parts[3], kit.ID))
		return
	}
	for name, val := range map[string]string{"id": parts[0], "agent_url": parts[1], "auth_kit_dir": parts[2], "kit_dir": parts[3],
		"ready_timeout": defaultReadyTimeout} {
		resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root(name), val)...)
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("allow_simulated"), v.Mode == api.ModeSimulated)...)
}
