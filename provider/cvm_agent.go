package provider

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/schema/validator"

	"github.com/flarekit/terraform-provider-flare/agent/api"
	"github.com/flarekit/terraform-provider-flare/agent/client"
	"github.com/flarekit/terraform-provider-flare/agent/launch"
	"github.com/flarekit/terraform-provider-flare/agent/manager"
	"github.com/flarekit/terraform-provider-flare/internal/attest"
	"github.com/flarekit/terraform-provider-flare/internal/cvm"
	"github.com/flarekit/terraform-provider-flare/internal/pki"
	"github.com/flarekit/terraform-provider-flare/internal/project"
)

// What flare_cvm_attestation and flare_cvm_instance share: reaching a
// site's flare-agent, reading the CVM kit Terraform built, and checking a
// guest's evidence here, against the kit's expected values, rather than
// taking the agent's word for it (the host that runs the agent is exactly
// what confidential computing does not trust).

var agentURLCheck = stringCheck{summary: "Invalid Agent URL", desc: "an https:// URL of a flare-agent, e.g. https://site-1.example.com:8443",
	check: checkAgentURL}

func checkAgentURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", s, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%q: give the agent's https:// address with host and port, e.g. https://site-1.example.com:8443 (the agent speaks mutual TLS only)", s)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return fmt.Errorf("%q: give the agent's base address without a path or query", s)
	}
	return nil
}

var authKitCheck = stringCheck{summary: "Invalid Startup Kit", desc: "a startup kit folder with startup/rootCA.pem and a certificate",
	check: func(dir string) error {
		if _, err := os.Stat(filepath.Join(dir, "startup", "rootCA.pem")); err != nil {
			return fmt.Errorf("%s has no startup/rootCA.pem: name a startup kit of the project (flare_startup_kit.<name>.kit_dir), e.g. a project_admin's", dir)
		}
		return nil
	}}

// launcherKitCheck adds to authKitCheck what the agent will demand of a
// launch, so a kit that may only read fails at plan time, not after apply
// has started: the certificate must carry role project_admin or org_admin
// (the agent also checks an org_admin's org against the site's).
var launcherKitCheck = stringCheck{summary: "Startup Kit May Not Launch", desc: "a project_admin's or org_admin's startup kit",
	check: func(dir string) error {
		if err := authKitCheck.check(dir); err != nil {
			return err
		}
		b, err := os.ReadFile(filepath.Join(dir, "startup", "client.crt"))
		if err != nil {
			return fmt.Errorf("%s has no startup/client.crt: name an admin's startup kit (flare_startup_kit of a flare_admin with role project_admin or org_admin)", dir)
		}
		cert, err := pki.ParseCertPEM(b)
		if err != nil {
			return fmt.Errorf("%s/startup/client.crt: %w", dir, err)
		}
		if role := pki.RoleOf(cert); role != project.RoleProjectAdmin && role != project.RoleOrgAdmin {
			return fmt.Errorf("%s is %s with role %q, which may read from a flare-agent but not launch or stop: use a project_admin's kit, or an org_admin's of the site's org",
				dir, cert.Subject.CommonName, role)
		}
		return nil
	}}

var cvmKitDirCheck = stringCheck{summary: "Invalid CVM Kit", desc: "a CVM kit folder with launch.json (flare_cvm_kit.<name>.kit_dir)",
	check: func(dir string) error {
		_, err := readCVMKit(dir)
		return err
	}}

var nonceCheck = stringCheck{summary: "Invalid Nonce", desc: "16 to 1024 bytes in hex",
	check: func(s string) error {
		_, err := parseNonce(s)
		return err
	}}

var minimumTCBCheck = stringCheck{summary: "Invalid TCB Version", desc: "a TCB_VERSION as 16 hex digits",
	check: func(s string) error {
		_, err := attest.ParseTCBVersion(s)
		return err
	}}

// readCVMKit reads and checks the kit's launch.json.
func readCVMKit(dir string) (*cvm.Manifest, error) {
	m, err := launch.ReadManifest(dir)
	if err != nil {
		return nil, fmt.Errorf("%s is not a CVM kit (flare_cvm_kit.<name>.kit_dir): %w", dir, err)
	}
	if err := launch.CheckManifest(m); err != nil {
		return nil, fmt.Errorf("CVM kit %s: %w", dir, err)
	}
	return m, nil
}

// agentClientFor authenticates with the startup kit at authKitDir and
// accepts only the agent certificate (flare_agent_identity) of site, the
// participant the CVM kit is for: never a participant certificate, the
// site's own included (client.PinSite).
func agentClientFor(agentURL, authKitDir, site string) (*client.Client, error) {
	cfg, err := client.TLSConfigFromKit(authKitDir)
	if err != nil {
		return nil, err
	}
	return client.New(agentURL, client.PinSite(cfg, site)), nil
}

// checkOptions are the caller's demands beyond the kit's expected values.
type checkOptions struct {
	// ExpectedMeasurement overrides launch.json's (hex, 48 bytes).
	ExpectedMeasurement string
	// AllowSimulated accepts evidence from the simulated platform of a CVM
	// the agent launched in simulated mode.
	AllowSimulated bool
	MinimumTCB     uint64
	VCEKCacheDir   string
}

