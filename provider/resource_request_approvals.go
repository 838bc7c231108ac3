package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/internal/approve"
	"github.com/flarekit/terraform-provider-flare/internal/localca"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

var _ resource.ResourceWithModifyPlan = (*requestApprovalsResource)(nil)

// NewRequestApprovalsResource is the flare_request_approvals factory.
func NewRequestApprovalsResource() resource.Resource { return &requestApprovalsResource{} }

// requestApprovalsResource is flare_request_approval for many requests as
// one resource: Terraform's cost per for_each instance dominates a thousand
// approvals, while the signing itself takes milliseconds. State keeps one
// path and one digest per participant; what apply knows of each approval
// (the request it checked, the certificate's digest) is private state.
type requestApprovalsResource struct {
	withProviderData
}

type requestApprovalsModel struct {
	ID                 types.String `tfsdk:"id"`
	ProjectID          types.String `tfsdk:"project_id"`
	Server             types.String `tfsdk:"server"`
	RequestZips        types.List   `tfsdk:"request_zips"`
	Scheme             types.String `tfsdk:"scheme"`
	ConnectionSecurity types.String `tfsdk:"connection_security"`
	ValidityDays       types.Int64  `tfsdk:"validity_days"`
	OutputDir          types.String `tfsdk:"output_dir"`
	SignedZips         types.Map    `tfsdk:"signed_zips"`
	SignedZipSHA256    types.Map    `tfsdk:"signed_zip_sha256"`
	RootCAFingerprint  types.String `tfsdk:"rootca_fingerprint_sha256"`
}

// privateApprovals holds, per participant, the approvalRecord apply made.
const privateApprovals = "approvals"

// approvalRecord is what apply knows of one approval. The request fields
// are those of a request zip that passed every check of
// approve.ParseRequestZip; a plan finding the same bytes (RequestSHA) at
// the same path uses them instead of parsing the zip again.
type approvalRecord struct {
	Source     string `json:"src"` // the request zip's path as configured
	RequestSHA string `json:"req"` // SHA-256 of the request zip
	RequestID  string `json:"id"`
	PublicKey  string `json:"key"` // SHA-256 of the key's SubjectPublicKeyInfo
	Project    string `json:"project"`
	Org        string `json:"org"`
	CertType   string `json:"type"`
	Zip        string `json:"zip"` // SHA-256 of the signed zip written
	Cert       string `json:"crt"` // SHA-256 of the certificate PEM

	name string // the participant: the record's key
}

func (r *requestApprovalsResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_request_approvals"
}

