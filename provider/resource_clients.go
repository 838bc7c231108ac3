package provider

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"

	"github.com/hashicorp/terraform-plugin-framework-validators/float64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/mapvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
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
	_ resource.ResourceWithModifyPlan     = (*clientsResource)(nil)
	_ resource.ResourceWithValidateConfig = (*clientsResource)(nil)
)

// NewClientsResource is the flare_clients factory.
func NewClientsResource() resource.Resource { return &clientsResource{} }

// clientsResource manages many clients and their kits as one resource.
// Terraform's cost grows faster than linearly with for_each instances, so
// a federation of a thousand sites is one instance here, and the keys are
// made in parallel.
type clientsResource struct {
	withProviderData
}

type clientsModel struct {
	ID           types.String `tfsdk:"id"`
	ProjectID    types.String `tfsdk:"project_id"`
	Server       types.String `tfsdk:"server"`
	Relayed      types.List   `tfsdk:"relayed_clients"`
	OutputDir    types.String `tfsdk:"output_dir"`
	Archive      types.String `tfsdk:"archive"`
	ValidityDays types.Int64  `tfsdk:"validity_days"`
	Clients      types.Map    `tfsdk:"clients"`
	KitSHA256    types.Map    `tfsdk:"kit_sha256"`
	KitDirs      types.Map    `tfsdk:"kit_dirs"`
}

type clientSpec struct {
	Org            types.String  `tfsdk:"org"`
	NumGPUs        types.Int64   `tfsdk:"num_gpus"`
	MemPerGPUInGiB types.Float64 `tfsdk:"mem_per_gpu_in_gib"`
	CC             types.Object  `tfsdk:"cc"`
	Trigger        types.String  `tfsdk:"rotation_trigger"`
}

// issuedClient is what apply knows of one client's kit. State keeps only
// the digest per client (and the derived directory): the framework's cost
// grows with every attribute of every map entry.
type issuedClient struct {
	KitDir    string
	KitSHA256 string
}

func (r *clientsResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_clients"
}

