package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/internal/kit"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/project"
)

var (
	_ resource.ResourceWithImportState    = (*startupKitResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*startupKitResource)(nil)
	_ resource.ResourceWithValidateConfig = (*startupKitResource)(nil)
)

// NewStartupKitResource is the flare_startup_kit factory.
func NewStartupKitResource() resource.Resource { return &startupKitResource{} }

type startupKitResource struct {
	withProviderData
}

type startupKitModel struct {
	ID          types.String `tfsdk:"id"`
	Participant types.String `tfsdk:"participant"`
	Server      types.String `tfsdk:"server"`
	Relay       types.String `tfsdk:"relay"`
	Relayed     types.List   `tfsdk:"relayed_clients"`
	CC          types.Object `tfsdk:"cc"`
	OutputDir   types.String `tfsdk:"output_dir"`
	Archive     types.String `tfsdk:"archive"`
	KitDir      types.String `tfsdk:"kit_dir"`
	KitSHA256   types.String `tfsdk:"kit_sha256"`
	ArchivePath types.String `tfsdk:"archive_path"`
}

// privateWrittenDigest remembers what apply wrote, so Read's view of the
// disk can be compared with it: kit signatures are randomised (PSS), so the
// digest cannot be recomputed from the inputs.
const privateWrittenDigest = "written_kit_sha256"

func (r *startupKitResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_startup_kit"
}

func (r *startupKitResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	descriptor := descriptorCheck
	resp.Schema = schema.Schema{
		MarkdownDescription: "Writes one participant's NVFlare startup kit to `<output_dir>/<name>/`: `startup/` " +
			"(root CA, the participant's certificate and key, `fed_*.json`, start scripts, `signature.json`), " +
			"`local/` (resources, authorization, privacy and log defaults, `signature.json`) and `transfer/`, " +
			"as `nvflare provision` of the project's NVFlare line lays it out. A new kit appears with one rename; an update replaces " +
			"only the kit's own files, so a running site's logs, job workspaces and local overrides survive. An " +
			"edit to a managed file outside Terraform shows up in the next plan and is repaired by apply.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "The kit directory."},
			"participant": schema.StringAttribute{
				Required: true, Validators: []validator.String{descriptor},
				MarkdownDescription: "The `descriptor` of the `flare_server`, `flare_client`, `flare_admin` or `flare_relay` this kit is for.",
			},
			"server": schema.StringAttribute{
				Optional: true, Validators: []validator.String{descriptor},
				MarkdownDescription: "The `descriptor` of the project's `flare_server`. Required for client, admin and relay kits.",
			},
			"relay": schema.StringAttribute{
				Optional: true, Validators: []validator.String{descriptor},
				MarkdownDescription: "The `descriptor` of the `flare_relay` a client's `connect_to` names.",
			},
			"relayed_clients": schema.ListAttribute{
				Optional: true, ElementType: types.StringType,
				Validators: []validator.List{listvalidator.ValueStringsAre(descriptor)},
				MarkdownDescription: "The `descriptor`s of the project's clients that connect through a relay. NVFlare 2.9 checks " +
					"every cell's certificate against its name, and a client behind `relay-1` is the cell `relay-1.<client>`: " +
					"the server's and every client's kit map those names to the clients' certificates (`auth_identity_map`, " +
					"as `nvflare provision` writes it). Set it on the server's and the clients' kits whenever a client " +
					"sits behind a relay; other kits and older lines ignore it.",
			},
			"cc": ccSchema(),
			"output_dir": schema.StringAttribute{
				Required: true, PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
				Validators:          []validator.String{stringvalidator.LengthAtLeast(1)},
				MarkdownDescription: "Directory that holds the kits; this kit goes into `<output_dir>/<participant name>/`.",
			},
			"archive": schema.StringAttribute{
				Optional: true, Computed: true, Default: stringdefault.StaticString(kit.ArchiveNone),
				Validators:          []validator.String{stringvalidator.OneOf(kit.ArchiveNone, kit.ArchiveTGZ, kit.ArchiveZIP)},
				MarkdownDescription: "Also pack the kit as `<output_dir>/<name>.tgz` or `.zip` (mode 0600: it holds the private key). `none` (default), `tgz` or `zip`.",
			},
			"kit_dir": schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "Path of the written kit."},
			"kit_sha256": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "Digest of the kit's managed files (path, mode, content) as on disk: everything in `startup/`, `local/signature.json` and what it signs, `readme.txt`. It changes when one of them is edited, deleted or re-moded outside Terraform; files the site writes do not count.",
			},
			"archive_path": schema.StringAttribute{Computed: true, MarkdownDescription: "Path of the archive, or null when `archive` is `none`."},
		},
	}
}

