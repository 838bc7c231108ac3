package provider

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/boolplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/project"
)

// participantKind is what differs between flare_server, flare_client,
// flare_admin and flare_relay; participantResource does the rest once.
type participantKind struct {
	typ         project.Type
	description string
	// attrs are the type's own attributes. Those that end up in the
	// certificate must carry RequiresReplace.
	attrs map[string]schema.Attribute
	// read copies the type's own attributes from plan, state or config into p.
	read func(ctx context.Context, src attrSource, p *project.Participant) diag.Diagnostics
	// write copies them back into state (used by import).
	write func(ctx context.Context, dst *tfsdk.State, p project.Participant) diag.Diagnostics
	// dnsNames are the certificate's subjectAltNames, as NVFlare's
	// CertBuilder writes them (IP literals become IP SANs on lines that
	// say so).
	dnsNames func(p project.Participant) []string
}

type attrSource interface {
	GetAttribute(ctx context.Context, p path.Path, target interface{}) diag.Diagnostics
}

var (
	_ resource.ResourceWithImportState    = (*participantResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*participantResource)(nil)
	_ resource.ResourceWithValidateConfig = (*participantResource)(nil)
)

type participantResource struct {
	withProviderData
	kind participantKind
}

// participantCommon holds the attributes every participant type shares.
type participantCommon struct {
	ID               types.String `tfsdk:"id"`
	ProjectID        types.String `tfsdk:"project_id"`
	Name             types.String `tfsdk:"name"`
	Org              types.String `tfsdk:"org"`
	ValidityDays     types.Int64  `tfsdk:"validity_days"`
	EarlyRenewalDays types.Int64  `tfsdk:"early_renewal_days"`
	CertPEM          types.String `tfsdk:"cert_pem"`
	CertFingerprint  types.String `tfsdk:"cert_fingerprint"`
	KeyFingerprint   types.String `tfsdk:"key_fingerprint"`
	KeyFile          types.String `tfsdk:"key_file"`
	NotAfter         types.String `tfsdk:"not_after"`
	ReadyForRenewal  types.Bool   `tfsdk:"ready_for_renewal"`
	Descriptor       types.String `tfsdk:"descriptor"`
}

// Descriptor is the participant as flare_startup_kit consumes it: the
// public facts and where the key is, never the key itself.
type Descriptor struct {
	ProjectID   string              `json:"project_id"`
	Participant project.Participant `json:"participant"`
	CertPEM     string              `json:"cert_pem"`
	KeyFile     string              `json:"key_file"`
}

const defaultCertDays = 360

func (r *participantResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_" + string(r.kind.typ)
}

func (r *participantResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	nameDesc := "Participant name, unique in the project; the certificate's common name."
	if r.kind.typ == project.TypeAdmin {
		nameDesc = "Admin's email address, unique in the project; the certificate's common name."
	}
	attrs := map[string]schema.Attribute{
		"id": schema.StringAttribute{
			Computed: true, PlanModifiers: keep,
			MarkdownDescription: "The participant name.",
		},
		"project_id": schema.StringAttribute{
			Required: true, PlanModifiers: projectIDModifiers(),
			MarkdownDescription: "`flare_project.<name>.id`: the CA that signs this participant, and the NVFlare line its certificate and kit follow. A new line on the same CA keeps the key and certificate.",
			Validators:          []validator.String{projectIDCheck},
		},
		"name": schema.StringAttribute{
			Required: true, PlanModifiers: replace,
			MarkdownDescription: nameDesc,
			Validators: []validator.String{stringCheck{summary: "Invalid Participant Name", desc: "a name NVFlare accepts",
				check: func(s string) error { return project.ValidateName(r.kind.typ, s) }}},
		},
		"org": schema.StringAttribute{
			Required: true, PlanModifiers: replace,
			MarkdownDescription: "Organisation; written into the certificate and used by org-scoped authorization.",
			Validators:          []validator.String{stringCheck{summary: "Invalid Org", desc: "letters, digits and _", check: project.ValidateOrg}},
		},
		"validity_days": schema.Int64Attribute{
			Optional: true, Computed: true, Default: int64default.StaticInt64(defaultCertDays),
			PlanModifiers:       []planmodifier.Int64{int64planmodifier.RequiresReplace()},
			Validators:          []validator.Int64{int64validator.Between(1, 36500)},
			MarkdownDescription: fmt.Sprintf("Days the certificate is valid. Defaults to %d, as `nvflare provision`.", defaultCertDays),
		},
		"early_renewal_days": schema.Int64Attribute{
			Optional: true, Computed: true, Default: int64default.StaticInt64(0),
			Validators: []validator.Int64{int64validator.AtLeast(0)},
			MarkdownDescription: "Plan a new key and certificate this many days before the certificate expires. " +
				"Changing it does not itself replace the certificate. Defaults to 0: renew once expired.",
		},
		"cert_pem":         schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "The participant's certificate in PEM."},
		"cert_fingerprint": schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "Hex SHA-256 of the certificate's DER."},
		"key_fingerprint":  schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "Hex SHA-256 of the public key's SubjectPublicKeyInfo; identifies the private key without storing it."},
		"key_file":         schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "Path of the private key (mode 0600) in the project's CA directory."},
		"not_after":        schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "RFC 3339 time the certificate expires."},
		"ready_for_renewal": schema.BoolAttribute{
			Computed: true, PlanModifiers: []planmodifier.Bool{boolplanmodifier.UseStateForUnknown()},
			MarkdownDescription: "True when the certificate is within `early_renewal_days` of expiry; the next apply replaces it.",
		},
		"descriptor": schema.StringAttribute{
			Computed: true,
			MarkdownDescription: "JSON describing this participant for `flare_startup_kit` (public facts, certificate, key path; " +
				"no key). Pass it as the kit's `participant` (or `server` / `relay`).",
		},
	}
	attrs[rotationTrigger] = rotationTriggerAttribute("the participant's")
	for k, v := range r.kind.attrs {
		attrs[k] = v
	}
	resp.Schema = schema.Schema{MarkdownDescription: r.kind.description, Attributes: attrs}
}