func (r *requestApprovalsResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	descriptor := descriptorCheck
	resp.Schema = schema.Schema{
		MarkdownDescription: "Approves many NVFlare 2.9 certificate requests as one resource: `flare_request_approval` " +
			"for large federations, where Terraform's own cost per `for_each` instance dominates. Every request zip is " +
			"checked at plan time as `flare_request_approval` checks one; apply approves new requests in parallel, leaves " +
			"unchanged approvals untouched, rewrites a signed zip deleted or edited on disk (same certificate), approves " +
			"again a request with a new key or request id, and removes the signed zip and key store record of a request " +
			"that left the set. State holds one path and one digest per participant; the certificates are recorded in the " +
			"project's key store (its CA directory, or Vault KV for a `vault_transit` project). Needs a project on NVFlare 2.9 (`nvflare_version`).",
		Attributes: withApprovalSettings("each", map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "The output directory."},
			"project_id": schema.StringAttribute{
				Required: true, PlanModifiers: projectIDModifiers(),
				MarkdownDescription: "`flare_project.<name>.id`: the CA that signs the certificates. Each request's project must be this project's name.",
				Validators:          []validator.String{projectIDCheck},
			},
			"server": schema.StringAttribute{
				Required: true, Validators: []validator.String{descriptor},
				MarkdownDescription: "`flare_server.<name>.descriptor`: the server the sites' kits connect to, named after its host. " +
					"A change rewrites every signed zip (same certificates).",
			},
			"request_zips": schema.ListAttribute{
				Required: true, ElementType: types.StringType,
				Validators: []validator.List{listvalidator.SizeAtLeast(1), listvalidator.ValueStringsAre(stringvalidator.LengthAtLeast(1))},
				MarkdownDescription: "Paths of the `<name>.request.zip` files the sites made with `nvflare cert request`, for example " +
					"`[for f in fileset(\"requests\", \"*.request.zip\") : \"requests/${f}\"]`. The order does not matter and a path may " +
					"appear once. (A list, not a set: the plugin framework compares the elements of a set pairwise on every refresh and " +
					"apply, seconds for a thousand paths.) Each is checked at plan time as `flare_request_approval.request_zip` is, " +
					"and must stay readable. Two requests of one name are refused.",
			},
			"output_dir": schema.StringAttribute{
				Required: true, Validators: []validator.String{stringvalidator.LengthAtLeast(1)},
				MarkdownDescription: "Directory for the `<participant name>.signed.zip` files (mode 0644: certificates and metadata only). A change moves them.",
			},
			"signed_zips": schema.MapAttribute{
				Computed: true, ElementType: types.StringType,
				MarkdownDescription: "Per participant name, the path of its signed zip to return to the site.",
			},
			"signed_zip_sha256": schema.MapAttribute{
				Computed: true, ElementType: types.StringType,
				MarkdownDescription: "Per participant name, the SHA-256 of its signed zip on disk (empty when it is gone). An edited or " +
					"deleted zip shows in the plan and apply rewrites it with the same certificate.",
			},
			"rootca_fingerprint_sha256": schema.StringAttribute{
				Computed: true, PlanModifiers: keep,
				MarkdownDescription: "The root's fingerprint as `SHA256:AA:BB:…`: give it to the sites out of band for `nvflare package --fingerprint`.",
			},
		}),
	}
}

// bulkOwner is the .approval content of one of this resource's approvals.
// It differs from flare_request_approval's, so neither takes the other's
// record for its own.
func bulkOwner(outputDir, name, source string) string {
	return "resource=flare_request_approvals\n" + ownerRecord(filepath.Join(outputDir, approve.SignedZipName(name)), source)
}

// requestEntry is one request zip of the set: parsed and checked, or taken
// from the record of an earlier approval of the same bytes.
type requestEntry struct {
	Path string
	SHA  string
	Name string
	// req is the parsed request; nil when the entry comes from a record.
	req *approve.Request
	rec approvalRecord
	err error
}

// request is the request as far as the checks need it.
func (e *requestEntry) request() *approve.Request {
	if e.req != nil {
		return e.req
	}
	role := ""
	if pki.IsAdminCertType(e.rec.CertType) {
		role = e.rec.CertType
	}
	return &approve.Request{Name: e.Name, Project: e.rec.Project, Org: e.rec.Org, CertType: e.rec.CertType, CertRole: role,
		RequestID: e.rec.RequestID, PublicKeySHA256: e.rec.PublicKey, FromZip: true}
}

// parse checks the request zip fully.
func (e *requestEntry) parse(data []byte) {
	req, err := approve.ParseRequestZip(data)
	if err != nil {
		e.err = fmt.Errorf("%s: %w", e.Path, err)
		return
	}
	e.req, e.Name = req, req.Name
	e.rec = approvalRecord{Source: e.Path, RequestSHA: e.SHA, RequestID: req.RequestID, PublicKey: req.PublicKeySHA256,
		Project: req.Project, Org: req.Org, CertType: req.CertType}
}

// readRequests reads every request zip on all CPUs. A zip whose path and
// bytes are those of a record (an approval made from exactly this file) is
// not parsed again: the same bytes pass the same checks.
func readRequests(paths []string, bySource map[string]approvalRecord) []*requestEntry {
	out := make([]*requestEntry, len(paths))
	parallel(len(paths), func(i int) {
		e := &requestEntry{Path: paths[i]}
		out[i] = e
		data, err := approve.ReadFile(e.Path, approve.MaxRequestZipBytes)
		if err != nil {
			e.err = err
			return
		}
		e.SHA = sha256Hex(data)
		if rec, ok := bySource[e.Path]; ok && rec.RequestSHA == e.SHA {
			e.Name, e.rec = rec.name, rec
			return
		}
		e.parse(data)
	})
	return out
}

