package provider

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
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

	"github.com/flarekit/terraform-provider-flare/internal/approve"
	"github.com/flarekit/terraform-provider-flare/internal/kit"
	"github.com/flarekit/terraform-provider-flare/internal/localca"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/project"
)

var (
	_ resource.ResourceWithImportState    = (*requestApprovalResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*requestApprovalResource)(nil)
	_ resource.ResourceWithValidateConfig = (*requestApprovalResource)(nil)
)

// NewRequestApprovalResource is the flare_request_approval factory.
func NewRequestApprovalResource() resource.Resource { return &requestApprovalResource{} }

// requestApprovalResource is `nvflare cert approve` (NVFlare 2.9's
// distributed provisioning) as a resource: the site keeps its key, sends a
// request zip (or a CSR), and gets back a signed zip for `nvflare package`.
type requestApprovalResource struct {
	withProviderData
}

type requestApprovalModel struct {
	ID                 types.String `tfsdk:"id"`
	ProjectID          types.String `tfsdk:"project_id"`
	Server             types.String `tfsdk:"server"`
	RequestZip         types.String `tfsdk:"request_zip"`
	CSRPEM             types.String `tfsdk:"csr_pem"`
	ParticipantType    types.String `tfsdk:"participant_type"`
	Role               types.String `tfsdk:"role"`
	Org                types.String `tfsdk:"org"`
	Scheme             types.String `tfsdk:"scheme"`
	ConnectionSecurity types.String `tfsdk:"connection_security"`
	ValidityDays       types.Int64  `tfsdk:"validity_days"`
	OutputDir          types.String `tfsdk:"output_dir"`
	SignedZip          types.String `tfsdk:"signed_zip"`
	SignedZipSHA256    types.String `tfsdk:"signed_zip_sha256"`
	ParticipantName    types.String `tfsdk:"participant_name"`
	RequestID          types.String `tfsdk:"request_id"`
	PublicKeySHA256    types.String `tfsdk:"public_key_sha256"`
	CertificatePEM     types.String `tfsdk:"certificate_pem"`
	RootCAFingerprint  types.String `tfsdk:"rootca_fingerprint_sha256"`
	NotAfter           types.String `tfsdk:"not_after"`
}

// privateWrittenZip remembers the digest of the signed zip apply wrote, so
// a plan can tell an edited or deleted zip from a fresh one.
const privateWrittenZip = "written_signed_zip_sha256"

// Defaults matching the kits flare_startup_kit writes for the server.
const (
	defaultApprovalScheme  = kit.Scheme // what our server kits speak
	defaultApprovalConnSec = kit.ConnectionSecurity
)

func (r *requestApprovalResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_request_approval"
}

