package provider

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/listplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flarekit/terraform-provider-flare/internal/agentid"
	"github.com/flarekit/terraform-provider-flare/internal/atomicfile"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/project"
)

// flare_agent_identity: flare-agent's own TLS identity for one site, so
// the site host never holds the participant's private key (that key lives
// only in the startup kit, which goes into the attested CVM). The agent
// kit is agent.crt, agent.key (0600), rootCA.pem and agent.yaml; see
// internal/agentid for what makes the certificate unusable as a
// participant's.

var (
	_ resource.ResourceWithImportState = (*agentIdentityResource)(nil)
	_ resource.ResourceWithModifyPlan  = (*agentIdentityResource)(nil)
)

// NewAgentIdentityResource is flare_agent_identity.
func NewAgentIdentityResource() resource.Resource { return &agentIdentityResource{} }

type agentIdentityResource struct{ withProviderData }

type agentIdentityModel struct {
	ID              types.String `tfsdk:"id"`
	ProjectID       types.String `tfsdk:"project_id"`
	Site            types.String `tfsdk:"site"`
	Org             types.String `tfsdk:"org"`
	OutputDir       types.String `tfsdk:"output_dir"`
	ValidityDays    types.Int64  `tfsdk:"validity_days"`
	Listen          types.List   `tfsdk:"listen"`
	Port            types.Int64  `tfsdk:"port"`
	StateDir        types.String `tfsdk:"state_dir"`
	Mode            types.String `tfsdk:"mode"`
	KitDir          types.String `tfsdk:"kit_dir"`
	ConfigFile      types.String `tfsdk:"config_file"`
	CommonName      types.String `tfsdk:"common_name"`
	CertPEM         types.String `tfsdk:"cert_pem"`
	CertFingerprint types.String `tfsdk:"cert_fingerprint"`
	KeyFingerprint  types.String `tfsdk:"key_fingerprint"`
	NotAfter        types.String `tfsdk:"not_after"`
	KitSHA256       types.String `tfsdk:"kit_sha256"`
	RotationTrigger types.String `tfsdk:"rotation_trigger"`
}

const (
	defaultAgentPort     = 8443
	defaultAgentStateDir = "/var/lib/flare-agent"
)

func (r *agentIdentityResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_agent_identity"
}