// parallel runs f(0..n-1) with one worker per CPU.
func parallel(n int, f func(i int)) {
	workers := runtime.NumCPU()
	if workers > n {
		workers = n
	}
	var next int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

func requestAttr(i int) path.Path {
	return path.Root("request_zips").AtListIndex(i)
}

// approvalsEnv is what every approval of the set is checked against.
type approvalsEnv struct {
	ref      caRef
	store    caStore
	root     *x509Cert // nil before the project's first apply
	endpoint approve.Endpoint
}

func (m *requestApprovalsModel) known() bool {
	for _, v := range []types.String{m.ProjectID, m.Server, m.Scheme, m.ConnectionSecurity, m.OutputDir} {
		if v.IsUnknown() {
			return false
		}
	}
	if m.RequestZips.IsUnknown() {
		return false
	}
	for _, v := range m.RequestZips.Elements() {
		if v.IsUnknown() {
			return false
		}
	}
	return true
}

// paths lists request_zips in order.
func (m *requestApprovalsModel) paths() []string {
	var out []string
	for _, v := range m.RequestZips.Elements() {
		if s, ok := v.(types.String); ok {
			out = append(out, s.ValueString())
		}
	}
	return out
}

func (m *requestApprovalsModel) env(ctx context.Context, w *withProviderData) (env approvalsEnv, diags diag.Diagnostics) {
	if env.ref, env.store, env.root, diags = w.approvalRoot(ctx, m.ProjectID.ValueString()); diags.HasError() {
		return env, diags
	}
	_, env.endpoint, diags = approvalEndpoint(m.ProjectID.ValueString(), m.Server.ValueString(), m.Scheme.ValueString(), m.ConnectionSecurity.ValueString())
	return env, diags
}

// stringMap reads a map of strings; null or unknown is empty.
func stringMap(ctx context.Context, m types.Map) map[string]string {
	out := map[string]string{}
	if !m.IsNull() && !m.IsUnknown() {
		m.ElementsAs(ctx, &out, false)
	}
	return out
}

// records reads the private records, by participant name.
func records(ctx context.Context, p interface {
	GetKey(context.Context, string) ([]byte, diag.Diagnostics)
}) map[string]approvalRecord {
	out := map[string]approvalRecord{}
	b, _ := p.GetKey(ctx, privateApprovals)
	if b != nil {
		_ = json.Unmarshal(b, &out)
	}
	for name, rec := range out {
		rec.name = name
		out[name] = rec
	}
	return out
}

func bySource(recs map[string]approvalRecord) map[string]approvalRecord {
	out := make(map[string]approvalRecord, len(recs))
	for _, rec := range recs {
		out[rec.Source] = rec
	}
	return out
}

// checkRequests is the plan-time (and again apply-time) check of the set:
// each request as flare_request_approval checks one, no two of one name,
// and a name new to this resource not taken in the project. held are the
// names this resource approved already.
func checkRequests(ctx context.Context, entries []*requestEntry, env approvalsEnv, outputDir string, held map[string]string) (diags diag.Diagnostics) {
	byName := map[string]string{}
	byPath := map[string]bool{}
	for i, e := range entries {
		at, label := requestAttr(i), "request_zips: "+e.Path
		if byPath[filepath.Clean(e.Path)] {
			diags.AddAttributeError(at, "Duplicate Request Zip",
				fmt.Sprintf("%s is listed twice; list each request zip once.", label))
			continue
		}
		byPath[filepath.Clean(e.Path)] = true
		if e.err != nil {
			diags.AddAttributeError(at, "Invalid Certificate Request", fmt.Sprintf("request_zips: %v", e.err))
			continue
		}
		d, fatal := checkApprovable(e.request(), env.root, at, label)
		diags.Append(d...)
		if fatal {
			continue
		}
		if other, dup := byName[e.Name]; dup {
			diags.AddAttributeError(at, "Duplicate Request Name",
				fmt.Sprintf("%s: requests %q too, as %s does. A name is approved once: remove one of the two files from request_zips "+
					"(the older request, if the site made a new one).", label, e.Name, other))
			continue
		}
		byName[e.Name] = e.Path
		diags.Append(checkNotServerName(e.Name, env.endpoint, at, label)...)
		if _, ours := held[e.Name]; !ours {
			msg, err := nameTaken(ctx, env.store, e.Name, bulkOwner(outputDir, e.Name, e.Path))
			if err != nil {
				diags.AddAttributeError(at, "Cannot Read Project Key Store", label+": "+err.Error())
			} else if msg != "" {
				diags.AddAttributeError(at, "Participant Name Taken", label+": "+msg)
			}
		}
	}
	return diags
}

type approvalAction int

const (
	actionKeep    approvalAction = iota
	actionRewrite                // a new signed zip, same certificate
	actionApprove                // a new certificate
)

// decide says what apply does for one request: a new name or a new key is
// approved; a changed server, output_dir, request file or a signed zip not
// as apply wrote it (digest from Read) is rewritten; the rest is kept.
func decide(e *requestEntry, had approvalRecord, ok bool, digest string, everything, reapprove bool) approvalAction {
	switch {
	case !ok || reapprove || had.PublicKey != e.rec.PublicKey || had.RequestID != e.rec.RequestID ||
		had.CertType != e.rec.CertType || had.Org != e.rec.Org:
		return actionApprove
	case everything || had.Source != e.Path || had.RequestSHA != e.SHA || digest != had.Zip:
		return actionRewrite
	}
	return actionKeep
}

// changesAll reports the inputs that rewrite every signed zip.
func changesAll(plan, state *requestApprovalsModel) bool {
	return plan.Server.ValueString() != state.Server.ValueString() || plan.Scheme.ValueString() != state.Scheme.ValueString() ||
		plan.ConnectionSecurity.ValueString() != state.ConnectionSecurity.ValueString() ||
		filepath.Clean(plan.OutputDir.ValueString()) != filepath.Clean(state.OutputDir.ValueString())
}

// ModifyPlan checks every request and plans only the approvals that
// change: a plan for one new request shows one unknown digest.
func (r *requestApprovalsResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() {
		return
	}
	var plan requestApprovalsModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	var state *requestApprovalsModel
	if !req.State.Raw.IsNull() {
		state = &requestApprovalsModel{}
		resp.Diagnostics.Append(req.State.Get(ctx, state)...)
	}
	if resp.Diagnostics.HasError() || !plan.known() {
		return
	}
	env, diags := plan.env(ctx, &r.withProviderData)
	resp.Diagnostics.Append(diags...)
	if diags.HasError() {
		return
	}
	recs := map[string]approvalRecord{}
	var held, digests map[string]string
	if state != nil {
		recs = records(ctx, req.Private)
		held, digests = stringMap(ctx, state.SignedZips), stringMap(ctx, state.SignedZipSHA256)
	}
	entries := readRequests(plan.paths(), bySource(recs))
	resp.Diagnostics.Append(checkRequests(ctx, entries, env, plan.OutputDir.ValueString(), held)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("id"), plan.OutputDir)...)
	rootFP := ""
	if env.root != nil {
		rootFP = approve.Fingerprint(env.root)
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("rootca_fingerprint_sha256"), types.StringValue(rootFP))...)
	}
	zips := make(map[string]attr.Value, len(entries))
	sums := make(map[string]attr.Value, len(entries))
	changed := state == nil || len(held) != len(entries)
	everything, reapprove := false, false
	if state != nil {
		everything = changesAll(&plan, state)
		reapprove = rootFP != "" && rootFP != state.RootCAFingerprint.ValueString()
	}
	for _, e := range entries {
		zips[e.Name] = types.StringValue(filepath.Join(plan.OutputDir.ValueString(), approve.SignedZipName(e.Name)))
		had, ok := recs[e.Name]
		if decide(e, had, ok, digests[e.Name], everything, reapprove) == actionKeep {
			sums[e.Name] = types.StringValue(digests[e.Name])
			continue
		}
		sums[e.Name] = types.StringUnknown()
		changed = true
	}
	if !changed {
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("signed_zips"), state.SignedZips)...)
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("signed_zip_sha256"), state.SignedZipSHA256)...)
		return
	}
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("signed_zips"), types.MapValueMust(types.StringType, zips))...)
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("signed_zip_sha256"), types.MapValueMust(types.StringType, sums))...)
}