func (r *clientsResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	descriptor := descriptorCheck
	resp.Schema = schema.Schema{
		MarkdownDescription: "Many FL clients of a project with their keys, certificates and startup kits, as one " +
			"resource. Use it for large federations: Terraform's own cost per `for_each` instance grows with the " +
			"instance count, while this resource issues keys in parallel and touches only the clients whose entry " +
			"changed. Adding a client issues one certificate and writes one kit; removing one deletes its key and kit; " +
			"a capacity or `cc` change rewrites only that kit; a kit edited outside Terraform is rewritten by the next apply. " +
			"Each kit is the same as `flare_startup_kit` writes for a `flare_client` (with the client's `cc`, a CC kit).",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
				MarkdownDescription: "The output directory."},
			"project_id": schema.StringAttribute{Required: true, PlanModifiers: projectIDModifiers(),
				MarkdownDescription: "`flare_project.<name>.id`: the CA that signs the clients, and the NVFlare line their kits follow. A new line on the same CA rewrites every kit and keeps keys and certificates.",
				Validators:          []validator.String{projectIDCheck}},
			"server": schema.StringAttribute{Required: true, Validators: []validator.String{descriptor},
				MarkdownDescription: "`flare_server.<name>.descriptor`: the server the clients connect to."},
			"relayed_clients": schema.ListAttribute{Optional: true, ElementType: types.StringType,
				Validators: []validator.List{listvalidator.ValueStringsAre(descriptor)},
				MarkdownDescription: "The `descriptor`s of the project's clients that connect through a relay, as " +
					"`flare_startup_kit.relayed_clients`: NVFlare 2.9 kits map their cell names to their certificates."},
			"output_dir": schema.StringAttribute{Required: true, PlanModifiers: replace,
				MarkdownDescription: "Directory that holds the kits: `<output_dir>/<client name>/`."},
			"archive": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString(kit.ArchiveNone),
				Validators:          []validator.String{stringvalidator.OneOf(kit.ArchiveNone, kit.ArchiveTGZ, kit.ArchiveZIP)},
				MarkdownDescription: "Also pack each kit as `<output_dir>/<name>.tgz` or `.zip`: `none` (default), `tgz`, `zip`."},
			"validity_days": schema.Int64Attribute{Optional: true, Computed: true, Default: int64default.StaticInt64(defaultCertDays),
				PlanModifiers:       []planmodifier.Int64{int64planmodifier.RequiresReplace()},
				Validators:          []validator.Int64{int64validator.Between(1, 36500)},
				MarkdownDescription: fmt.Sprintf("Days each certificate is valid. Defaults to %d.", defaultCertDays)},
			"clients": schema.MapNestedAttribute{Required: true,
				MarkdownDescription: "Clients by name (NVFlare's client naming rules apply to the keys).",
				Validators: []validator.Map{mapvalidator.SizeAtLeast(1), mapvalidator.KeysAre(stringCheck{summary: "Invalid Client Name",
					desc: "a client name NVFlare accepts", check: func(s string) error { return project.ValidateName(project.TypeClient, s) }})},
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"org": schema.StringAttribute{Required: true, MarkdownDescription: "Organisation; in the certificate.",
						Validators: []validator.String{stringCheck{summary: "Invalid Org", desc: "letters, digits and _", check: project.ValidateOrg}}},
					"num_gpus": schema.Int64Attribute{Optional: true, Validators: []validator.Int64{int64validator.AtLeast(0)},
						MarkdownDescription: "GPUs the site offers (0 when unset)."},
					"mem_per_gpu_in_gib": schema.Float64Attribute{Optional: true, Validators: []validator.Float64{float64validator.AtLeast(0)},
						MarkdownDescription: "Memory per GPU in GiB (0 when unset)."},
					"cc": ccSchema(),
					rotationTrigger: entryRotationTriggerAttribute("the client's",
						"apply issues this client a new private key and certificate and writes its kit again; the other clients, "+
							"their keys and kits are untouched (`terraform apply -replace` of this resource would rotate every client)",
						"A client whose key is lost is never given a new one by itself (the plan fails and says how to restore it); "+
							"changing its `rotation_trigger` is how to give it a new key on purpose, as `-replace` does for `flare_client`."),
				}},
			},
			"kit_sha256": schema.MapAttribute{Computed: true, ElementType: types.StringType,
				MarkdownDescription: "Per client, the digest of its kit's managed files as on disk (see `flare_startup_kit.kit_sha256`). Certificates and keys stay in the CA directory, none of it in state."},
			"kit_dirs": schema.MapAttribute{Computed: true, ElementType: types.StringType,
				MarkdownDescription: "Per client, its kit directory: `<output_dir>/<name>`."},
		},
	}
}

// entries is clients as configured, by name.
func (m *clientsModel) entries(ctx context.Context) (map[string]clientSpec, error) {
	var raw map[string]clientSpec
	if d := m.Clients.ElementsAs(ctx, &raw, false); d.HasError() {
		return nil, fmt.Errorf("clients: %v", d)
	}
	return raw, nil
}

func (s clientSpec) participant(name string) project.Participant {
	return project.Participant{Type: project.TypeClient, Name: name, Org: s.Org.ValueString(),
		NumGPUs: int(s.NumGPUs.ValueInt64()), MemPerGPUInGiB: s.MemPerGPUInGiB.ValueFloat64()}
}

// rotated reports whether s rotates the key of the client o was.
func (s clientSpec) rotated(o clientSpec) bool { return !s.Trigger.Equal(o.Trigger) }

// kitChanged reports whether o and s give one client different kits with
// the same key (org and rotation_trigger, which reissue, aside).
func (s clientSpec) kitChanged(o clientSpec) bool {
	return s.NumGPUs.ValueInt64() != o.NumGPUs.ValueInt64() || s.MemPerGPUInGiB.ValueFloat64() != o.MemPerGPUInGiB.ValueFloat64() ||
		!s.CC.Equal(o.CC)
}

func (m *clientsModel) specs(ctx context.Context) (map[string]project.Participant, error) {
	raw, err := m.entries(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]project.Participant, len(raw))
	for name, s := range raw {
		out[name] = s.participant(name)
	}
	return out, nil
}

func (m *clientsModel) issued(ctx context.Context) map[string]issuedClient {
	out := map[string]issuedClient{}
	var digests map[string]string
	if !m.KitSHA256.IsNull() && !m.KitSHA256.IsUnknown() {
		m.KitSHA256.ElementsAs(ctx, &digests, false)
	}
	for name, d := range digests {
		out[name] = issuedClient{KitDir: filepath.Join(m.OutputDir.ValueString(), name), KitSHA256: d}
	}
	return out
}