func (r *agentIdentityResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	resp.Schema = schema.Schema{
		MarkdownDescription: "flare-agent's own identity for one site: a new key and a certificate from the project's CA " +
			"that names the site's agent (CN `<site>:flare-agent`, role `flare-agent`, extended key usage serverAuth only), " +
			"written as an agent kit: `agent.crt`, `agent.key` (0600), `rootCA.pem` and an `agent.yaml` ready for " +
			"`flare-agent serve --config <kit_dir>/agent.yaml`. The site host then never holds the participant's private key, " +
			"which stays in the startup kit that goes into the attested CVM. NVFlare does not accept the certificate as a " +
			"participant: no participant name contains `:` (client registration and admin login check the name against the " +
			"CN), `flare-agent` is no role of NVFlare's authorization, and a certificate restricted to serverAuth is refused as " +
			"a TLS client. `flare_cvm_instance` and `flare_cvm_attestation` accept only the agent certificate of the kit's site. " +
			"The private key is written to `output_dir` only, never to state. A deleted or edited `agent.crt`, `rootCA.pem` or " +
			"`agent.yaml` is rewritten by the next apply; a deleted or replaced `agent.key`, or a project root that is gone or " +
			"changed, fails refresh and plan with what to restore (never a silent new identity). A new key and certificate on " +
			"purpose: change `rotation_trigger`, or `terraform apply -replace=<address>`.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "The agent kit folder."},
			"project_id": schema.StringAttribute{
				Required: true, PlanModifiers: projectIDModifiers(),
				MarkdownDescription: "`flare_project.<name>.id`: the CA that signs the agent certificate.",
				Validators:          []validator.String{projectIDCheck},
			},
			"site": schema.StringAttribute{
				Required: true, PlanModifiers: replace,
				MarkdownDescription: "The site the agent serves: the name of a `flare_client` or `flare_server` of the project " +
					"(e.g. `flare_client.site_1.name`). CVM kits of this participant are the ones the agent launches.",
				Validators: []validator.String{stringCheck{summary: "Invalid Site", desc: "a client or server name", check: func(s string) error {
					if project.ValidateName(project.TypeClient, s) == nil || project.ValidateName(project.TypeServer, s) == nil {
						return nil
					}
					return fmt.Errorf("%q is not a client or server name NVFlare accepts", s)
				}}},
			},
			"org": schema.StringAttribute{
				Required: true, PlanModifiers: replace,
				MarkdownDescription: "The site's organization (the agent certificate's O); org_admin certificates of this org may launch and stop CVMs.",
				Validators:          []validator.String{stringCheck{summary: "Invalid Org", desc: "letters, digits and _", check: project.ValidateOrg}},
			},
			"output_dir": schema.StringAttribute{
				Required: true, PlanModifiers: replace,
				MarkdownDescription: "Folder the agent kit is written to (created; the key is mode 0600). Copy it to the site host, e.g. `/etc/flare-agent/`.",
			},
			"validity_days": schema.Int64Attribute{
				Optional: true, Computed: true, Default: int64default.StaticInt64(defaultCertDays),
				PlanModifiers:       []planmodifier.Int64{int64planmodifier.RequiresReplace()},
				Validators:          []validator.Int64{int64validator.Between(1, 36500)},
				MarkdownDescription: fmt.Sprintf("Days the agent certificate is valid. Defaults to %d.", defaultCertDays),
			},
			"listen": schema.ListAttribute{
				ElementType: types.StringType, Optional: true,
				PlanModifiers: []planmodifier.List{listplanmodifier.RequiresReplace()},
				Validators: []validator.List{listvalidator.SizeAtLeast(1), listvalidator.ValueStringsAre(stringCheck{
					summary: "Invalid Host", desc: "an IP address or DNS name", check: agentid.ValidateHost})},
				MarkdownDescription: "Host names and IP addresses clients reach the agent at (the host of its URL), written into " +
					"the certificate's subjectAltName. The first is the host of `agent.yaml`'s `listen`. Default: `127.0.0.1`.",
			},
			"port": schema.Int64Attribute{
				Optional: true, Computed: true, Default: int64default.StaticInt64(defaultAgentPort),
				Validators:          []validator.Int64{int64validator.Between(1024, 65535)},
				MarkdownDescription: fmt.Sprintf("Port of `agent.yaml`'s `listen`. Defaults to %d.", defaultAgentPort),
			},
			"state_dir": schema.StringAttribute{
				Optional: true, Computed: true, Default: stringdefault.StaticString(defaultAgentStateDir),
				MarkdownDescription: "`agent.yaml`'s `state_dir`. Defaults to `" + defaultAgentStateDir + "` (the systemd unit's StateDirectory).",
			},
			"mode": schema.StringAttribute{
				Optional: true, Computed: true, Default: stringdefault.StaticString("snp"),
				Validators:          []validator.String{stringvalidator.OneOf("auto", "snp", "simulated")},
				MarkdownDescription: "`agent.yaml`'s `mode`: `snp` (default), `auto` or `simulated`.",
			},
			rotationTrigger:    rotationTriggerAttribute("the agent's"),
			"kit_dir":          schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "The agent kit folder (`agent_kit_dir` of agent.yaml)."},
			"config_file":      schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "Path of the kit's `agent.yaml`."},
			"common_name":      schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "The agent certificate's CN, `<site>:flare-agent`."},
			"cert_pem":         schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "The agent certificate in PEM."},
			"cert_fingerprint": schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "Hex SHA-256 of the agent certificate's DER."},
			"key_fingerprint":  schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "Hex SHA-256 of the agent public key's SubjectPublicKeyInfo."},
			"not_after":        schema.StringAttribute{Computed: true, PlanModifiers: keep, MarkdownDescription: "RFC 3339 time the agent certificate expires."},
			"kit_sha256": schema.StringAttribute{Computed: true, PlanModifiers: keep,
				MarkdownDescription: "Hex SHA-256 over the kit's agent.crt, rootCA.pem and agent.yaml; a changed file shows in the plan and is rewritten."},
		},
	}
}

// listenHosts returns the configured hosts, or the default.
func (m agentIdentityModel) listenHosts(ctx context.Context) []string {
	var hosts []string
	if !m.Listen.IsNull() && !m.Listen.IsUnknown() {
		m.Listen.ElementsAs(ctx, &hosts, false)
	}
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1"}
	}
	return hosts
}