func (r *requestApprovalResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	descriptor := descriptorCheck
	resp.Schema = schema.Schema{
		MarkdownDescription: "Approves a site's certificate request as `nvflare cert approve` does in NVFlare 2.9's " +
			"distributed provisioning: the site runs `nvflare cert request` (its private key never leaves it) and sends " +
			"the request zip; this resource checks it at plan time, issues the certificate with the project's CA " +
			"(local or Vault Transit) and writes `<output_dir>/<name>.signed.zip`, which the site turns into its startup kit " +
			"with `nvflare package <name>.signed.zip --fingerprint <rootca_fingerprint_sha256>`. The provider reads and " +
			"writes no private key on this path. Approved certificates are recorded (certificate only) in the project's " +
			"key store (its CA directory, or Vault KV `<kv_path>/<key>/v<N>/approvals/<name>` for a `vault_transit` project), so a name cannot be approved twice or collide with a `flare_client`/`flare_admin`. " +
			"Needs a project on NVFlare 2.9 (`nvflare_version`).",
		Attributes: withApprovalSettings("the", map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "Path of the signed zip."},
			"project_id": schema.StringAttribute{
				Required: true, PlanModifiers: projectIDModifiers(),
				MarkdownDescription: "`flare_project.<name>.id`: the CA that signs the certificate. The request's project must be this project's name.",
				Validators:          []validator.String{projectIDCheck},
			},
			"server": schema.StringAttribute{
				Required: true, Validators: []validator.String{descriptor},
				MarkdownDescription: "`flare_server.<name>.descriptor`: the server the site's kit connects to. Its host (`default_host`, " +
					"else the name), `fed_learn_port` and `admin_port` go into `signed.json`; a change rewrites the signed zip (same certificate).",
			},
			"request_zip": schema.StringAttribute{
				Optional: true,
				Validators: []validator.String{
					stringvalidator.LengthAtLeast(1),
					stringvalidator.ExactlyOneOf(path.MatchRoot("request_zip"), path.MatchRoot("csr_pem")),
				},
				MarkdownDescription: "Path of the `<name>.request.zip` the site made with `nvflare cert request`. It is read and " +
					"checked at plan time (members, hashes, CSR signature, project, name) and must stay readable. Set this or `csr_pem`.",
			},
			"csr_pem": schema.StringAttribute{
				Optional: true,
				Validators: []validator.String{
					stringvalidator.LengthAtLeast(1),
				},
				MarkdownDescription: "A bare PEM certificate request instead of a request zip. The CSR gives the name (CN) and " +
					"`org` (O); `participant_type` (and `role` for admins) must then be set. The signed zip gets a request id " +
					"derived from the CSR's key, so `nvflare package` (which matches it against the site's `request.json`) " +
					"accepts it only from a site that has no request directory of its own; use `certificate_pem` otherwise.",
			},
			"participant_type": schema.StringAttribute{
				Optional: true, Computed: true,
				Validators: []validator.String{stringvalidator.OneOf(string(project.TypeClient), string(project.TypeAdmin))},
				MarkdownDescription: "`client` or `admin`. With `request_zip`: what the request must be (plan fails otherwise); " +
					"left out, it is taken from the request. Required with `csr_pem`. Server requests are not approved here: " +
					"the project's server is a `flare_server`.",
			},
			"role": schema.StringAttribute{
				Optional: true, Computed: true,
				Validators: []validator.String{stringvalidator.OneOf(pki.CertTypeOrgAdmin, pki.CertTypeLead, pki.CertTypeMember)},
				MarkdownDescription: "An admin's role: `org_admin`, `lead` or `member` (2.9's distributed provisioning has no " +
					"`project_admin`). With `request_zip`: what the request must ask for; with `csr_pem`: required for admins. Null for clients.",
			},
			"org": schema.StringAttribute{
				Optional: true, Computed: true,
				Validators:          []validator.String{stringCheck{summary: "Invalid Org", desc: "letters, digits and _", check: project.ValidateOrg}},
				MarkdownDescription: "The organization the request must name (plan fails otherwise); left out, it is taken from the request.",
			},
			"output_dir": schema.StringAttribute{
				Required:            true,
				Validators:          []validator.String{stringvalidator.LengthAtLeast(1)},
				MarkdownDescription: "Directory for `<participant name>.signed.zip` (mode 0644: certificates and metadata only). A change moves the zip.",
			},
			"signed_zip": schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "Path of the signed zip to return to the site."},
			"signed_zip_sha256": schema.StringAttribute{
				Computed:            true,
				MarkdownDescription: "SHA-256 of the signed zip on disk; empty when it is gone. An edited or deleted zip shows in the plan and apply rewrites it (same certificate).",
			},
			"participant_name":  schema.StringAttribute{Computed: true, MarkdownDescription: "The requesting participant's name (the certificate's common name)."},
			"request_id":        schema.StringAttribute{Computed: true, MarkdownDescription: "The request's id, recorded in `signed.json` (for `csr_pem`, derived from the key)."},
			"public_key_sha256": schema.StringAttribute{Computed: true, MarkdownDescription: "Hex SHA-256 of the requested key's SubjectPublicKeyInfo. A request with a new key replaces the approval."},
			"certificate_pem":   schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "The issued certificate in PEM."},
			"rootca_fingerprint_sha256": schema.StringAttribute{
				Computed: true, PlanModifiers: keep,
				MarkdownDescription: "The root's fingerprint as `SHA256:AA:BB:…`: give it to the site out of band for `nvflare package --fingerprint`.",
			},
			"not_after": schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "RFC 3339 time the certificate expires."},
		}),
	}
}

// ValidateConfig checks what the configuration alone decides.
func (r *requestApprovalResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m requestApprovalModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if !m.CSRPEM.IsNull() && !m.CSRPEM.IsUnknown() {
		if m.ParticipantType.IsNull() {
			resp.Diagnostics.AddAttributeError(path.Root("participant_type"), "Missing Participant Type",
				"participant_type: a bare CSR does not say what it is for; set participant_type = \"client\" or \"admin\" (with role).")
		}
	}
	if m.ParticipantType.IsUnknown() || m.Role.IsUnknown() {
		return
	}
	switch {
	case m.ParticipantType.ValueString() == string(project.TypeClient) && !m.Role.IsNull():
		resp.Diagnostics.AddAttributeError(path.Root("role"), "Role For A Client",
			"role: only admins have a role; remove role, or set participant_type = \"admin\".")
	case m.ParticipantType.ValueString() == string(project.TypeAdmin) && m.Role.IsNull() && !m.CSRPEM.IsNull():
		resp.Diagnostics.AddAttributeError(path.Root("role"), "Missing Admin Role",
			"role: an admin approved from a bare CSR needs role = \"org_admin\", \"lead\" or \"member\".")
	}
}