// errSimulatedRefused is why a simulated CVM fails without allow_simulated.
const errSimulatedRefused = "simulated: the agent runs this CVM in simulated mode (no SEV-SNP on its host), so its report " +
	"proves nothing about the hardware; set allow_simulated = true (with " + AllowSimulatedEnv + "=1 in the environment) " +
	"to accept simulated reports (tests only)"

// AllowSimulatedEnv must be "1" in the environment Terraform runs the
// provider in before allow_simulated = true is accepted: a simulated
// report is signed by go-sev-guest's test device under a fake AMD chain
// whose keys are public, so any host can forge one. Setting the attribute
// alone (say, copied from a test into production) is an error.
const AllowSimulatedEnv = "FLARE_ALLOW_SIMULATED"

// simulatedEnabled tells whether AllowSimulatedEnv is set to 1.
func simulatedEnabled() bool { return os.Getenv(AllowSimulatedEnv) == "1" }

// errSimulatedNotEnabled is why allow_simulated = true is refused.
const errSimulatedNotEnabled = "allow_simulated = true is refused unless the environment variable " + AllowSimulatedEnv +
	"=1 is also set where terraform runs. Simulated reports come from go-sev-guest's test device and a fake AMD " +
	"chain whose keys are published, so any host can forge one: they prove nothing about the hardware and are " +
	"for tests only. Remove allow_simulated, or set " + AllowSimulatedEnv + "=1 in a test environment."

// allowSimulatedGate refuses allow_simulated = true at validation unless
// AllowSimulatedEnv is set, and warns loudly when it is.
type allowSimulatedGate struct{}

var _ validator.Bool = allowSimulatedGate{}

func (allowSimulatedGate) Description(context.Context) string {
	return "true only with " + AllowSimulatedEnv + "=1 in the environment"
}
func (g allowSimulatedGate) MarkdownDescription(ctx context.Context) string {
	return g.Description(ctx)
}

func (allowSimulatedGate) ValidateBool(_ context.Context, req validator.BoolRequest, resp *validator.BoolResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() || !req.ConfigValue.ValueBool() {
		return
	}
	if !simulatedEnabled() {
		resp.Diagnostics.AddAttributeError(req.Path, "Simulated Attestation Not Enabled", errSimulatedNotEnabled)
		return
	}
	resp.Diagnostics.AddAttributeWarning(req.Path, "Simulated Attestation Accepted",
		"allow_simulated = true and "+AllowSimulatedEnv+"=1: reports of CVMs an agent runs in simulated mode are "+
			"accepted. They come from a test device and prove nothing about the hardware; never use this outside tests.")
}

// checkEvidence verifies the evidence in the agent's verdict here: the
// signature and chain (go-sev-guest verify, offline), and measurement,
// policy, host data and REPORT_DATA = SHA-512(nonce ‖ guest key) against
// the kit (go-sev-guest validate). It returns the local verdict; the
// agent's own is ignored apart from its mode.
func checkEvidence(agentVerdict *api.Verdict, nonce []byte, kit *cvm.Manifest, mode string, o checkOptions) (*api.Verdict, error) {
	if len(agentVerdict.Evidence) == 0 {
		return nil, errors.New("the agent's answer carries no evidence to verify")
	}
	simulated := mode == api.ModeSimulated
	exp := manager.Expected{
		Measurement: kit.ExpectedMeasurement,
		HostData:    kit.HostData,
		Policy:      kit.GuestPolicy,
		Simulated:   simulated && o.AllowSimulated,
	}
	if o.ExpectedMeasurement != "" {
		exp.Measurement = strings.ToLower(o.ExpectedMeasurement)
	}
	v, err := manager.AttestVerifier{VCEKCacheDir: o.VCEKCacheDir, MinimumTCB: o.MinimumTCB}.Verify(agentVerdict.Evidence, nonce, exp)
	if err != nil {
		return nil, err
	}
	if simulated && !o.AllowSimulated {
		v.Verified = false
		v.Reasons = append([]string{errSimulatedRefused}, v.Reasons...)
	}
	v.CVMID, v.Mode, v.Nonce, v.Evidence = agentVerdict.CVMID, mode, nonce, agentVerdict.Evidence
	v.ExpectedMeasurement = exp.Measurement
	v.At, v.FetchMillis, v.VerifyMillis = agentVerdict.At, agentVerdict.FetchMillis, agentVerdict.VerifyMillis
	return v, nil
}

// parseNonce reads a caller's nonce (hex) or, when empty, makes one.
func parseNonce(s string) ([]byte, error) {
	if s == "" {
		return attest.NewNonce()
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) < attest.MinNonceSize || len(b) > attest.MaxNonceSize {
		return nil, fmt.Errorf("nonce must be %d to %d bytes in hex, e.g. random_id.n.hex of a random_id with byte_length = 32", attest.MinNonceSize, attest.MaxNonceSize)
	}
	return b, nil
}
