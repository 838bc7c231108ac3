package kit

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// Line is what differs between NVFlare release lines in a startup kit and
// its certificates. Each supported line is data in lines/<version>/
// (line.json, and class_allow_list.json where the line has one), read from
// that line's own provisioner and checked by `make interop` against its
// `nvflare provision` output; the templates read these fields instead of
// asking for a version.
type Line struct {
	// Version is the release line, "2.9"; Tested is the release the interop
	// suite pins for it.
	Version string `json:"version"`
	Tested  string `json:"tested"`
	// OverseerAgent: fed_server.json and fed_client.json carry the
	// DummyOverseerAgent block (2.7; 2.8 removed HA).
	OverseerAgent bool `json:"overseer_agent"`
	// ClientTarget: fed_client.json names the server as service.target
	// ("<host>:<fed_learn_port>"); 2.8+ clients refuse to start without it.
	ClientTarget bool `json:"client_target"`
	// AuthIdentityMap: fed_server.json and every fed_client.json map the
	// FQCN of each client behind a relay to its certificate's name (2.9
	// checks every cell's certificate against its FQCN).
	AuthIdentityMap bool `json:"auth_identity_map"`
	// LogReceiver is the server's job log receiver class.
	LogReceiver string `json:"log_receiver"`
	// ErrorLogFile is the error log's file name in log_config.json.default.
	ErrorLogFile string `json:"error_log_file"`
	// SiteLogStreaming: clients allow log streaming and run the
	// SiteLogStreamer component over ErrorLogFile.
	SiteLogStreaming bool `json:"site_log_streaming"`
	// GPUExpirationPeriod, when not 0, is GPUResourceManager's
	// expiration_period in seconds.
	GPUExpirationPeriod int `json:"gpu_expiration_period"`
	// ClassListEnforcementMode, when set, goes into resources.json.default
	// with ClassAllowList (lines/<version>/class_allow_list.json).
	ClassListEnforcementMode string   `json:"class_list_enforcement_mode"`
	ClassAllowList           []string `json:"-"`
	// ExtraSiteRights are added to org_admin's and lead's rights in
	// authorization.json.default.
	ExtraSiteRights map[string]string `json:"extra_site_rights"`
	// WorkspaceEnv: the scripts honour NVFL_WORKSPACE and map a kit in
	// /user_config to /vault/workspace (the CC deployment layout).
	WorkspaceEnv bool `json:"workspace_env"`
	// CCClassAllowList: the line's CCBuilder appends a CC kit's
	// class_allow_list to resources.json.default (2.8+; 2.7's ignores it).
	CCClassAllowList bool `json:"cc_class_allow_list"`
	// Certs is the certificate profile of the line's provisioner.
	Certs pki.Profile `json:"certs"`
}

// ExtraSiteRightNames lists ExtraSiteRights' keys in a stable order.
func (l *Line) ExtraSiteRightNames() []string {
	names := make([]string, 0, len(l.ExtraSiteRights))
	for k := range l.ExtraSiteRights {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

//go:embed lines
var linesFS embed.FS

var lines = mustLoadLines()

func mustLoadLines() map[string]*Line {
	out, err := loadLines(linesFS)
	if err != nil {
		panic(err) // embedded data: a broken file is a build defect the tests catch
	}
	return out
}

func loadLines(fsys fs.FS) (map[string]*Line, error) {
	dirs, err := fs.ReadDir(fsys, "lines")
	if err != nil {
		return nil, err
	}
	out := map[string]*Line{}
	for _, d := range dirs {
		dir := path.Join("lines", d.Name())
		var l Line
		if err := decodeStrict(fsys, path.Join(dir, "line.json"), &l); err != nil {
			return nil, err
		}
		if l.Version != d.Name() {
			return nil, fmt.Errorf("%s/line.json: version %q, want the folder's name %q", dir, l.Version, d.Name())
		}
		if err := l.Certs.Validate(); err != nil {
			return nil, fmt.Errorf("%s/line.json: certs.%v", dir, err)
		}
		if l.ClassListEnforcementMode != "" {
			if err := decodeStrict(fsys, path.Join(dir, "class_allow_list.json"), &l.ClassAllowList); err != nil {
				return nil, err
			}
		}
		out[l.Version] = &l
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no NVFlare lines under lines/")
	}
	return out, nil
}

func decodeStrict(fsys fs.FS, name string, v any) error {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// Versions lists the supported NVFlare release lines, oldest first.
func Versions() []string {
	out := make([]string, 0, len(lines))
	for v := range lines {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return versionLess(out[i], out[j]) })
	return out
}

// DefaultVersion is the newest supported line.
func DefaultVersion() string {
	v := Versions()
	return v[len(v)-1]
}

// LookupLine returns the line for version ("2.9"); "" means the default.
func LookupLine(version string) (*Line, error) {
	if version == "" {
		version = DefaultVersion()
	}
	if l, ok := lines[version]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("NVFlare %q is not a supported release line: use one of %s", version, strings.Join(Versions(), ", "))
}

func versionLess(a, b string) bool {
	var amaj, amin, bmaj, bmin int
	fmt.Sscanf(a, "%d.%d", &amaj, &amin)
	fmt.Sscanf(b, "%d.%d", &bmaj, &bmin)
	if amaj != bmaj {
		return amaj < bmaj
	}
	return amin < bmin
}