func parseDescriptor(s string) (Descriptor, error) {
	var d Descriptor
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return d, fmt.Errorf("not a participant descriptor (use flare_<type>.<name>.descriptor): %v", err)
	}
	if d.ProjectID == "" || d.Participant.Name == "" || d.CertPEM == "" || d.KeyFile == "" {
		return d, errors.New("descriptor lacks project_id, participant, cert_pem or key_file: use flare_<type>.<name>.descriptor")
	}
	return d, nil
}

// ValidateConfig checks the descriptors against each other when they are
// known at plan time; on first create they are not, and write runs the same
// checks before touching the disk.
func (r *startupKitResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m startupKitModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() || m.Participant.IsUnknown() || m.Server.IsUnknown() || m.Relay.IsUnknown() {
		return
	}
	self, _, _, err := m.descriptors()
	if err == nil && !m.Relayed.IsUnknown() {
		_, err = m.relayedClients(self.ProjectID)
	}
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root(err.Field), "Invalid Startup Kit Inputs", err.Error())
		return
	}
	// The CC setting against the participant.
	resp.Diagnostics.Append(validateCCConfig(ctx, m.CC, self.Participant, path.Root("cc"))...)
}

// descriptors parses and cross-checks participant, server and relay.
func (m *startupKitModel) descriptors() (self, server Descriptor, relay *Descriptor, ferr *project.FieldError) {
	fail := func(field, format string, args ...any) (Descriptor, Descriptor, *Descriptor, *project.FieldError) {
		return self, server, nil, &project.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	var err error
	if self, err = parseDescriptor(m.Participant.ValueString()); err != nil {
		return fail("participant", "%v", err)
	}
	p := self.Participant
	server = self
	switch {
	case p.Type != project.TypeServer && m.Server.IsNull():
		return fail("server", "a %s kit needs the server's address; set server = flare_server.<name>.descriptor", p.Type)
	case p.Type == project.TypeServer && !m.Server.IsNull():
		return fail("server", "a server kit describes itself; remove the server argument")
	case !m.Server.IsNull():
		if server, err = parseDescriptor(m.Server.ValueString()); err != nil {
			return fail("server", "%v", err)
		}
		if server.Participant.Type != project.TypeServer {
			return fail("server", "got the descriptor of %s %q; use flare_server.<name>.descriptor", server.Participant.Type, server.Participant.Name)
		}
		if server.ProjectID != self.ProjectID {
			return fail("server", "server %q belongs to project %s, but %s %q to %s; both must share one flare_project",
				server.Participant.Name, server.ProjectID, p.Type, p.Name, self.ProjectID)
		}
	}
	switch {
	case p.ConnectTo != "" && m.Relay.IsNull():
		return fail("relay", "client %q connects to relay %q; set relay = flare_relay.<name>.descriptor", p.Name, p.ConnectTo)
	case p.ConnectTo == "" && !m.Relay.IsNull():
		return fail("relay", "%s %q has no connect_to; remove relay, or set connect_to on the client", p.Type, p.Name)
	case !m.Relay.IsNull():
		rel, err := parseDescriptor(m.Relay.ValueString())
		if err != nil {
			return fail("relay", "%v", err)
		}
		if rel.Participant.Type != project.TypeRelay || rel.Participant.Name != p.ConnectTo || rel.ProjectID != self.ProjectID {
			return fail("relay", "client %q connects to relay %q of its project, but got %s %q of %s",
				p.Name, p.ConnectTo, rel.Participant.Type, rel.Participant.Name, rel.ProjectID)
		}
		relay = &rel
	}
	return self, server, relay, nil
}

// relayedClients parses relayed_clients: clients with connect_to, of the
// kit's own project.
func (m *startupKitModel) relayedClients(projectID string) ([]project.Participant, *project.FieldError) {
	var out []project.Participant
	for i, v := range m.Relayed.Elements() {
		s, ok := v.(types.String)
		if !ok || s.IsUnknown() || s.IsNull() {
			continue
		}
		d, err := parseDescriptor(s.ValueString())
		if err != nil {
			return nil, &project.FieldError{Field: "relayed_clients", Msg: fmt.Sprintf("relayed_clients[%d]: %v", i, err)}
		}
		if d.Participant.Type != project.TypeClient || d.Participant.ConnectTo == "" {
			return nil, &project.FieldError{Field: "relayed_clients", Msg: fmt.Sprintf(
				"relayed_clients[%d]: %s %q does not connect through a relay; list only clients with connect_to", i, d.Participant.Type, d.Participant.Name)}
		}
		if !sameCA(d.ProjectID, projectID) {
			return nil, &project.FieldError{Field: "relayed_clients", Msg: fmt.Sprintf(
				"relayed_clients[%d]: client %q belongs to project %s, not %s", i, d.Participant.Name, d.ProjectID, projectID)}
		}
		out = append(out, d.Participant)
	}
	return out, nil
}

// ModifyPlan plans a rewrite when the kit on disk is no longer what apply wrote.
func (r *startupKitResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() {
		return
	}
	var state startupKitModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	written, diags := req.Private.GetKey(ctx, privateWrittenDigest)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() || written == nil {
		return
	}
	var want string
	if err := json.Unmarshal(written, &want); err != nil || want == state.KitSHA256.ValueString() {
		return
	}
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("kit_sha256"), types.StringUnknown())...)
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("archive_path"), types.StringUnknown())...)
}