func readCommon(ctx context.Context, src attrSource) (participantCommon, diag.Diagnostics) {
	var c participantCommon
	var diags diag.Diagnostics
	for name, target := range map[string]any{
		"id": &c.ID, "project_id": &c.ProjectID, "name": &c.Name, "org": &c.Org,
		"validity_days": &c.ValidityDays, "early_renewal_days": &c.EarlyRenewalDays,
		"cert_pem": &c.CertPEM, "cert_fingerprint": &c.CertFingerprint, "key_fingerprint": &c.KeyFingerprint,
		"key_file": &c.KeyFile, "not_after": &c.NotAfter, "ready_for_renewal": &c.ReadyForRenewal,
		"descriptor": &c.Descriptor,
	} {
		diags.Append(src.GetAttribute(ctx, path.Root(name), target)...)
	}
	return c, diags
}

func writeComputed(ctx context.Context, dst interface {
	SetAttribute(context.Context, path.Path, interface{}) diag.Diagnostics
}, c participantCommon) diag.Diagnostics {
	var diags diag.Diagnostics
	for name, v := range map[string]any{
		"id": c.ID, "cert_pem": c.CertPEM, "cert_fingerprint": c.CertFingerprint, "key_fingerprint": c.KeyFingerprint,
		"key_file": c.KeyFile, "not_after": c.NotAfter, "ready_for_renewal": c.ReadyForRenewal, "descriptor": c.Descriptor,
	} {
		diags.Append(dst.SetAttribute(ctx, path.Root(name), v)...)
	}
	return diags
}

func (r *participantResource) participant(ctx context.Context, src attrSource, c participantCommon) (project.Participant, diag.Diagnostics) {
	p := project.Participant{Type: r.kind.typ, Name: c.Name.ValueString(), Org: c.Org.ValueString()}
	diags := r.kind.read(ctx, src, &p)
	return p, diags
}

func descriptorJSON(projectID string, p project.Participant, certPEM, keyFile string) (string, error) {
	b, err := json.Marshal(Descriptor{ProjectID: projectID, Participant: p, CertPEM: certPEM, KeyFile: keyFile})
	return string(b), err
}

// ValidateConfig checks the participant as a whole once every value is known.
func (r *participantResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	c, diags := readCommon(ctx, req.Config)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() || c.Name.IsUnknown() || c.Org.IsUnknown() {
		return
	}
	p, diags := r.participant(ctx, req.Config, c)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	if p.Name == "" || p.Org == "" {
		return // the attribute validators already said so
	}
	if err := p.ValidateCross(); err != nil {
		resp.Diagnostics.AddAttributeError(path.Root(err.Field), "Invalid "+strings.ToUpper(string(r.kind.typ[:1]))+string(r.kind.typ[1:])+" Configuration", err.Error())
	}
}