func (r *requestApprovalsResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan requestApprovalsModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if r.apply(ctx, &plan, nil, nil, resp.Private, &resp.Diagnostics) {
		resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
	}
}

func (r *requestApprovalsResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state requestApprovalsModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if r.apply(ctx, &plan, &state, records(ctx, req.Private), resp.Private, &resp.Diagnostics) {
		resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
	}
}

// approvalWork is apply's job for one request.
type approvalWork struct {
	e      *requestEntry
	action approvalAction
	had    approvalRecord
	hadOK  bool
	oldZip string // where the previous signed zip is
	rec    approvalRecord
	zip    string
	warn   string
	err    error
	errSum string
}

// apply brings approvals on disk to the plan. It reports whether plan holds
// a state to save: the approvals that succeeded, with errors for the rest.
func (r *requestApprovalsResource) apply(ctx context.Context, plan, state *requestApprovalsModel, old map[string]approvalRecord, priv privateSetter, diags *diag.Diagnostics) bool {
	if !plan.known() {
		diags.AddError("Unknown Approval Inputs", "an input of flare_request_approvals is still unknown at apply")
		return false
	}
	env, d := plan.env(ctx, &r.withProviderData)
	diags.Append(d...)
	if d.HasError() {
		return false
	}
	ca, _, err := r.ca(ctx, plan.ProjectID.ValueString())
	if err != nil {
		diags.AddAttributeError(path.Root("project_id"), "Cannot Load Project CA", err.Error())
		return false
	}
	env.root = ca.Cert
	rootFP := approve.Fingerprint(ca.Cert)
	var held, digests map[string]string
	everything, reapprove := false, false
	if state != nil {
		held, digests = stringMap(ctx, state.SignedZips), stringMap(ctx, state.SignedZipSHA256)
		everything = changesAll(plan, state)
		reapprove = rootFP != state.RootCAFingerprint.ValueString()
	}
	if old == nil {
		old = map[string]approvalRecord{}
	}
	out := plan.OutputDir.ValueString()
	entries := readRequests(plan.paths(), bySource(old))
	diags.Append(checkRequests(ctx, entries, env, out, held)...)
	if diags.HasError() {
		return false
	}

	opts := approve.Options{CA: ca, Server: env.endpoint, ValidDays: int(plan.ValidityDays.ValueInt64()), Now: now()}
	work := make([]*approvalWork, len(entries))
	for i, e := range entries {
		w := &approvalWork{e: e, rec: e.rec, zip: filepath.Join(out, approve.SignedZipName(e.Name))}
		w.had, w.hadOK = old[e.Name]
		w.oldZip = held[e.Name]
		w.action = decide(e, w.had, w.hadOK, digests[e.Name], everything, reapprove)
		if w.action == actionKeep {
			w.rec = w.had
		}
		work[i] = w
	}
	parallel(len(work), func(i int) {
		if w := work[i]; w.action != actionKeep {
			r.applyOne(ctx, w, env, opts, out, state)
		}
	})

	recs := map[string]approvalRecord{}
	zips := map[string]string{}
	sums := map[string]string{}
	keepOld := func(name string) {
		if had, ok := old[name]; ok {
			recs[name], zips[name], sums[name] = had, held[name], digests[name]
		}
	}
	for i, w := range work {
		name := w.e.Name
		if w.warn != "" {
			diags.AddAttributeWarning(requestAttr(i), "Approved Again", w.warn)
		}
		if w.err != nil {
			diags.AddAttributeError(requestAttr(i), w.errSum, fmt.Sprintf("request_zips: %s: %v", w.e.Path, w.err))
			keepOld(name)
			continue
		}
		recs[name], zips[name], sums[name] = w.rec, w.zip, w.rec.Zip
		if w.oldZip != "" && filepath.Clean(w.oldZip) != filepath.Clean(w.zip) {
			if err := os.Remove(w.oldZip); err != nil && !errors.Is(err, fs.ErrNotExist) {
				diags.AddWarning("Old Signed Zip Left", fmt.Sprintf("output_dir changed; %s could not be removed: %v", w.oldZip, err))
			}
		}
	}
	// Requests that left the set: their signed zips and records go.
	for name, had := range old {
		if _, kept := recs[name]; kept {
			continue
		}
		if err := removeApproval(ctx, env.store, name, held[name], had); err != nil {
			diags.AddError("Cannot Remove Approval", err.Error())
			keepOld(name)
		}
	}
	plan.ID = types.StringValue(out)
	plan.RootCAFingerprint = types.StringValue(rootFP)
	var d1, d2 diag.Diagnostics
	plan.SignedZips, d1 = types.MapValueFrom(ctx, types.StringType, zips)
	plan.SignedZipSHA256, d2 = types.MapValueFrom(ctx, types.StringType, sums)
	diags.Append(d1...)
	diags.Append(d2...)
	b, _ := json.Marshal(recs)
	diags.Append(priv.SetKey(ctx, privateApprovals, b)...)
	return true
}