// approvalInputs is a request checked against everything known at plan time.
type approvalInputs struct {
	req      *approve.Request
	ref      caRef
	store    caStore
	server   Descriptor
	endpoint approve.Endpoint
}

// inputs parses the request and checks it against the configuration, the
// project's root (when it exists) and the server. Errors name the attribute.
// ok is false when an input is unknown yet, or on error.
func (r *requestApprovalResource) inputs(ctx context.Context, m requestApprovalModel) (in approvalInputs, ok bool, diags diag.Diagnostics) {
	for _, v := range []types.String{m.ProjectID, m.Server, m.RequestZip, m.CSRPEM, m.Scheme, m.ConnectionSecurity} {
		if v.IsUnknown() {
			return in, false, nil
		}
	}
	// Unknown here means not configured (the plan derives them from the
	// request): no assertion to check.
	if !m.CSRPEM.IsNull() && m.ParticipantType.IsUnknown() {
		return in, false, nil // a bare CSR needs the configured type
	}
	for _, v := range []*types.String{&m.ParticipantType, &m.Role, &m.Org} {
		if v.IsUnknown() {
			*v = types.StringNull()
		}
	}
	var root *x509Cert
	if in.ref, in.store, root, diags = r.approvalRoot(ctx, m.ProjectID.ValueString()); diags.HasError() {
		return in, false, diags
	}

	var err error
	reqAttr := path.Root("request_zip")
	if !m.CSRPEM.IsNull() {
		reqAttr = path.Root("csr_pem")
		certType := m.ParticipantType.ValueString()
		if certType == string(project.TypeAdmin) {
			certType = m.Role.ValueString()
		}
		projectName := "pending" // the root does not exist before the first apply
		if root != nil {
			projectName = root.Subject.CommonName
		}
		in.req, err = approve.FromCSR([]byte(m.CSRPEM.ValueString()), projectName, certType)
	} else {
		in.req, err = approve.ReadRequestZip(m.RequestZip.ValueString())
	}
	if err != nil {
		diags.AddAttributeError(reqAttr, "Invalid Certificate Request", fmt.Sprintf("%s: %v", reqAttr, err))
		return in, false, diags
	}
	req := in.req
	if root != nil && !m.CSRPEM.IsNull() {
		root = nil // a bare CSR takes the project's name: nothing to compare
	}
	d, fatal := checkApprovable(req, root, reqAttr, reqAttr.String())
	diags.Append(d...)
	if fatal {
		return in, false, diags
	}
	if t := m.ParticipantType.ValueString(); t != "" && t != string(req.ParticipantType()) {
		diags.AddAttributeError(path.Root("participant_type"), "Request Of Another Type",
			fmt.Sprintf("participant_type: the request of %q asks for %s certificate (%s), not %s one. Approve it with participant_type = %q if that is intended, or reject it.",
				req.Name, withArticle(string(req.ParticipantType())), req.CertType, withArticle(t), req.ParticipantType()))
	}
	if role := m.Role.ValueString(); role != "" && role != req.CertRole {
		diags.AddAttributeError(path.Root("role"), "Request Of Another Role",
			fmt.Sprintf("role: the request of %q asks for %q, not %q. Set role = %q if that is intended, or reject the request.", req.Name, req.CertType, role, req.CertType))
	}
	if org := m.Org.ValueString(); org != "" && org != req.Org {
		diags.AddAttributeError(path.Root("org"), "Request Of Another Organization",
			fmt.Sprintf("org: the request of %q is for org %q, not %q.", req.Name, req.Org, org))
	}

	if in.server, in.endpoint, d = approvalEndpoint(m.ProjectID.ValueString(), m.Server.ValueString(), m.Scheme.ValueString(), m.ConnectionSecurity.ValueString()); d.HasError() {
		diags.Append(d...)
		return in, false, diags
	}
	diags.Append(checkNotServerName(req.Name, in.endpoint, reqAttr, reqAttr.String())...)
	return in, !diags.HasError(), diags
}