// agentYAML is the kit's agent.yaml. agent_kit_dir is "." (the folder of
// agent.yaml itself), so the kit can be moved as a whole.
func (m agentIdentityModel) agentYAML(ctx context.Context) []byte {
	listen := net.JoinHostPort(m.listenHosts(ctx)[0], strconv.FormatInt(m.Port.ValueInt64(), 10))
	return []byte(fmt.Sprintf(`# flare-agent configuration for the agent of site %[1]q, written by
# flare_agent_identity (flare-agent serve --config <this folder>/agent.yaml).
# Every key of examples/agent/agent.yaml may be added.

# HTTPS API with mutual TLS. Clients need a certificate from the project's
# root CA: project_admin, or org_admin of this site's org, may launch and
# stop CVMs; other certificates of the project may read attestation.
listen: %[2]s

# The agent's own identity: agent.crt and agent.key (CN %[3]q, never a
# participant's certificate) and rootCA.pem, the only CA it accepts
# clients from. "." is the folder of this file.
agent_kit_dir: .

# The site's organization (org_admin certificates of this org may manage CVMs).
org: %[4]s

# state_dir/cvms/<id>/: state.json, QMP and attestation sockets, console log.
state_dir: %[5]s
vcek_cache_dir: %[5]s/vcek

# snp: refuse launches when SEV-SNP is unavailable; auto: simulated then;
# simulated: always simulated (tests only).
mode: %[6]s

restart:
  policy: on-failure
  max_restarts: 3
stop_timeout: 30s
attest_timeout: 30s
network: user
log_level: info
`, m.Site.ValueString(), listen, agentid.CommonName(m.Site.ValueString()), m.Org.ValueString(), m.StateDir.ValueString(), m.Mode.ValueString()))
}

// agentKitDigest hashes what the kit's public files hold.
func agentKitDigest(cert, root, yaml []byte) string {
	h := sha256.New()
	for _, b := range [][]byte{cert, root, yaml} {
		fmt.Fprintf(h, "%d\n", len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// diskDigest is agentKitDigest of the files in dir ("" when one is missing).
func diskDigest(dir string) string {
	var parts [3][]byte
	for i, f := range []string{agentid.CertFile, agentid.RootFile, agentid.ConfigFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return ""
		}
		parts[i] = b
	}
	return agentKitDigest(parts[0], parts[1], parts[2])
}

func (r *agentIdentityResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() || req.State.Raw.IsNull() {
		return
	}
	var plan, state agentIdentityModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || plan.CertPEM.IsUnknown() || plan.ProjectID.IsUnknown() || plan.Port.IsUnknown() ||
		plan.StateDir.IsUnknown() || plan.Mode.IsUnknown() || plan.Listen.IsUnknown() {
		return
	}
	store, _, err := r.storeFor(ctx, plan.ProjectID.ValueString())
	if err != nil {
		return
	}
	root, err := store.RootCert(ctx)
	if err != nil {
		return
	}
	want := agentKitDigest([]byte(plan.CertPEM.ValueString()), pki.CertPEM(root), plan.agentYAML(ctx))
	if want != state.KitSHA256.ValueString() {
		resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("kit_sha256"), types.StringUnknown())...)
	}
}