// applyOne approves one request, or rewrites its signed zip with the
// certificate already issued.
func (r *requestApprovalsResource) applyOne(ctx context.Context, w *approvalWork, env approvalsEnv, opts approve.Options, out string, state *requestApprovalsModel) {
	e := w.e
	if e.req == nil {
		data, err := approve.ReadFile(e.Path, approve.MaxRequestZipBytes)
		if err == nil && sha256Hex(data) != e.SHA {
			err = fmt.Errorf("changed while being approved")
		}
		if err != nil {
			w.errSum, w.err = "Invalid Certificate Request", err
			return
		}
		e.parse(data)
		if e.err != nil {
			w.errSum, w.err = "Invalid Certificate Request", e.err
			return
		}
	}
	owner := bulkOwner(out, e.Name, e.Path)
	ours := func(recorded string) bool {
		return recorded == owner || (w.hadOK && state != nil && recorded == bulkOwner(state.OutputDir.ValueString(), e.Name, w.had.Source))
	}
	var a *approve.Approval
	var err error
	if w.action == actionRewrite {
		cert := issuedCert(ctx, env, e.Name, w.had, w.oldZip)
		if cert == nil {
			w.warn = fmt.Sprintf("the certificate of %q is neither in %s nor in its signed zip any more; a new one was issued for the same key.",
				e.Name, env.store.ApprovalWhere(e.Name))
			w.action = actionApprove
		} else if a, err = approve.Package(e.req, cert, opts); err != nil {
			w.errSum, w.err = "Cannot Rebuild Signed Zip", err
			return
		}
	}
	if w.action == actionApprove {
		if a, err = approve.Approve(e.req, opts); err != nil {
			w.errSum, w.err = "Cannot Approve Request", err
			return
		}
	}
	if sum, detail := ensureRecord(ctx, env.store, e.Name, a.CertPEM, owner, ours); sum != "" {
		w.errSum, w.err = sum, errors.New(detail)
		return
	}
	if err := approve.WriteZip(w.zip, a.Zip); err != nil {
		w.errSum, w.err = "Cannot Write Signed Zip", err
		return
	}
	w.rec = e.rec
	w.rec.Zip = sha256Hex(a.Zip)
	w.rec.Cert = sha256Hex(a.CertPEM)
}