// approvalRoot checks a project_id for approvals: a flare_project id on
// NVFlare 2.9 or later. It opens the project's key store, where approved
// names are recorded (a CA directory, or Vault KV); root is nil before the
// project's first apply.
func (w *withProviderData) approvalRoot(ctx context.Context, projectID string) (ref caRef, store caStore, root *x509Cert, diags diag.Diagnostics) {
	var err error
	if ref, err = parseProjectID(projectID); err != nil {
		diags.AddAttributeError(path.Root("project_id"), "Invalid Project ID", err.Error())
		return ref, nil, nil, diags
	}
	if lineBefore(ref.Line, 2, 9) {
		diags.AddAttributeError(path.Root("project_id"), "Project Not On NVFlare 2.9",
			fmt.Sprintf("project_id: the project is on NVFlare %s; distributed provisioning (nvflare cert request/approve, nvflare package) "+
				"is new in 2.9 and sites that package a signed zip run 2.9. Set nvflare_version = \"2.9\" on the flare_project.", ref.Line))
		return ref, nil, nil, diags
	}
	if store, err = w.data.store(ctx, ref); err != nil {
		diags.AddAttributeError(path.Root("project_id"), "Cannot Open Project Key Store", err.Error())
		return ref, nil, nil, diags
	}
	root, err = store.RootCert(ctx)
	if err != nil && !errors.Is(err, localca.ErrNoCA) {
		diags.AddAttributeError(path.Root("project_id"), "Cannot Read Project Root", err.Error())
		return ref, nil, nil, diags
	}
	return ref, store, root, diags
}

// checkApprovable refuses what is never approved here: server requests, and
// requests of another project than root's (when root is known). label
// starts each message and names the request. fatal: nothing more to check.
func checkApprovable(req *approve.Request, root *x509Cert, attr path.Path, label string) (diags diag.Diagnostics, fatal bool) {
	if req.CertType == pki.CertTypeServer {
		diags.AddAttributeError(attr, "Server Requests Are Not Approved Here",
			fmt.Sprintf("%s: %q asks for a server certificate. The project's server is a flare_server, whose kit flare_startup_kit writes; "+
				"approve only clients and admins (org_admin, lead, member) here.", label, req.Name))
		return diags, true
	}
	if root != nil && root.Subject.CommonName != req.Project {
		diags.AddAttributeError(attr, "Request Of Another Project",
			fmt.Sprintf("%s: the request is for project %q, but project_id names project %q. Approve it with the flare_project "+
				"of that name, or ask the site to run `nvflare cert request` with name: %s in its participant file.",
				label, req.Project, root.Subject.CommonName, root.Subject.CommonName))
	}
	return diags, false
}

// approvalEndpoint checks the server descriptor an approval names and
// returns the endpoint that goes into signed.json.
func approvalEndpoint(projectID, server, scheme, connSec string) (srv Descriptor, ep approve.Endpoint, diags diag.Diagnostics) {
	var err error
	if srv, err = parseDescriptor(server); err != nil {
		diags.AddAttributeError(path.Root("server"), "Invalid Server Descriptor", err.Error())
		return srv, ep, diags
	}
	sp := srv.Participant
	if sp.Type != project.TypeServer {
		diags.AddAttributeError(path.Root("server"), "Not A Server",
			fmt.Sprintf("server: got the descriptor of %s %q; use flare_server.<name>.descriptor", sp.Type, sp.Name))
		return srv, ep, diags
	}
	if srv.ProjectID != projectID {
		diags.AddAttributeError(path.Root("server"), "Server Of Another Project",
			fmt.Sprintf("server: %q belongs to project %s, the approval to %s; both must share one flare_project", sp.Name, srv.ProjectID, projectID))
		return srv, ep, diags
	}
	// `nvflare package` names the server in the site's kit by the host it
	// dials, and 2.9 clients check the server certificate's identity
	// against that name.
	if sp.ServerHost() != sp.Name {
		diags.AddAttributeError(path.Root("server"), "Server Name Is Not Its Host",
			fmt.Sprintf("server: %q is dialled as %q. A kit made by `nvflare package` expects the server's certificate to be "+
				"named after the host it dials (2.9 clients refuse the connection otherwise: \"authenticated as %q but claimed endpoint "+
				"requires identity %q\"). Name the flare_server %q and leave default_host unset.", sp.Name, sp.ServerHost(), sp.Name, sp.ServerHost(), sp.ServerHost()))
		return srv, ep, diags
	}
	ep = approve.Endpoint{Scheme: scheme, ConnectionSecurity: connSec,
		Host: sp.ServerHost(), FedLearnPort: sp.FedLearnPort, AdminPort: sp.AdminPort}
	if ep.AdminPort == 0 {
		ep.AdminPort = ep.FedLearnPort
	}
	return srv, ep, diags
}

// checkNotServerName refuses a participant named as the server.
func checkNotServerName(name string, ep approve.Endpoint, attr path.Path, label string) (diags diag.Diagnostics) {
	if name == ep.Host {
		diags.AddAttributeError(attr, "Name Clash With The Server",
			fmt.Sprintf("%s: %q is the server's name or host; `nvflare package` refuses it. The site must request another name.", label, name))
	}
	return diags
}

