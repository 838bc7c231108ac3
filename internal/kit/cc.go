package kit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"

	"github.com/flarekit/terraform-provider-flare/internal/project"
)

// CC is a server's or client's confidential-computing setting: what
// NVFlare's CCBuilder (nvflare/lighter/cc_provision/impl/cc.py) and the
// OnPremCVMBuilder it runs for compute_env onprem_cvm and mock write into
// the startup kit of a participant with a cc_config. Measured from
// `nvflare provision` of 2.7.3, 2.8.3 and 2.9.0 (tests/interop/test_cc.py
// compares the two):
//
//   - local/cc_manager__p_resources.json: component cc_manager, class
//     CCManager, args cc_issuers_conf (this site's issuers: issuer_id,
//     token_expiration), cc_verifier_ids (the ids of every CC site's
//     issuers), verify_frequency (cc_attestation.check_frequency, only when
//     given) and cc_enabled_sites (every CC site; the server as "server",
//     the name CCManager knows it by);
//   - local/<id>__p_resources.json for every CC site's issuer: {"components":
//     [{id, path, args}]}, the authorizers CCManager issues and verifies with;
//   - local/authorization.json.default from the cc_authz policy (no
//     operate, shell or byoc rights, no downloads);
//   - local/log_config.json.default with every handler's file under /applog/;
//   - local/resources.json.default with class_allow_list extended (2.8+);
//   - signature.json in every folder of the kit, the kit root included
//     (the whole kit is signed, not only startup/ and local/).
//
// The kit is where NVFlare puts these, and where ours go: a CVM kit copies
// the startup kit onto its encrypted root, so the guest's NVFlare reads
// them from the signed kit, and a host process runs them the same way.
type CC struct {
	// Issuers are this site's cc_issuers: the authorizers that make its
	// attestation tokens.
	Issuers []Issuer
	// Verifiers are the other CC sites' issuers. NVFlare gives every CC kit
	// the issuers of all CC sites of the project; this kit's own are always
	// included.
	Verifiers []Authorizer
	// CheckFrequency is cc_attestation.check_frequency in seconds; 0 leaves
	// verify_frequency out (CCManager's default is 600).
	CheckFrequency int
	// EnabledSites names every CC site of the project (servers and
	// clients by participant name); this kit's own is always included.
	EnabledSites []string
	// ClassAllowList is appended to the line's class_allow_list (lines
	// with CCClassAllowList only).
	ClassAllowList []string
}

// Authorizer is a CCAuthorizer component: id, Python class, constructor args.
type Authorizer struct {
	ID   string         `json:"id"`
	Path string         `json:"path"`
	Args map[string]any `json:"args"`
}

// Issuer is one cc_issuers entry: an authorizer and its token lifetime.
type Issuer struct {
	Authorizer
	TokenExpiration int
}

// ServerSiteName is the name CCManager knows the server by: NVFlare's
// CCBuilder writes "server" into cc_enabled_sites for the server, because
// the server's fl_ctx identity is "server", not its participant name.
const ServerSiteName = "server"

// The authorizer classes NVFlare ships (nvflare/app_opt/confidential_computing).
const (
	MockAuthorizerPath = "nvflare.app_opt.confidential_computing.mock_authorizer.MockAuthorizer"
	SNPAuthorizerPath  = "nvflare.app_opt.confidential_computing.snp_authorizer.SNPAuthorizer"
	ccManagerPath      = "nvflare.app_opt.confidential_computing.cc_manager.CCManager"
	ccManagerID        = "cc_manager"
)