// ModifyPlan computes the descriptor ahead of apply (so kits see exactly
// what changes) and plans a new certificate once it is due for renewal.
func (r *participantResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() {
		return // destroy
	}
	plan, diags := readCommon(ctx, req.Plan)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	// A name taken by another resource is caught by Create: at plan time a
	// replacement's create half looks the same as a duplicate.
	if req.State.Raw.IsNull() {
		return
	}
	state, diags := readCommon(ctx, req.State)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	if renewalDue(state.NotAfter.ValueString(), plan.EarlyRenewalDays.ValueInt64()) {
		// Unknown differs from the state's value, which is what makes
		// Terraform honour RequiresReplace.
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("ready_for_renewal"), types.BoolUnknown())...)
		resp.RequiresReplace = append(resp.RequiresReplace, path.Root("ready_for_renewal"))
		return
	}
	if plan.CertPEM.IsUnknown() || plan.ProjectID.IsUnknown() {
		return
	}
	p, diags := r.participant(ctx, req.Plan, plan)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() || !participantKnown(p) {
		return
	}
	d, err := descriptorJSON(plan.ProjectID.ValueString(), p, plan.CertPEM.ValueString(), plan.KeyFile.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot Build Descriptor", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("descriptor"), d)...)
}

// participantKnown reports whether the plan carries every value; unknown
// values read as zero, and a descriptor built from zeros would be wrong.
func participantKnown(p project.Participant) bool { return p.Name != "" }

func renewalDue(notAfter string, earlyDays int64) bool {
	t, err := time.Parse(time.RFC3339, notAfter)
	if err != nil {
		return false
	}
	return !now().Before(t.Add(-time.Duration(earlyDays) * 24 * time.Hour))
}

func (r *participantResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	c, diags := readCommon(ctx, req.Plan)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	p, diags := r.participant(ctx, req.Plan, c)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	store, _, err := r.storeFor(ctx, c.ProjectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("project_id"), "Cannot Open Project Key Store", err.Error())
		return
	}
	taken, ok, err := participantNameTaken(ctx, store, p.Name)
	if err != nil {
		resp.Diagnostics.AddError("Cannot Read Project Key Store", err.Error())
		return
	}
	if ok {
		resp.Diagnostics.AddAttributeError(path.Root("name"), "Duplicate Participant Name",
			fmt.Sprintf("name: %q is already a participant of this project (%s exists; a .approval file or an approvals/ entry is an approval by flare_request_approval(s)). Names must be unique across servers, clients, admins and relays: choose another name, or import the existing participant with `terraform import` (id %s@%s).",
				p.Name, taken, p.Name, c.ProjectID.ValueString()))
		return
	}
	ca, ref, err := r.ca(ctx, c.ProjectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot Load Project CA", err.Error())
		return
	}
	line, err := ref.line()
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("project_id"), "Invalid Project ID", err.Error())
		return
	}
	key, err := pki.GenerateKey()
	if err != nil {
		resp.Diagnostics.AddError("Cannot Generate Key", err.Error())
		return
	}
	dns := r.kind.dnsNames(p)
	cert, err := ca.Issue(pki.LeafRequest{
		Subject:   pki.Subject{CommonName: p.Name, Organization: p.Org, Role: p.CertRole()},
		PublicKey: &key.PublicKey,
		DNSNames:  dedupe(dns),
		Validity:  pki.ValidityFor(now(), int(c.ValidityDays.ValueInt64())),
		Profile:   line.Certs,
	})
	if err != nil {
		resp.Diagnostics.AddError("Cannot Issue Certificate", err.Error())
		return
	}
	certPEM := pki.CertPEM(cert)
	if err := store.SaveParticipant(ctx, p.Name, key, certPEM); err != nil {
		resp.Diagnostics.AddError("Cannot Save Participant Key", err.Error())
		return
	}
	resp.State.Raw = req.Plan.Raw
	resp.Diagnostics.Append(r.setCertState(ctx, &resp.State, c.ProjectID.ValueString(), p, cert, store)...)
}

func (r *participantResource) setCertState(ctx context.Context, st *tfsdk.State, projectID string, p project.Participant, cert *x509.Certificate, store caStore) diag.Diagnostics {
	keyFP, err := pki.KeyFingerprint(cert.PublicKey)
	var diags diag.Diagnostics
	if err != nil {
		diags.AddError("Cannot Fingerprint Key", err.Error())
		return diags
	}
	certPEM := string(pki.CertPEM(cert))
	desc, err := descriptorJSON(projectID, p, certPEM, store.KeyLocation(p.Name))
	if err != nil {
		diags.AddError("Cannot Build Descriptor", err.Error())
		return diags
	}
	diags.Append(writeComputed(ctx, st, participantCommon{
		ID:              types.StringValue(p.Name),
		CertPEM:         types.StringValue(certPEM),
		CertFingerprint: types.StringValue(pki.CertFingerprint(cert)),
		KeyFingerprint:  types.StringValue(keyFP),
		KeyFile:         types.StringValue(store.KeyLocation(p.Name)),
		NotAfter:        types.StringValue(cert.NotAfter.UTC().Format(time.RFC3339)),
		ReadyForRenewal: types.BoolValue(false),
		Descriptor:      types.StringValue(desc),
	})...)
	return diags
}