// withApprovalSettings adds what flare_request_approval and
// flare_request_approvals record alike in a signed.json ("the" or "each").
func withApprovalSettings(which string, attrs map[string]schema.Attribute) map[string]schema.Attribute {
	attrs["scheme"] = schema.StringAttribute{
		Optional: true, Computed: true, Default: stringdefault.StaticString(defaultApprovalScheme),
		Validators: []validator.String{stringvalidator.OneOf("grpc", "tcp", "http")},
		MarkdownDescription: "Communication scheme recorded in " + which + " `signed.json`; the packaged kit dials the server with it. " +
			"Defaults to `" + defaultApprovalScheme + "`, what `flare_startup_kit` writes into the server's kit.",
	}
	attrs["connection_security"] = schema.StringAttribute{
		Optional: true, Computed: true, Default: stringdefault.StaticString(defaultApprovalConnSec),
		Validators:          []validator.String{stringvalidator.OneOf("clear", "tls", "mtls")},
		MarkdownDescription: "`default_connection_security` recorded in " + which + " `signed.json`. Defaults to `" + defaultApprovalConnSec + "`, as the server's kit.",
	}
	attrs["validity_days"] = schema.Int64Attribute{
		Optional: true, Computed: true, Default: int64default.StaticInt64(approve.DefaultValidDays),
		PlanModifiers:       []planmodifier.Int64{int64planmodifier.RequiresReplace()},
		Validators:          []validator.Int64{int64validator.Between(1, 36500)},
		MarkdownDescription: fmt.Sprintf("Days %s certificate is valid, never past the root's expiry. Defaults to %d, as `nvflare cert approve`.", which, approve.DefaultValidDays),
	}
	return attrs
}

// approvalOwner identifies an approval across its replacements.
func approvalOwner(m requestApprovalModel, name string) string {
	source := "csr_pem"
	if !m.RequestZip.IsNull() {
		source = m.RequestZip.ValueString()
	}
	return ownerRecord(filepath.Join(m.OutputDir.ValueString(), approve.SignedZipName(name)), source)
}

// ownerRecord is the .approval content of an approval that writes zipPath
// from source (a request zip's path, or "csr_pem"): absolute paths.
func ownerRecord(zipPath, source string) string {
	zipPath, _ = filepath.Abs(zipPath)
	if source != "csr_pem" {
		source, _ = filepath.Abs(source)
	}
	return "signed_zip=" + zipPath + "\nsource=" + source + "\n"
}

func withArticle(word string) string {
	if word != "" && strings.ContainsRune("aeiou", rune(word[0])) {
		return "an " + word
	}
	return "a " + word
}

func lineBefore(line string, major, minor int) bool {
	var a, b int
	if _, err := fmt.Sscanf(line, "%d.%d", &a, &b); err != nil {
		return false // unknown form: let the CA code report it
	}
	return a < major || (a == major && b < minor)
}

// ModifyPlan checks the request at plan time and fills in what it decides:
// participant, type, request id and key. A new key or name replaces the
// approval; a changed server or a signed zip edited on disk rewrites the zip.
func (r *requestApprovalResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() {
		return
	}
	var plan requestApprovalModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	var state *requestApprovalModel
	if !req.State.Raw.IsNull() {
		state = &requestApprovalModel{}
		resp.Diagnostics.Append(req.State.Get(ctx, state)...)
		if resp.Diagnostics.HasError() {
			return
		}
	}
	in, ok, diags := r.inputs(ctx, plan)
	resp.Diagnostics.Append(diags...)
	if !ok {
		return
	}
	rq := in.req
	reqAttr := path.Root("request_zip")
	if !plan.CSRPEM.IsNull() {
		reqAttr = path.Root("csr_pem")
	}
	// A name is ours if the state already holds it, or if the record names
	// us as its owner (the create half of a replacement).
	if state == nil || state.ParticipantName.ValueString() != rq.Name {
		msg, err := nameTaken(ctx, in.store, rq.Name, approvalOwner(plan, rq.Name))
		if err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("project_id"), "Cannot Read Project Key Store", err.Error())
			return
		}
		if msg != "" {
			resp.Diagnostics.AddAttributeError(reqAttr, "Participant Name Taken", reqAttr.String()+": "+msg)
			return
		}
	}

	role := types.StringNull()
	if rq.CertRole != "" {
		role = types.StringValue(rq.CertRole)
	}
	zipPath := filepath.Join(plan.OutputDir.ValueString(), approve.SignedZipName(rq.Name))
	derived := map[string]types.String{
		"participant_name":  types.StringValue(rq.Name),
		"participant_type":  types.StringValue(string(rq.ParticipantType())),
		"role":              role,
		"org":               types.StringValue(rq.Org),
		"request_id":        types.StringValue(rq.RequestID),
		"public_key_sha256": types.StringValue(rq.PublicKeySHA256),
		"signed_zip":        types.StringValue(zipPath),
		"id":                types.StringValue(zipPath),
	}
	for name, v := range derived {
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root(name), v)...)
	}
	if state == nil {
		return
	}
	old := map[string]types.String{
		"participant_name": state.ParticipantName, "participant_type": state.ParticipantType, "role": state.Role,
		"org": state.Org, "request_id": state.RequestID, "public_key_sha256": state.PublicKeySHA256,
	}
	replace := false
	for name, v := range old {
		if !v.Equal(derived[name]) {
			resp.RequiresReplace = append(resp.RequiresReplace, path.Root(name))
			replace = true
		}
	}
	if replace {
		for _, name := range []string{"certificate_pem", "not_after", "signed_zip_sha256"} {
			resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root(name), types.StringUnknown())...)
		}
		return
	}
	// The zip on disk (refreshed by Read) against what apply wrote.
	written, d := req.Private.GetKey(ctx, privateWrittenZip)
	resp.Diagnostics.Append(d...)
	var want string
	if written != nil && json.Unmarshal(written, &want) == nil && want != state.SignedZipSHA256.ValueString() {
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("signed_zip_sha256"), types.StringUnknown())...)
	}
}