// issuedCert finds the certificate an earlier apply issued: the key
// store's record, else the signed zip. nil if neither holds it.
func issuedCert(ctx context.Context, env approvalsEnv, name string, had approvalRecord, oldZip string) *x509Cert {
	if b := recordedCert(ctx, env.store, name); b != nil && sha256Hex(b) == had.Cert {
		if c, err := pki.ParseCertPEM(b); err == nil {
			return c
		}
	}
	if oldZip == "" {
		return nil
	}
	data, err := os.ReadFile(oldZip)
	if err != nil {
		return nil
	}
	s, err := approve.ReadSigned(data, env.root)
	if err != nil || sha256Hex(pki.CertPEM(s.Cert)) != had.Cert {
		return nil
	}
	return s.Cert
}

// removeApproval removes an approval's signed zip (unless the file now
// holds another certificate: another approval wrote it since) and, if it
// still holds the certificate apply issued, its record.
func removeApproval(ctx context.Context, store caStore, name, zipPath string, had approvalRecord) error {
	if data, err := os.ReadFile(zipPath); err == nil && sha256Hex(data) != had.Zip {
		if s, err := approve.ReadSigned(data, nil); err == nil && sha256Hex(pki.CertPEM(s.Cert)) != had.Cert {
			zipPath = ""
		}
	}
	if zipPath != "" {
		if err := os.Remove(zipPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return removeRecord(ctx, store, name, func(rec []byte) bool { return had.Cert != "" && sha256Hex(rec) == had.Cert })
}

// Read records each signed zip's digest as on disk; ModifyPlan compares it
// with what apply wrote. A lost or changed record counts as drift too (the
// rewrite restores it).
func (r *requestApprovalsResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state requestApprovalsModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	store, _, err := r.storeFor(ctx, state.ProjectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot Open Project Key Store", err.Error())
		return
	}
	if _, err := store.RootCert(ctx); errors.Is(err, localca.ErrNoCA) {
		resp.Diagnostics.AddError("Project Root CA Missing", rootMissingDetail(state.ProjectID.ValueString(), err.Error(), store.Restore()))
		return
	} else if err != nil {
		resp.Diagnostics.AddError("Cannot Load Project Root", err.Error())
		return
	}
	recs := records(ctx, req.Private)
	zips := stringMap(ctx, state.SignedZips)
	names := make([]string, 0, len(zips))
	for n := range zips {
		names = append(names, n)
	}
	sums := make([]string, len(names))
	errs := make([]error, len(names))
	parallel(len(names), func(i int) {
		name := names[i]
		data, err := os.ReadFile(zips[name])
		switch {
		case err == nil:
			sums[i] = sha256Hex(data)
		case !errors.Is(err, fs.ErrNotExist):
			errs[i] = err
			return
		}
		if rec := recordedCert(ctx, store, name); rec == nil || sha256Hex(rec) != recs[name].Cert {
			sums[i] = ""
		}
	})
	if err := errors.Join(errs...); err != nil {
		resp.Diagnostics.AddError("Cannot Read Signed Zip", err.Error())
		return
	}
	m := make(map[string]string, len(names))
	for i, n := range names {
		m[n] = sums[i]
	}
	var d diag.Diagnostics
	state.SignedZipSHA256, d = types.MapValueFrom(ctx, types.StringType, m)
	resp.Diagnostics.Append(d...)
	resp.Diagnostics.Append(resp.State.Set(ctx, state)...)
}

// Delete removes every signed zip and record of the resource; the sites'
// kits, made from the zips, are the sites'.
func (r *requestApprovalsResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state requestApprovalsModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	store, _, err := r.storeFor(ctx, state.ProjectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot Open Project Key Store", err.Error())
		return
	}
	recs := records(ctx, req.Private)
	for name, zipPath := range stringMap(ctx, state.SignedZips) {
		if err := removeApproval(ctx, store, name, zipPath, recs[name]); err != nil {
			resp.Diagnostics.AddError("Cannot Remove Approval", err.Error())
		}
	}
}