// setIssued stores the per-client digests and directories.
func (m *clientsModel) setIssued(ctx context.Context, issued map[string]issuedClient) diag.Diagnostics {
	digests := make(map[string]string, len(issued))
	dirs := make(map[string]string, len(issued))
	for name, c := range issued {
		digests[name], dirs[name] = c.KitSHA256, c.KitDir
	}
	var diags diag.Diagnostics
	var d diag.Diagnostics
	m.KitSHA256, d = types.MapValueFrom(ctx, types.StringType, digests)
	diags.Append(d...)
	m.KitDirs, d = types.MapValueFrom(ctx, types.StringType, dirs)
	diags.Append(d...)
	return diags
}

func (r *clientsResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m clientsModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	// Each client's cc, as flare_startup_kit checks its cc.
	for name, v := range m.Clients.Elements() {
		obj, ok := v.(types.Object)
		if !ok || obj.IsNull() || obj.IsUnknown() {
			continue
		}
		var s clientSpec
		if d := obj.As(ctx, &s, basetypesObjectAsOptions); d.HasError() {
			continue
		}
		resp.Diagnostics.Append(validateCCConfig(ctx, s.CC, s.participant(name), path.Root("clients").AtMapKey(name).AtName("cc"))...)
	}
	if m.Server.IsUnknown() || m.Server.IsNull() {
		return
	}
	srv, err := parseDescriptor(m.Server.ValueString())
	if err != nil {
		return
	}
	if srv.Participant.Type != project.TypeServer {
		resp.Diagnostics.AddAttributeError(path.Root("server"), "Not A Server",
			fmt.Sprintf("server: got the descriptor of %s %q; use flare_server.<name>.descriptor", srv.Participant.Type, srv.Participant.Name))
	} else if !m.ProjectID.IsUnknown() && srv.ProjectID != m.ProjectID.ValueString() {
		resp.Diagnostics.AddAttributeError(path.Root("server"), "Server Of Another Project",
			fmt.Sprintf("server: %q belongs to project %s, not %s", srv.Participant.Name, srv.ProjectID, m.ProjectID.ValueString()))
	}
}

// ModifyPlan keeps the issued entries of clients that will not change and
// marks only the others unknown, so a plan for one new client shows one
// entry, not the whole federation. A kit on disk that is not what apply
// wrote counts as a change.
func (r *clientsResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() {
		return
	}
	var plan, state clientsModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	written, diags := req.Private.GetKey(ctx, privateWrittenDigest)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() || plan.Clients.IsUnknown() {
		return
	}
	var want map[string]string
	_ = json.Unmarshal(written, &want)
	specs, err := plan.specs(ctx)
	if err != nil {
		return
	}
	oldSpecs, _ := state.specs(ctx)
	entries, _ := plan.entries(ctx)
	oldEntries, _ := state.entries(ctx)
	old := state.issued(ctx)
	missing := false
	for _, prev := range old {
		missing = missing || prev.KitSHA256 == digestKeyMissing
	}
	if store, _, err := r.storeFor(ctx, state.ProjectID.ValueString()); missing && err == nil {
		for name, p := range specs {
			if prev, had := old[name]; had && prev.KitSHA256 == digestKeyMissing && oldSpecs[name].Org == p.Org && !entries[name].rotated(oldEntries[name]) {
				msg := "its private key is missing or does not match its certificate"
				if _, _, err := checkClientKey(ctx, store, name); err != nil {
					msg = err.Error()
				}
				resp.Diagnostics.AddAttributeError(path.Root("clients").AtMapKey(name), "Client Key Missing",
					keyMissingDetail("flare_clients client", name, msg, store.Restore()+
						" To give only this client a new key, change its "+rotationTrigger+" in clients and run terraform apply "+
						"(or remove it from clients in one apply, which deletes its key and kit, and add it back in the next)."))
			}
		}
		if resp.Diagnostics.HasError() {
			return
		}
	}
	everything := plan.Server.IsUnknown() || plan.Server.ValueString() != state.Server.ValueString() ||
		plan.Archive.ValueString() != state.Archive.ValueString() || !plan.Relayed.Equal(state.Relayed)
	digests := make(map[string]attr.Value, len(specs))
	dirs := make(map[string]attr.Value, len(specs))
	changed := len(old) != len(specs)
	for name, p := range specs {
		dirs[name] = types.StringValue(filepath.Join(plan.OutputDir.ValueString(), name))
		prev, had := old[name]
		o := oldSpecs[name]
		if everything || !had || o.Org != p.Org || entries[name].rotated(oldEntries[name]) || entries[name].kitChanged(oldEntries[name]) ||
			(written != nil && want[name] != prev.KitSHA256) {
			digests[name] = types.StringUnknown()
			changed = true
			continue
		}
		digests[name] = types.StringValue(prev.KitSHA256)
	}
	if !changed {
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("kit_sha256"), state.KitSHA256)...)
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("kit_dirs"), state.KitDirs)...)
		return
	}
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("kit_sha256"), types.MapValueMust(types.StringType, digests))...)
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("kit_dirs"), types.MapValueMust(types.StringType, dirs))...)
}