func (r *requestApprovalResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m requestApprovalModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	in, ok, diags := r.inputs(ctx, m)
	resp.Diagnostics.Append(diags...)
	if !ok {
		if !resp.Diagnostics.HasError() {
			resp.Diagnostics.AddError("Unknown Approval Inputs", "an input of flare_request_approval is still unknown at apply")
		}
		return
	}
	ca, _, err := r.ca(ctx, m.ProjectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("project_id"), "Cannot Load Project CA", err.Error())
		return
	}
	if ca.Cert.Subject.CommonName != in.req.Project && m.CSRPEM.IsNull() {
		resp.Diagnostics.AddAttributeError(path.Root("request_zip"), "Request Of Another Project",
			fmt.Sprintf("request_zip: the request is for project %q, but project_id names project %q", in.req.Project, ca.Cert.Subject.CommonName))
		return
	}
	if !m.CSRPEM.IsNull() {
		in.req.Project = ca.Cert.Subject.CommonName
		// The CSR's site.yaml names the project: rebuild it with the real name.
		if in.req, err = approve.FromCSR([]byte(m.CSRPEM.ValueString()), in.req.Project, in.req.CertType); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("csr_pem"), "Invalid Certificate Request", err.Error())
			return
		}
	}
	a, err := approve.Approve(in.req, approve.Options{CA: ca, Server: in.endpoint, ValidDays: int(m.ValidityDays.ValueInt64()), Now: now()})
	if err != nil {
		resp.Diagnostics.AddError("Cannot Approve Request", err.Error())
		return
	}
	// Claim the name first, exclusively: two approvals of one name in the
	// same apply cannot both succeed.
	if err := claimName(ctx, in.store, in.req.Name, a.CertPEM, approvalOwner(m, in.req.Name)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			msg, _ := nameTaken(ctx, in.store, in.req.Name, "")
			if msg == "" {
				msg = fmt.Sprintf("%q was taken by another resource during this apply (%s).", in.req.Name, in.store.ApprovalWhere(in.req.Name))
			}
			resp.Diagnostics.AddError("Participant Name Taken", msg)
			return
		}
		resp.Diagnostics.AddError("Cannot Record Approval", err.Error())
		return
	}
	zipPath := filepath.Join(m.OutputDir.ValueString(), approve.SignedZipName(in.req.Name))
	if err := approve.WriteZip(zipPath, a.Zip); err != nil {
		_ = in.store.RemoveApproval(ctx, in.req.Name)
		resp.Diagnostics.AddError("Cannot Write Signed Zip", err.Error())
		return
	}
	r.setState(ctx, &m, in.req, a, zipPath)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
	resp.Diagnostics.Append(setWrittenZip(ctx, resp.Private, m.SignedZipSHA256.ValueString())...)
}

type privateSetter interface {
	SetKey(ctx context.Context, key string, value []byte) diag.Diagnostics
}

func setWrittenZip(ctx context.Context, p privateSetter, sum string) diag.Diagnostics {
	b, _ := json.Marshal(sum)
	return p.SetKey(ctx, privateWrittenZip, b)
}