// Read fails when the key is gone or replaced, or the certificate no longer
// chains to the project's CA: a new key is an explicit act (-replace, early
// renewal), never a side effect of a missing file. An edited descriptor
// field is corrected by the next apply.
func (r *participantResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	c, diags := readCommon(ctx, req.State)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	store, _, err := r.storeFor(ctx, c.ProjectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot Open Project Key Store", err.Error())
		return
	}
	name := c.Name.ValueString()
	check := issued{what: "Participant", typ: "flare_" + string(r.kind.typ), name: name, projectID: c.ProjectID.ValueString(), store: store,
		keyWhere: store.KeyLocation(name), restore: store.Restore()}
	key, err := store.ParticipantKey(ctx, name)
	if err != nil {
		resp.Diagnostics.Append(check.keyError(err)...)
		return
	}
	importing := c.CertPEM.IsNull()
	certPEM := []byte(c.CertPEM.ValueString())
	if importing {
		if certPEM, err = store.ParticipantCert(ctx, name); err != nil {
			resp.Diagnostics.AddError("Cannot Read Participant Certificate", err.Error())
			return
		}
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		resp.Diagnostics.AddError("Invalid Certificate In State", err.Error())
		return
	}
	if resp.Diagnostics.Append(check.check(ctx, key, cert)...); resp.Diagnostics.HasError() {
		return
	}
	if importing {
		p, ok := participantFromCert(r.kind.typ, cert)
		if !ok {
			resp.Diagnostics.AddError("Wrong Participant Type",
				fmt.Sprintf("%q's certificate is for a %s, not a %s: import it with the matching resource type.", name, roleTypeOf(cert), r.kind.typ))
			return
		}
		resp.Diagnostics.Append(r.kind.write(ctx, &resp.State, p)...)
		resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("org"), p.Org)...)
		resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("validity_days"), validityDaysOf(cert))...)
		resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("early_renewal_days"), int64(0))...)
		c, diags = readCommon(ctx, resp.State)
		resp.Diagnostics.Append(diags...)
		if resp.Diagnostics.HasError() {
			return
		}
	}
	p, diags := r.participant(ctx, resp.State, c)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(r.setCertState(ctx, &resp.State, c.ProjectID.ValueString(), p, cert, store)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("ready_for_renewal"),
		renewalDue(cert.NotAfter.UTC().Format(time.RFC3339), c.EarlyRenewalDays.ValueInt64()))...)
}

// participantFromCert recovers the certificate-borne fields on import; the
// type's other fields take their defaults and show in the next plan if the
// configuration differs.
func participantFromCert(t project.Type, cert *x509.Certificate) (project.Participant, bool) {
	p := project.Participant{Type: t, Name: cert.Subject.CommonName}
	if len(cert.Subject.Organization) > 0 {
		p.Org = cert.Subject.Organization[0]
	}
	for _, dns := range cert.DNSNames {
		if t == project.TypeServer && dns != p.Name {
			p.HostNames = append(p.HostNames, dns)
		}
	}
	// Only admin certificates carry a role, so that is all import can tell
	// apart: an admin from a site.
	role := pki.RoleOf(cert)
	if t == project.TypeAdmin {
		p.Role = role
		return p, project.ValidateRole(role) == nil
	}
	return p, role == ""
}

func roleTypeOf(cert *x509.Certificate) string {
	if project.ValidateRole(pki.RoleOf(cert)) == nil {
		return "admin"
	}
	return "site (server, client or relay)"
}

// Update changes only fields outside the certificate (ports, capacity):
// the key and certificate stay, the descriptor follows the plan.
func (r *participantResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	c, diags := readCommon(ctx, req.Plan)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	p, diags := r.participant(ctx, req.Plan, c)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	desc, err := descriptorJSON(c.ProjectID.ValueString(), p, c.CertPEM.ValueString(), c.KeyFile.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot Build Descriptor", err.Error())
		return
	}
	resp.State.Raw = req.Plan.Raw
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("descriptor"), desc)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("ready_for_renewal"), false)...)
}

func (r *participantResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	c, diags := readCommon(ctx, req.State)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	store, _, err := r.storeFor(ctx, c.ProjectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot Open Project Key Store", err.Error())
		return
	}
	if err := store.RemoveParticipant(ctx, c.Name.ValueString()); err != nil {
		resp.Diagnostics.AddError("Cannot Remove Participant Key", err.Error())
	}
}

// ImportState takes "<name>@<project_id>", e.g. "site-1@local:.flare-ca".
func (r *participantResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	name, projectID, ok := splitImportID(req.ID)
	if !ok {
		resp.Diagnostics.AddError("Invalid Import ID",
			fmt.Sprintf("import id %q must be <name>@<project_id>, for example site-1@local:.flare-ca", req.ID))
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), name)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("name"), name)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("project_id"), projectID)...)
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	out := in[:0:0]
	for _, s := range in {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