func (r *clientsResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan clientsModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	r.apply(ctx, &plan, nil, nil, resp.Private, &resp.Diagnostics)
	if !resp.Diagnostics.HasError() {
		resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
	}
}

func (r *clientsResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state clientsModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	written, diags := req.Private.GetKey(ctx, privateWrittenDigest)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	var want map[string]string
	_ = json.Unmarshal(written, &want)
	r.apply(ctx, &plan, &state, want, resp.Private, &resp.Diagnostics)
	if !resp.Diagnostics.HasError() {
		resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
	}
}

// clientWork is what apply does for one client.
type clientWork struct {
	p       project.Participant
	cc      *kit.CC // the client's cc: a CC kit
	reissue bool    // new key and certificate
	replace bool    // ... in place of the client's current ones
	rewrite bool    // new kit with the existing key
	result  issuedClient
	err     error
}

// apply brings the clients on disk to the plan: new or re-organised clients
// get a key and certificate, changed or drifted kits are rewritten, removed
// clients lose their key and kit, and everything else is left untouched.
func (r *clientsResource) apply(ctx context.Context, plan, state *clientsModel, written map[string]string, priv privateState, diags *diag.Diagnostics) {
	specs, err := plan.specs(ctx)
	if err != nil {
		diags.AddAttributeError(path.Root("clients"), "Invalid Clients", err.Error())
		return
	}
	srv, err := parseDescriptor(plan.Server.ValueString())
	if err != nil {
		diags.AddAttributeError(path.Root("server"), "Invalid Server", err.Error())
		return
	}
	ca, ref, err := r.ca(ctx, plan.ProjectID.ValueString())
	if err != nil {
		diags.AddError("Cannot Load Project CA", err.Error())
		return
	}
	store, _, err := r.storeFor(ctx, plan.ProjectID.ValueString())
	if err != nil {
		diags.AddError("Cannot Open Project Key Store", err.Error())
		return
	}
	out := plan.OutputDir.ValueString()

	entries, err := plan.entries(ctx)
	if err != nil {
		diags.AddAttributeError(path.Root("clients"), "Invalid Clients", err.Error())
		return
	}
	old := map[string]issuedClient{}
	oldSpecs := map[string]project.Participant{}
	oldEntries := map[string]clientSpec{}
	serverChanged, archiveChanged := false, false
	if state != nil {
		old = state.issued(ctx)
		oldSpecs, _ = state.specs(ctx)
		oldEntries, _ = state.entries(ctx)
		serverChanged = state.Server.ValueString() != plan.Server.ValueString() || !state.Relayed.Equal(plan.Relayed)
		archiveChanged = state.Archive.ValueString() != plan.Archive.ValueString()
	}

	var work []*clientWork
	for name, p := range specs {
		prev, had := old[name]
		w := &clientWork{p: p, result: prev}
		cc, d := ccSettings(ctx, entries[name].CC)
		if d.HasError() {
			for _, e := range d.Errors() {
				diags.AddAttributeError(path.Root("clients").AtMapKey(name).AtName("cc"), e.Summary(), e.Detail())
			}
			continue
		}
		w.cc = cc
		switch {
		case !had:
			taken, ok, err := participantNameTaken(ctx, store, name)
			if err != nil {
				diags.AddError("Cannot Read Project Key Store", err.Error())
				continue
			}
			if ok {
				diags.AddAttributeError(path.Root("clients").AtMapKey(name), "Duplicate Participant Name",
					fmt.Sprintf("clients[%q]: this name is already a participant of the project (%s exists); names must be unique", name, taken))
				continue
			}
			w.reissue = true
		case oldSpecs[name].Org != p.Org || entries[name].rotated(oldEntries[name]):
			w.reissue, w.replace = true, true
		case entries[name].kitChanged(oldEntries[name]) || serverChanged || archiveChanged || written[name] != prev.KitSHA256:
			w.rewrite = true
		}
		work = append(work, w)
	}
	if diags.HasError() {
		return
	}
	// Shared by every kit of this apply: each file all client kits have
	// (rootCA.pem, the local/ defaults) is signed once, not once per kit.
	shared := clientShared{ca: ca, rootPEM: pki.CertPEM(ca.Cert), sigs: kit.NewSignatureCache(ca.Signer)}
	if shared.line, err = ref.line(); err != nil {
		diags.AddAttributeError(path.Root("project_id"), "Invalid Project ID", err.Error())
		return
	}
	relayed := startupKitModel{Relayed: plan.Relayed}
	var ferr *project.FieldError
	if shared.relayed, ferr = relayed.relayedClients(plan.ProjectID.ValueString()); ferr != nil {
		diags.AddAttributeError(path.Root(ferr.Field), "Invalid Relayed Clients", ferr.Error())
		return
	}
	r.runParallel(work, func(w *clientWork) {
		w.err = r.applyClient(ctx, w, shared, store, srv.Participant, plan, out)
	})
	newDigests := map[string]string{}
	issued := map[string]issuedClient{}
	for _, w := range work {
		if w.err != nil {
			diags.AddAttributeError(path.Root("clients").AtMapKey(w.p.Name), "Cannot Provision Client", w.err.Error())
			continue
		}
		issued[w.p.Name] = w.result
		newDigests[w.p.Name] = w.result.KitSHA256
	}
	if diags.HasError() {
		return
	}
	for name, prev := range old {
		if _, keep := specs[name]; keep {
			continue
		}
		_ = os.RemoveAll(prev.KitDir)
		kit.RemoveArchives(out, name, kit.ArchiveNone)
		if err := store.RemoveParticipant(ctx, name); err != nil {
			diags.AddError("Cannot Remove Client Key", err.Error())
		}
	}
	diags.Append(plan.setIssued(ctx, issued)...)
	plan.ID = types.StringValue(out)
	b, _ := json.Marshal(newDigests)
	diags.Append(priv.SetKey(ctx, privateWrittenDigest, b)...)
}