func (r *requestApprovalResource) setState(_ context.Context, m *requestApprovalModel, rq *approve.Request, a *approve.Approval, zipPath string) {
	m.ID = types.StringValue(zipPath)
	m.SignedZip = types.StringValue(zipPath)
	m.SignedZipSHA256 = types.StringValue(sha256Hex(a.Zip))
	m.ParticipantName = types.StringValue(rq.Name)
	m.ParticipantType = types.StringValue(string(rq.ParticipantType()))
	m.Role = types.StringNull()
	if rq.CertRole != "" {
		m.Role = types.StringValue(rq.CertRole)
	}
	m.Org = types.StringValue(rq.Org)
	m.RequestID = types.StringValue(rq.RequestID)
	m.PublicKeySHA256 = types.StringValue(rq.PublicKeySHA256)
	m.CertificatePEM = types.StringValue(string(a.CertPEM))
	m.RootCAFingerprint = types.StringValue(a.RootFingerprint)
	m.NotAfter = types.StringValue(a.Cert.NotAfter.UTC().Format(time.RFC3339))
}

// Read notices a signed zip deleted or edited on disk (the next plan
// rewrites it) and a project root that changed (the approval is made
// again). On import it reads everything from the signed zip.
func (r *requestApprovalResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var m requestApprovalModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	store, _, err := r.storeFor(ctx, m.ProjectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot Open Project Key Store", err.Error())
		return
	}
	root, err := store.RootCert(ctx)
	if errors.Is(err, localca.ErrNoCA) {
		resp.Diagnostics.AddError("Project Root CA Missing", rootMissingDetail(m.ProjectID.ValueString(), err.Error(), store.Restore()))
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Cannot Load Project Root", err.Error())
		return
	}
	zipPath := m.SignedZip.ValueString()
	data, readErr := os.ReadFile(zipPath)

	if m.CertificatePEM.IsNull() { // import
		if readErr != nil {
			resp.Diagnostics.AddError("Cannot Read Signed Zip", readErr.Error())
			return
		}
		s, err := approve.ReadSigned(data, root)
		if err != nil {
			resp.Diagnostics.AddError("Invalid Signed Zip", fmt.Sprintf("%s: %v", zipPath, err))
			return
		}
		m.ParticipantName = types.StringValue(s.Name)
		m.ParticipantType = types.StringValue(string(project.TypeClient))
		m.Role = types.StringNull()
		if pki.IsAdminCertType(s.CertType) {
			m.ParticipantType = types.StringValue(string(project.TypeAdmin))
			m.Role = types.StringValue(s.CertType)
		} else if s.CertType != pki.CertTypeClient {
			resp.Diagnostics.AddError("Unsupported Signed Zip", fmt.Sprintf("%s approves a %s; flare_request_approval manages clients and admins", zipPath, s.CertType))
			return
		}
		m.Org = types.StringValue(s.Org)
		m.RequestID = types.StringValue(s.RequestID)
		m.PublicKeySHA256 = types.StringValue(s.PublicKeySHA256)
		m.CertificatePEM = types.StringValue(string(pki.CertPEM(s.Cert)))
		m.RootCAFingerprint = types.StringValue(approve.Fingerprint(root))
		m.NotAfter = types.StringValue(s.Cert.NotAfter.UTC().Format(time.RFC3339))
		m.Scheme = types.StringValue(s.Server.Scheme)
		m.ConnectionSecurity = types.StringValue(s.Server.ConnectionSecurity)
		m.ValidityDays = types.Int64Value(int64(math.Round(s.Cert.NotAfter.Sub(s.Cert.NotBefore.Add(pki.Backdate)).Hours() / 24)))
		m.OutputDir = types.StringValue(filepath.Dir(zipPath))
		m.SignedZipSHA256 = types.StringValue(sha256Hex(data))
		if !bytes.Equal(recordedCert(ctx, store, s.Name), pki.CertPEM(s.Cert)) {
			resp.Diagnostics.AddWarning("Approval Not Recorded",
				fmt.Sprintf("%s does not hold this certificate; the next apply records it (or fails if the name is another participant's).", store.ApprovalWhere(s.Name)))
			m.SignedZipSHA256 = types.StringValue("")
		}
		resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
		resp.Diagnostics.Append(setWrittenZip(ctx, resp.Private, sha256Hex(data))...)
		return
	}

	cert, err := pki.ParseCertPEM([]byte(m.CertificatePEM.ValueString()))
	if err != nil {
		resp.Diagnostics.AddError("Invalid Certificate In State", err.Error())
		return
	}
	if cert.CheckSignatureFrom(root) != nil {
		resp.Diagnostics.AddWarning("Certificate No Longer Signed By Project CA",
			fmt.Sprintf("The project's root CA changed; %q will be approved again.", m.ParticipantName.ValueString()))
		resp.State.RemoveResource(ctx)
		return
	}
	sum := ""
	switch {
	case readErr == nil:
		sum = sha256Hex(data)
	case errors.Is(readErr, fs.ErrNotExist):
	default:
		resp.Diagnostics.AddError("Cannot Read Signed Zip", readErr.Error())
		return
	}
	// A lost record counts as drift too: the rewrite restores it.
	if !bytes.Equal(recordedCert(ctx, store, m.ParticipantName.ValueString()), []byte(m.CertificatePEM.ValueString())) {
		sum = ""
	}
	m.SignedZipSHA256 = types.StringValue(sum)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}