func (r *agentIdentityResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var m agentIdentityModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	store, _, err := r.storeFor(ctx, m.ProjectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("project_id"), "Cannot Open Project Key Store", err.Error())
		return
	}
	site := m.Site.ValueString()
	if _, ok, err := participantNameTaken(ctx, store, site); err != nil {
		resp.Diagnostics.AddError("Cannot Read Project Key Store", err.Error())
		return
	} else if !ok {
		resp.Diagnostics.AddAttributeError(path.Root("site"), "Unknown Site",
			fmt.Sprintf("%q is not a participant of this project: name a flare_client or flare_server of it (e.g. site = flare_client.site_1.name, which also orders the apply).", site))
		return
	}
	if b, err := store.ParticipantCert(ctx, site); err == nil {
		if c, err := pki.ParseCertPEM(b); err == nil && pki.RoleOf(c) != "" {
			resp.Diagnostics.AddAttributeError(path.Root("site"), "Not A Site",
				fmt.Sprintf("%q is an admin (role %s); an agent serves a site: name a flare_client or flare_server.", site, pki.RoleOf(c)))
			return
		}
	}
	ca, ref, err := r.ca(ctx, m.ProjectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot Load Project CA", err.Error())
		return
	}
	line, err := ref.line()
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("project_id"), "Invalid Project ID", err.Error())
		return
	}
	cert, key, err := agentid.Issue(ca, site, m.Org.ValueString(), m.listenHosts(ctx), pki.ValidityFor(now(), int(m.ValidityDays.ValueInt64())), line.Certs)
	if err != nil {
		resp.Diagnostics.AddError("Cannot Issue Agent Certificate", err.Error())
		return
	}
	dir := m.OutputDir.ValueString()
	if err := agentid.WriteKit(dir, cert, key, ca.Cert); err != nil {
		resp.Diagnostics.AddError("Cannot Write Agent Kit", err.Error())
		return
	}
	m.CertPEM = types.StringValue(string(pki.CertPEM(cert)))
	if err := r.writePublic(ctx, &m, ca.Cert); err != nil {
		resp.Diagnostics.AddError("Cannot Write Agent Kit", err.Error())
		return
	}
	resp.Diagnostics.Append(setAgentCertState(&m, cert)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// writePublic writes agent.crt (from state), rootCA.pem and agent.yaml and
// sets the computed paths and kit_sha256.
func (r *agentIdentityResource) writePublic(ctx context.Context, m *agentIdentityModel, root *x509Cert) error {
	dir := m.OutputDir.ValueString()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	certPEM, rootPEM, yaml := []byte(m.CertPEM.ValueString()), pki.CertPEM(root), m.agentYAML(ctx)
	for _, f := range []struct {
		name string
		data []byte
	}{{agentid.CertFile, certPEM}, {agentid.RootFile, rootPEM}, {agentid.ConfigFile, yaml}} {
		if err := atomicfile.Write(filepath.Join(dir, f.name), f.data, 0o644); err != nil {
			return err
		}
	}
	m.ID, m.KitDir = types.StringValue(dir), types.StringValue(dir)
	m.ConfigFile = types.StringValue(filepath.Join(dir, agentid.ConfigFile))
	m.KitSHA256 = types.StringValue(agentKitDigest(certPEM, rootPEM, yaml))
	return nil
}

func setAgentCertState(m *agentIdentityModel, cert *x509Cert) (d diag.Diagnostics) {
	keyFP, err := pki.KeyFingerprint(cert.PublicKey)
	if err != nil {
		d.AddError("Cannot Fingerprint Key", err.Error())
		return d
	}
	m.CommonName = types.StringValue(cert.Subject.CommonName)
	m.CertPEM = types.StringValue(string(pki.CertPEM(cert)))
	m.CertFingerprint = types.StringValue(pki.CertFingerprint(cert))
	m.KeyFingerprint = types.StringValue(keyFP)
	m.NotAfter = types.StringValue(cert.NotAfter.UTC().Format(time.RFC3339))
	return d
}

// Read fails when agent.key is gone, unreadable or replaced, or the
// certificate no longer chains to the project's root (or the root is
// gone): the same rule as participants (issued, trust.go). A new agent
// identity is an explicit act (-replace, rotation_trigger). Other kit files
// that differ show as a kit_sha256 change and are rewritten by Update.
func (r *agentIdentityResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var m agentIdentityModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	store, _, err := r.storeFor(ctx, m.ProjectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot Open Project Key Store", err.Error())
		return
	}
	dir := m.OutputDir.ValueString()
	keyPath := filepath.Join(dir, agentid.KeyFile)
	check := issued{what: "Agent", typ: "flare_agent_identity", name: agentid.CommonName(m.Site.ValueString()),
		projectID: m.ProjectID.ValueString(), store: store, keyWhere: keyPath, restore: agentRestore(dir)}
	importing := m.CertPEM.IsNull()
	if importing {
		check.name = dir
	}
	key, err := readAgentKey(keyPath)
	if err != nil {
		resp.Diagnostics.Append(check.keyError(err)...)
		return
	}
	certPEM := []byte(m.CertPEM.ValueString())
	if importing {
		if certPEM, err = os.ReadFile(filepath.Join(dir, agentid.CertFile)); err != nil {
			resp.Diagnostics.AddError("Cannot Read Agent Certificate", err.Error())
			return
		}
	}
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		resp.Diagnostics.AddError("Invalid Agent Certificate", err.Error())
		return
	}
	if resp.Diagnostics.Append(check.check(ctx, key, cert)...); resp.Diagnostics.HasError() {
		return
	}
	if importing {
		site, ok := agentid.SiteOf(cert)
		if !ok {
			resp.Diagnostics.AddError("Not An Agent Certificate", fmt.Sprintf("%s is %q, not an agent certificate (flare_agent_identity)",
				filepath.Join(dir, agentid.CertFile), cert.Subject.CommonName))
			return
		}
		m.Site = types.StringValue(site)
		if len(cert.Subject.Organization) > 0 {
			m.Org = types.StringValue(cert.Subject.Organization[0])
		}
		m.ValidityDays = types.Int64Value(validityDaysOf(cert))
		hosts := append([]string{}, cert.DNSNames...)
		for _, ip := range cert.IPAddresses {
			hosts = append(hosts, ip.String())
		}
		if len(hosts) == 1 && hosts[0] == "127.0.0.1" {
			m.Listen = types.ListNull(types.StringType)
		} else {
			l, d := types.ListValueFrom(ctx, types.StringType, hosts)
			resp.Diagnostics.Append(d...)
			m.Listen = l
		}
		m.Port, m.StateDir, m.Mode = types.Int64Value(defaultAgentPort), types.StringValue(defaultAgentStateDir), types.StringValue("snp")
		m.ID, m.KitDir = types.StringValue(dir), types.StringValue(dir)
		m.ConfigFile = types.StringValue(filepath.Join(dir, agentid.ConfigFile))
	}
	resp.Diagnostics.Append(setAgentCertState(&m, cert)...)
	m.KitSHA256 = types.StringValue(diskDigest(dir))
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

// Update rewrites the kit's public files (agent.yaml after a change of
// port, state_dir or mode; any file that drifted); key and certificate stay.
func (r *agentIdentityResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var m, state agentIdentityModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &m)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	store, _, err := r.storeFor(ctx, m.ProjectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot Open Project Key Store", err.Error())
		return
	}
	root, err := store.RootCert(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Cannot Load Project CA", err.Error())
		return
	}
	m.CertPEM = state.CertPEM
	if err := r.writePublic(ctx, &m, root); err != nil {
		resp.Diagnostics.AddError("Cannot Write Agent Kit", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

func (r *agentIdentityResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var m agentIdentityModel
	resp.Diagnostics.Append(req.State.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	dir := m.OutputDir.ValueString()
	for _, f := range []string{agentid.KeyFile, agentid.CertFile, agentid.RootFile, agentid.ConfigFile} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			resp.Diagnostics.AddError("Cannot Remove Agent Kit", err.Error())
		}
	}
	os.Remove(dir) // if empty
}

// readAgentKey reads an agent kit's key; a missing one wraps fs.ErrNotExist.
func readAgentKey(p string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("its private key %s is gone: %w", p, fs.ErrNotExist)
	}
	if err != nil {
		return nil, err
	}
	k, err := pki.ParseKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return k, nil
}

// agentRestore is the restore hint for an agent kit's key: the kit was
// copied to the site host, which keeps the key.
func agentRestore(dir string) string {
	return fmt.Sprintf("copy agent.key back into %s from the agent kit on the site host (where flare-agent runs, e.g. "+
		"/etc/flare-agent/agent.key) or from a backup; it must be the key of agent.crt (key_fingerprint in state). "+
		"In a pipeline, keep output_dir on a persistent volume.", dir)
}

// ImportState takes "<output_dir>@<project_id>", e.g.
// "kits/site-1.agent@local:.flare-ca".
func (r *agentIdentityResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	dir, projectID, ok := splitImportID(req.ID)
	if !ok {
		resp.Diagnostics.AddError("Invalid Import ID",
			fmt.Sprintf("import id %q must be <output_dir>@<project_id>, for example kits/site-1.agent@local:.flare-ca", req.ID))
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), dir)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("output_dir"), dir)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("project_id"), projectID)...)
}