// digestKeyMissing stands in a client's kit_sha256 when refresh found its
// key gone, unreadable or replaced: the plan fails while the client is in
// clients (a new key is never a side effect), and removing the client is
// how to give it a new one.
const digestKeyMissing = "key-missing"

// checkClientKey reports what is wrong with a client's key: missing,
// unreadable, or not the key of its certificate. A missing key is an
// error, never a reissue: removing the client from clients (which deletes
// its key and kit) and adding it back in a later apply issues a new one.
func checkClientKey(ctx context.Context, store caStore, name string) (*rsa.PrivateKey, []byte, error) {
	key, err := store.ParticipantKey(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	certPEM, err := store.ParticipantCert(ctx, name)
	if err != nil {
		return nil, nil, fmt.Errorf("its certificate cannot be read: %w", err)
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("its certificate: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("%s holds another key than the one its certificate is for (replaced outside Terraform?)", store.KeyLocation(name))
	}
	return key, certPEM, nil
}

// runParallel runs f over work with one worker per CPU: key generation
// dominates and is CPU-bound.
func (r *clientsResource) runParallel(work []*clientWork, f func(*clientWork)) {
	jobs := make(chan *clientWork)
	var wg sync.WaitGroup
	for i := 0; i < runtime.NumCPU(); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w := range jobs {
				f(w)
			}
		}()
	}
	for _, w := range work {
		if w.reissue || w.rewrite {
			jobs <- w
		}
	}
	close(jobs)
	wg.Wait()
}

// clientShared is what every client of one apply is made with.
type clientShared struct {
	ca      pki.CA
	rootPEM []byte
	sigs    *kit.SignatureCache
	line    *kit.Line
	relayed []project.Participant
}