func (r *startupKitResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan startupKitModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	r.write(ctx, &plan, resp.Private, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func (r *startupKitResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state startupKitModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	r.write(ctx, &plan, resp.Private, &resp.Diagnostics)
	if resp.Diagnostics.HasError() {
		return
	}
	// A renamed participant or a dropped archive leaves old files behind.
	if state.KitDir.ValueString() != plan.KitDir.ValueString() {
		_ = os.RemoveAll(state.KitDir.ValueString())
	}
	if !state.ArchivePath.IsNull() && state.ArchivePath.ValueString() != plan.ArchivePath.ValueString() {
		_ = os.Remove(state.ArchivePath.ValueString())
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

// privateState is the part of the framework's private state write uses.
type privateState interface {
	SetKey(ctx context.Context, key string, value []byte) diag.Diagnostics
}

// write builds, signs and writes the kit described by m, filling m's
// computed attributes.
func (r *startupKitResource) write(ctx context.Context, m *startupKitModel, priv privateState, diags *diag.Diagnostics) {
	in, err := r.kitInput(ctx, m)
	if err != nil {
		diags.AddError("Cannot Prepare Startup Kit", err.Error())
		return
	}
	k, err := kit.Build(in)
	if err != nil {
		diags.AddError("Cannot Build Startup Kit", err.Error())
		return
	}
	dir, err := k.Write(m.OutputDir.ValueString())
	if err != nil {
		diags.AddAttributeError(path.Root("output_dir"), "Cannot Write Startup Kit", err.Error())
		return
	}
	m.ArchivePath = types.StringNull()
	if a := m.Archive.ValueString(); a != kit.ArchiveNone {
		p, err := k.WriteArchive(m.OutputDir.ValueString(), a)
		if err != nil {
			diags.AddAttributeError(path.Root("archive"), "Cannot Write Kit Archive", err.Error())
			return
		}
		m.ArchivePath = types.StringValue(p)
	}
	digest := k.Digest()
	m.ID, m.KitDir, m.KitSHA256 = types.StringValue(dir), types.StringValue(dir), types.StringValue(digest)
	b, _ := json.Marshal(digest)
	diags.Append(priv.SetKey(ctx, privateWrittenDigest, b)...)
}

// kitInput gathers the kit's inputs: descriptors from the plan, the root
// CA and the participant's key from the project's key store (CA directory
// or Vault KV). The key reaches the disk only inside the kit.
func (r *startupKitResource) kitInput(ctx context.Context, m *startupKitModel) (kit.Input, error) {
	self, server, relay, ferr := m.descriptors()
	if ferr != nil {
		return kit.Input{}, ferr
	}
	in := kit.Input{Participant: self.Participant, Server: server.Participant, CertPEM: []byte(self.CertPEM)}
	if relay != nil {
		in.Relay = &relay.Participant
	}
	if in.RelayedClients, ferr = m.relayedClients(self.ProjectID); ferr != nil {
		return in, ferr
	}
	cc, diags := ccSettings(ctx, m.CC)
	if diags.HasError() {
		return in, fmt.Errorf("cc: %s", diags.Errors()[0].Detail())
	}
	in.CC = cc
	ca, ref, err := r.ca(ctx, self.ProjectID)
	if err != nil {
		return in, err
	}
	if in.Line, err = ref.line(); err != nil {
		return in, err
	}
	in.Project, in.Signer, in.RootCAPEM = ca.Cert.Subject.CommonName, ca.Signer, pki.CertPEM(ca.Cert)
	store, _, err := r.storeFor(ctx, self.ProjectID)
	if err != nil {
		return in, err
	}
	key, err := store.ParticipantKey(ctx, self.Participant.Name)
	if err != nil {
		return in, fmt.Errorf("%s %q: %w; restore it: %s", self.Participant.Type, self.Participant.Name, err, store.Restore())
	}
	cert, err := pki.ParseCertPEM(in.CertPEM)
	if err != nil {
		return in, fmt.Errorf("participant certificate: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return in, fmt.Errorf("%s does not match %q's certificate: the key was replaced outside Terraform", store.KeyLocation(self.Participant.Name), self.Participant.Name)
	}
	if err := cert.CheckSignatureFrom(ca.Cert); err != nil {
		return in, fmt.Errorf("%q's certificate is not signed by the project's root CA: %w", self.Participant.Name, err)
	}
	in.KeyPEM = pki.KeyPEM(key)
	return in, nil
}

func (r *startupKitResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state startupKitModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	dir := state.KitDir.ValueString()
	digest, err := kit.DigestDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		digest = "absent"
	case err != nil:
		resp.Diagnostics.AddError("Cannot Read Startup Kit", err.Error())
		return
	}
	if state.ArchivePath.ValueString() != "" {
		if _, err := os.Stat(state.ArchivePath.ValueString()); errors.Is(err, fs.ErrNotExist) {
			digest += "+archive-absent"
		}
	}
	state.KitSHA256 = types.StringValue(digest)
	if state.OutputDir.IsNull() { // import
		state.OutputDir = types.StringValue(filepath.Dir(dir))
		state.Archive = types.StringValue(kit.ArchiveNone)
		state.ArchivePath = types.StringNull()
		b, _ := json.Marshal(digest)
		resp.Diagnostics.Append(resp.Private.SetKey(ctx, privateWrittenDigest, b)...)
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, state)...)
}

func (r *startupKitResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state startupKitModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if err := os.RemoveAll(state.KitDir.ValueString()); err != nil {
		resp.Diagnostics.AddError("Cannot Remove Startup Kit", err.Error())
	}
	if p := state.ArchivePath.ValueString(); p != "" {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			resp.Diagnostics.AddError("Cannot Remove Kit Archive", err.Error())
		}
	}
}

// ImportState takes the kit directory. The participant, server and relay
// arguments come from configuration; the next apply rewrites the kit from them.
func (r *startupKitResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if _, err := os.Stat(filepath.Join(req.ID, "startup")); err != nil {
		resp.Diagnostics.AddError("Not A Startup Kit", fmt.Sprintf("%s has no startup/ folder: give the kit directory, e.g. kits/site-1", req.ID))
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), req.ID)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("kit_dir"), req.ID)...)
}