var (
	componentID = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)
	pythonPath  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$`)
)

// Validate checks the setting for the kit of self.
func (c *CC) Validate(self project.Participant, line *Line) error {
	if self.Type != project.TypeServer && self.Type != project.TypeClient {
		return fmt.Errorf("cc: only server and client kits run CC checks, not a %s", self.Type)
	}
	if len(c.Issuers) == 0 {
		return fmt.Errorf("cc: issuers: a CC site needs at least one issuer (NVFlare's mock: %s)", MockAuthorizerPath)
	}
	if c.CheckFrequency < 0 {
		return fmt.Errorf("cc: check_frequency must be positive")
	}
	freq := c.CheckFrequency
	if freq == 0 {
		freq = 600
	}
	for i, is := range c.Issuers {
		if err := is.Authorizer.validate(fmt.Sprintf("issuers[%d]", i)); err != nil {
			return err
		}
		if is.TokenExpiration < 1 || is.TokenExpiration >= freq {
			return fmt.Errorf("cc: issuers[%d].token_expiration %d must be at least 1 and below check_frequency (%d)", i, is.TokenExpiration, freq)
		}
	}
	for i, v := range c.Verifiers {
		if err := v.validate(fmt.Sprintf("verifiers[%d]", i)); err != nil {
			return err
		}
	}
	if _, err := c.authorizers(); err != nil {
		return err
	}
	for i, s := range c.EnabledSites {
		if s == "" {
			return fmt.Errorf("cc: enabled_sites[%d] is empty", i)
		}
	}
	if len(c.ClassAllowList) > 0 && !line.CCClassAllowList {
		return fmt.Errorf("cc: class_allow_list: NVFlare %s's CCBuilder does not apply a class_allow_list (2.8 and later do)", line.Version)
	}
	for i, s := range c.ClassAllowList {
		if s == "" {
			return fmt.Errorf("cc: class_allow_list[%d] is empty", i)
		}
	}
	return nil
}

func (a Authorizer) validate(where string) error {
	if !componentID.MatchString(a.ID) || a.ID == ccManagerID {
		return fmt.Errorf("cc: %s.id %q: a component id (letters, digits, _ . -), not %q", where, a.ID, ccManagerID)
	}
	if !pythonPath.MatchString(a.Path) {
		return fmt.Errorf("cc: %s.path %q: the dotted path of a Python class, e.g. %s", where, a.Path, MockAuthorizerPath)
	}
	return nil
}

// authorizers is every authorizer the kit carries: its issuers, then the
// verifiers, one per id, sorted by id. The same id twice must mean the
// same component.
func (c *CC) authorizers() ([]Authorizer, error) {
	byID := map[string]Authorizer{}
	add := func(a Authorizer) error {
		if a.Args == nil {
			a.Args = map[string]any{}
		}
		if old, ok := byID[a.ID]; ok {
			if old.Path != a.Path || !reflect.DeepEqual(old.Args, a.Args) {
				return fmt.Errorf("cc: authorizer %q is defined twice, differently (%s and %s): one id, one component in every CC kit", a.ID, old.Path, a.Path)
			}
			return nil
		}
		byID[a.ID] = a
		return nil
	}
	for _, is := range c.Issuers {
		if err := add(is.Authorizer); err != nil {
			return nil, err
		}
	}
	for _, v := range c.Verifiers {
		if err := add(v); err != nil {
			return nil, err
		}
	}
	out := make([]Authorizer, 0, len(byID))
	for _, a := range byID {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// enabledSites is cc_enabled_sites: EnabledSites and self, the server's
// name written as "server", without repeats, in the given order.
func (c *CC) enabledSites(self, server project.Participant) []string {
	var out []string
	add := func(name string) {
		if name == server.Name {
			name = ServerSiteName
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	for _, s := range c.EnabledSites {
		add(s)
	}
	add(self.Name)
	return out
}

// ccFiles renders the CC files of local/: the CCManager component and one
// resources file per authorizer.
func (c *CC) ccFiles(self, server project.Participant) ([]File, error) {
	auths, err := c.authorizers()
	if err != nil {
		return nil, err
	}
	type issuerConf struct {
		IssuerID        string `json:"issuer_id"`
		TokenExpiration int    `json:"token_expiration"`
	}
	type mgrArgs struct {
		IssuersConf     []issuerConf `json:"cc_issuers_conf"`
		VerifierIDs     []string     `json:"cc_verifier_ids"`
		VerifyFrequency *int         `json:"verify_frequency,omitempty"`
		EnabledSites    []string     `json:"cc_enabled_sites"`
	}
	args := mgrArgs{IssuersConf: []issuerConf{}, VerifierIDs: []string{}, EnabledSites: c.enabledSites(self, server)}
	for _, is := range c.Issuers {
		args.IssuersConf = append(args.IssuersConf, issuerConf{is.ID, is.TokenExpiration})
	}
	for _, a := range auths {
		args.VerifierIDs = append(args.VerifierIDs, a.ID)
	}
	if c.CheckFrequency > 0 {
		f := c.CheckFrequency
		args.VerifyFrequency = &f
	}
	type component struct {
		ID   string `json:"id"`
		Path string `json:"path"`
		Args any    `json:"args"`
	}
	resources := func(comp component) ([]byte, error) {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		err := enc.Encode(map[string][]component{"components": {comp}})
		return bytes.TrimRight(buf.Bytes(), "\n"), err
	}
	var files []File
	data, err := resources(component{ccManagerID, ccManagerPath, args})
	if err != nil {
		return nil, err
	}
	files = append(files, File{Path: ccManagerFile, Mode: modeFile, Data: data})
	for _, a := range auths {
		if data, err = resources(component{a.ID, a.Path, a.Args}); err != nil {
			return nil, fmt.Errorf("cc: authorizer %q args: %w", a.ID, err)
		}
		files = append(files, File{Path: "local/" + a.ID + "__p_resources.json", Mode: modeFile, Data: data})
	}
	return files, nil
}

// classAllowList is the line's class_allow_list with the CC extension
// appended as NVFlare's CCBuilder does (no repeats, order kept).
func classAllowList(line *Line, cc *CC) []string {
	out := slices.Clone(line.ClassAllowList)
	if cc == nil {
		return out
	}
	for _, c := range cc.ClassAllowList {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// ccManagerFile is the CCManager component's file in a kit.
const ccManagerFile = "local/" + ccManagerID + "__p_resources.json"

// CCIssuerIDs returns the ids of the issuers the CCManager of the kit at
// kitDir runs (its cc_issuers_conf); none when the kit has no CC files.
func CCIssuerIDs(kitDir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(kitDir, filepath.FromSlash(ccManagerFile)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var res struct {
		Components []struct {
			Args struct {
				Issuers []struct {
					ID string `json:"issuer_id"`
				} `json:"cc_issuers_conf"`
			} `json:"args"`
		} `json:"components"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("%s: %w", ccManagerFile, err)
	}
	var ids []string
	for _, c := range res.Components {
		for _, is := range c.Args.Issuers {
			ids = append(ids, is.ID)
		}
	}
	return ids, nil
}