func (r *clientsResource) applyClient(ctx context.Context, w *clientWork, shared clientShared, store caStore, server project.Participant, plan *clientsModel, out string) error {
	p, ca := w.p, shared.ca
	if err := p.Validate(); err != nil {
		return err
	}
	var certPEM []byte
	var key *rsa.PrivateKey
	var err error
	if w.reissue {
		if key, err = pki.GenerateKey(); err != nil {
			return err
		}
		cert, err := ca.Issue(pki.LeafRequest{
			Subject:   pki.Subject{CommonName: p.Name, Organization: p.Org, Role: p.CertRole()},
			PublicKey: &key.PublicKey, DNSNames: []string{p.Name},
			Validity: pki.ValidityFor(now(), int(plan.ValidityDays.ValueInt64())),
			Profile:  shared.line.Certs,
		})
		if err != nil {
			return err
		}
		certPEM = pki.CertPEM(cert)
		if w.replace {
			if err := store.RemoveParticipant(ctx, p.Name); err != nil {
				return err
			}
		}
		if err := store.SaveParticipant(ctx, p.Name, key, certPEM); err != nil {
			return err
		}
	} else {
		if key, certPEM, err = checkClientKey(ctx, store, p.Name); err != nil {
			return fmt.Errorf("client %q: %v; restore it: %s", p.Name, err, store.Restore())
		}
	}
	k, err := kit.Build(kit.Input{Project: ca.Cert.Subject.CommonName, Participant: p, Server: server,
		RootCAPEM: shared.rootPEM, CertPEM: certPEM, KeyPEM: pki.KeyPEM(key), Signer: ca.Signer, Signatures: shared.sigs,
		Line: shared.line, RelayedClients: shared.relayed, CC: w.cc})
	if err != nil {
		return err
	}
	dir, err := k.Write(out)
	if err != nil {
		return err
	}
	kit.RemoveArchives(out, p.Name, plan.Archive.ValueString())
	if a := plan.Archive.ValueString(); a != kit.ArchiveNone {
		if _, err := k.WriteArchive(out, a); err != nil {
			return err
		}
	}
	w.result = issuedClient{KitDir: dir, KitSHA256: k.Digest()}
	return nil
}

// Read records each kit's digest as on disk; ModifyPlan compares it with
// what apply wrote.
func (r *clientsResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state clientsModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	store, _, err := r.storeFor(ctx, state.ProjectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot Open Project Key Store", err.Error())
		return
	}
	issued := state.issued(ctx)
	names := make([]string, 0, len(issued))
	for n := range issued {
		names = append(names, n)
	}
	sort.Strings(names)
	// Digests and key checks are independent per client: spread them over the CPUs.
	var mu sync.Mutex
	var firstErr error
	keyErrs := map[string]error{}
	work := make(chan string)
	var wg sync.WaitGroup
	for i := 0; i < runtime.NumCPU(); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				mu.Lock()
				c := issued[name]
				mu.Unlock()
				digest, err := kit.DigestDir(c.KitDir)
				if errors.Is(err, fs.ErrNotExist) {
					digest, err = "absent", nil
				}
				_, _, keyErr := checkClientKey(ctx, store, name)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if keyErr != nil {
					keyErrs[name] = keyErr
				}
				c.KitSHA256 = digest
				issued[name] = c
				mu.Unlock()
			}
		}()
	}
	for _, name := range names {
		work <- name
	}
	close(work)
	wg.Wait()
	for name := range keyErrs {
		c := issued[name]
		c.KitSHA256 = digestKeyMissing // ModifyPlan refuses it while the client stays
		issued[name] = c
	}
	if firstErr != nil {
		resp.Diagnostics.AddError("Cannot Read Startup Kit", firstErr.Error())
		return
	}
	resp.Diagnostics.Append(state.setIssued(ctx, issued)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, state)...)
}

func (r *clientsResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state clientsModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	store, _, err := r.storeFor(ctx, state.ProjectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot Open Project Key Store", err.Error())
		return
	}
	out := state.OutputDir.ValueString()
	for name, c := range state.issued(ctx) {
		_ = os.RemoveAll(c.KitDir)
		kit.RemoveArchives(out, name, kit.ArchiveNone)
		if err := store.RemoveParticipant(ctx, name); err != nil {
			resp.Diagnostics.AddError("Cannot Remove Client Key", err.Error())
		}
	}
}