// Update rewrites the signed zip with the certificate already issued: the
// server changed, or the zip on disk was edited or deleted.
func (r *requestApprovalResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var m, state requestApprovalModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	in, ok, diags := r.inputs(ctx, m)
	resp.Diagnostics.Append(diags...)
	if !ok {
		if !resp.Diagnostics.HasError() {
			resp.Diagnostics.AddError("Unknown Approval Inputs", "an input of flare_request_approval is still unknown at apply")
		}
		return
	}
	ca, _, err := r.ca(ctx, m.ProjectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("project_id"), "Cannot Load Project CA", err.Error())
		return
	}
	if !m.CSRPEM.IsNull() {
		if in.req, err = approve.FromCSR([]byte(m.CSRPEM.ValueString()), ca.Cert.Subject.CommonName, in.req.CertType); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("csr_pem"), "Invalid Certificate Request", err.Error())
			return
		}
	}
	certPEM := []byte(state.CertificatePEM.ValueString())
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		resp.Diagnostics.AddError("Invalid Certificate In State", err.Error())
		return
	}
	a, err := approve.Package(in.req, cert, approve.Options{CA: ca, Server: in.endpoint, Now: now()})
	if err != nil {
		resp.Diagnostics.AddError("Cannot Rebuild Signed Zip", err.Error())
		return
	}
	owner := approvalOwner(m, in.req.Name)
	if summary, detail := ensureRecord(ctx, in.store, in.req.Name, certPEM, owner, func(string) bool { return false }); summary != "" {
		resp.Diagnostics.AddError(summary, detail)
		return
	}
	zipPath := filepath.Join(m.OutputDir.ValueString(), approve.SignedZipName(in.req.Name))
	if err := approve.WriteZip(zipPath, a.Zip); err != nil {
		resp.Diagnostics.AddError("Cannot Write Signed Zip", err.Error())
		return
	}
	if old := state.SignedZip.ValueString(); old != "" && filepath.Clean(old) != filepath.Clean(zipPath) {
		if err := os.Remove(old); err != nil && !errors.Is(err, fs.ErrNotExist) {
			resp.Diagnostics.AddWarning("Old Signed Zip Left", fmt.Sprintf("output_dir changed; %s could not be removed: %v", old, err))
		}
	}
	r.setState(ctx, &m, in.req, a, zipPath)
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
	resp.Diagnostics.Append(setWrittenZip(ctx, resp.Private, m.SignedZipSHA256.ValueString())...)
}

// Delete removes the signed zip and the record of the approval; the site's
// kit, made from the zip, is the site's.
func (r *requestApprovalResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var m requestApprovalModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if p := m.SignedZip.ValueString(); p != "" {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			resp.Diagnostics.AddError("Cannot Remove Signed Zip", err.Error())
			return
		}
	}
	name := m.ParticipantName.ValueString()
	if name == "" {
		return
	}
	store, _, err := r.storeFor(ctx, m.ProjectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot Open Project Key Store", err.Error())
		return
	}
	cert := []byte(m.CertificatePEM.ValueString())
	if err := removeRecord(ctx, store, name, func(rec []byte) bool { return bytes.Equal(rec, cert) }); err != nil {
		resp.Diagnostics.AddError("Cannot Remove Approval Record", err.Error())
	}
}

// ImportState takes "<path of the signed zip>@<project_id>", e.g.
// "approvals/site-7.signed.zip@local:.flare-ca?nvflare=2.9".
func (r *requestApprovalResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	zipPath, projectID, ok := splitImportID(req.ID)
	if !ok {
		resp.Diagnostics.AddError("Invalid Import ID",
			fmt.Sprintf("import id %q must be <signed zip path>@<project_id>, for example approvals/site-7.signed.zip@local:.flare-ca?nvflare=2.9", req.ID))
		return
	}
	if _, err := parseProjectID(projectID); err != nil {
		resp.Diagnostics.AddError("Invalid Import ID", err.Error())
		return
	}
	for name, v := range map[string]string{"id": zipPath, "signed_zip": zipPath, "project_id": projectID} {
		resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root(name), v)...)
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
