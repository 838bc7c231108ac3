// Package kit lays out an NVFlare startup kit: the file set, its contents
// and modes, signature.json, and writing it to disk atomically.
//
// The layout follows what the provisioner of the project's NVFlare release
// line writes (startup/, local/, transfer/), so that line's runtime starts
// from our kits unchanged; what differs between lines is data (Line,
// lines/<version>/). startup/ and local/ are signed on every line: NVFlare
// 2.8+ stopped writing signature.json for plain kits but still enforces
// one that is present, and it is what makes a tampered kit refuse to start.
package kit

import (
	"bytes"
	"crypto"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"text/template"

	"github.com/flarekit/terraform-provider-flare/internal/project"
)

//go:embed templates/*
var templateFS embed.FS

var templates = template.Must(template.New("kit").Funcs(template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
}).ParseFS(templateFS, "templates/*"))

// File is one file of a kit, with its path relative to the kit root.
type File struct {
	Path string
	Mode fs.FileMode
	Data []byte
}

// Kit is a participant's complete startup kit, in memory.
type Kit struct {
	Name  string // directory name: the participant's name
	Files []File // sorted by Path
	Dirs  []string
}

// Input is everything a kit is made from.
type Input struct {
	Project     string
	Participant project.Participant
	// Server is required for every kit: clients, admins and relays dial it.
	Server project.Participant
	// Relay is the relay a client connects through (its connect_to).
	Relay *project.Participant
	// Line is the NVFlare release line the kit is for; nil means the
	// newest supported.
	Line *Line
	// RelayedClients are the project's clients that connect through a
	// relay; lines with AuthIdentityMap name them in the server's and the
	// clients' configuration.
	RelayedClients []project.Participant

	RootCAPEM []byte
	CertPEM   []byte
	KeyPEM    []byte
	// Signer holds the root CA key; it signs signature.json.
	Signer crypto.Signer
	// Signatures, when set, signs through a cache made for Signer, shared
	// by the kits of one apply.
	Signatures *SignatureCache
	// CC, when set, makes a server's or client's kit a CC kit (cc.go): the
	// CCManager and its authorizers in local/, the cc_authz policy, logs
	// under /applog, and every folder signed.
	CC *CC
}

// Communication defaults NVFlare's provisioner writes.
const (
	Scheme             = "http"
	ConnectionSecurity = "mtls"
)

// Mode bits. NVFlare leaves keys world-readable under a common umask; we
// keep them to the owner, which the runtime (running as that owner) reads
// the same.
const (
	modeFile   fs.FileMode = 0o644
	modeScript fs.FileMode = 0o755
	modeKey    fs.FileMode = 0o600
)

type templateData struct {
	Line       *Line
	Project    string
	Self       project.Participant
	Server     project.Participant
	Relay      *project.Participant
	Scheme     string
	ConnSec    string
	SPEndPoint string
	Module     string
	FedFile    string
	UID        string
	KeyFile    string
	// AuthIdentityMap maps a relayed client's FQCN to its certificate name.
	AuthIdentityMap map[string]string
	// LogDir prefixes the log files' names ("/applog/" in CC kits).
	LogDir string
	// ClassAllowList is resources.json.default's class_allow_list.
	ClassAllowList []string
}

// Build makes the kit in memory and signs it.
func Build(in Input) (*Kit, error) {
	p := in.Participant
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("participant: %w", err)
	}
	if in.Server.Type != project.TypeServer {
		return nil, fmt.Errorf("server: the kit needs the project's server, got a %q", in.Server.Type)
	}
	if p.Type == project.TypeServer && p.Name != in.Server.Name {
		return nil, fmt.Errorf("server kit for %q was given server %q", p.Name, in.Server.Name)
	}
	if p.Type == project.TypeClient && p.ConnectTo != "" {
		if in.Relay == nil {
			return nil, fmt.Errorf("client %q connects to relay %q: pass that relay's descriptor as relay", p.Name, p.ConnectTo)
		}
		if in.Relay.Name != p.ConnectTo || in.Relay.Type != project.TypeRelay {
			return nil, fmt.Errorf("client %q connects to relay %q but was given %s %q", p.Name, p.ConnectTo, in.Relay.Type, in.Relay.Name)
		}
	}
	if in.Signer == nil {
		return nil, fmt.Errorf("no root CA signer for signature.json")
	}

	line := in.Line
	if line == nil {
		var err error
		if line, err = LookupLine(""); err != nil {
			return nil, err
		}
	}
	d := templateData{
		Line: line, Project: in.Project, Self: p, Server: in.Server, Relay: in.Relay,
		Scheme: Scheme, ConnSec: ConnectionSecurity,
		SPEndPoint: fmt.Sprintf("%s:%d:%d", in.Server.ServerHost(), in.Server.FedLearnPort, in.Server.AdminPort),
	}
	if in.CC != nil {
		if err := in.CC.Validate(p, line); err != nil {
			return nil, err
		}
		// OnPremCVMBuilder: the CVM's NVFlare logs to its applog drive.
		d.LogDir = "/applog/"
	}
	d.ClassAllowList = classAllowList(line, in.CC)
	// The server listens under its own name; everyone else dials its host.
	if p.Type == project.TypeServer {
		d.SPEndPoint = fmt.Sprintf("%s:%d:%d", p.Name, p.FedLearnPort, p.AdminPort)
	}

	if line.AuthIdentityMap && (p.Type == project.TypeServer || p.Type == project.TypeClient) {
		for _, c := range in.RelayedClients {
			if c.Type != project.TypeClient || c.ConnectTo == "" {
				return nil, fmt.Errorf("relayed client %q: not a client with connect_to", c.Name)
			}
			if d.AuthIdentityMap == nil {
				d.AuthIdentityMap = map[string]string{}
			}
			d.AuthIdentityMap[c.ConnectTo+"."+c.Name] = c.Name
		}
	}

	b := &builder{data: &d}
	certBase := "client"
	switch p.Type {
	case project.TypeServer:
		certBase = "server"
		d.Module, d.FedFile = "nvflare.private.fed.app.server.server_train", "fed_server.json"
	case project.TypeClient:
		d.Module, d.FedFile, d.UID = "nvflare.private.fed.app.client.client_train", "fed_client.json", p.Name
	case project.TypeRelay:
		d.Module, d.FedFile, d.UID = "nvflare.private.fed.app.relay.relay", "fed_relay.json", p.Name
	}
	d.KeyFile = "startup/" + certBase + ".key"

	b.raw("startup/rootCA.pem", modeFile, in.RootCAPEM)
	b.raw("startup/"+certBase+".crt", modeFile, in.CertPEM)
	b.raw("startup/"+certBase+".key", modeKey, in.KeyPEM)

	switch p.Type {
	case project.TypeServer, project.TypeClient, project.TypeRelay:
		b.render("startup/"+d.FedFile, modeFile, d.FedFile+".tmpl")
		b.render("startup/start.sh", modeScript, "start.sh.tmpl")
		b.render("startup/sub_start.sh", modeScript, "sub_start.sh.tmpl")
		b.render("startup/stop_fl.sh", modeScript, "stop_fl.sh.tmpl")
		b.render("local/log_config.json.default", modeFile, "log_config.json.default.tmpl")
	case project.TypeAdmin:
		b.render("startup/fed_admin.json", modeFile, "fed_admin.json.tmpl")
		b.render("startup/fl_admin.sh", modeScript, "fl_admin.sh.tmpl")
		b.render("startup/readme.txt", modeFile, "readme.txt.tmpl")
		b.render("startup/system_info.ipynb", modeFile, "system_info.ipynb.tmpl")
		b.copy("local/resources.json.default", "admin_resources.json.default")
	}
	switch p.Type {
	case project.TypeServer:
		b.render("readme.txt", modeFile, "readme.txt.tmpl")
		b.render("local/resources.json.default", modeFile, "server_resources.json.default.tmpl")
	case project.TypeClient:
		b.render("readme.txt", modeFile, "readme.txt.tmpl")
		b.render("local/resources.json.default", modeFile, "client_resources.json.default.tmpl")
		if in.Relay != nil {
			b.render("local/relay__resources.json", modeFile, "relay__resources.json.tmpl")
			b.render("local/comm_config.json", modeFile, "client_comm_config.json.tmpl")
		}
	case project.TypeRelay:
		// The relay both dials the server (client.*) and listens for
		// clients (server.*); one certificate naming it serves both.
		b.raw("startup/server.crt", modeFile, in.CertPEM)
		b.raw("startup/server.key", modeKey, in.KeyPEM)
		b.render("local/comm_config.json", modeFile, "relay_comm_config.json.tmpl")
	}
	if p.Type == project.TypeServer || p.Type == project.TypeClient {
		authz := "authorization.json.default.tmpl"
		if in.CC != nil {
			authz = "authorization_cc.json.default.tmpl"
		}
		b.render("local/authorization.json.default", modeFile, authz)
		b.copy("local/privacy.json.sample", "privacy.json.sample")
	}
	if in.CC != nil && b.err == nil {
		files, err := in.CC.ccFiles(p, in.Server)
		if err != nil {
			return nil, err
		}
		b.files = append(b.files, files...)
	}
	if b.err != nil {
		return nil, b.err
	}

	k := &Kit{Name: p.Name, Files: b.files, Dirs: []string{"startup", "local", "transfer"}}
	signed := []string{"startup", "local"}
	if in.CC != nil {
		// NVFlare's SignatureBuilder signs a CC kit from its root: every
		// folder gets a signature.json, the root's signing its files and
		// the names of its folders.
		signed = append(signed, "transfer", ".")
	}
	var sigs []File
	for _, dir := range signed {
		files := k.filesIn(dir)
		if dir == "." {
			for _, sub := range k.Dirs {
				files = append(files, File{Path: sub, Data: []byte(sub)})
			}
		}
		sig, err := signFolder(files, in)
		if err != nil {
			return nil, fmt.Errorf("signing %s/: %w", dir, err)
		}
		sigs = append(sigs, File{Path: path.Join(dir, SignatureFile), Mode: modeFile, Data: sig})
	}
	k.Files = append(k.Files, sigs...)
	sort.Slice(k.Files, func(i, j int) bool { return k.Files[i].Path < k.Files[j].Path })
	return k, nil
}

// filesIn returns the files directly inside dir.
func (k *Kit) filesIn(dir string) []File {
	var out []File
	for _, f := range k.Files {
		if path.Dir(f.Path) == dir {
			out = append(out, f)
		}
	}
	return out
}

// File returns the kit file at rel, or nil.
func (k *Kit) File(rel string) *File {
	for i := range k.Files {
		if k.Files[i].Path == rel {
			return &k.Files[i]
		}
	}
	return nil
}

type builder struct {
	data  *templateData
	files []File
	err   error
}

func (b *builder) raw(p string, mode fs.FileMode, data []byte) {
	b.files = append(b.files, File{Path: p, Mode: mode, Data: data})
}

func (b *builder) render(p string, mode fs.FileMode, tmpl string) {
	if b.err != nil {
		return
	}
	var buf bytes.Buffer
	if err := templates.ExecuteTemplate(&buf, tmpl, b.data); err != nil {
		b.err = fmt.Errorf("rendering %s: %w", p, err)
		return
	}
	b.raw(p, mode, buf.Bytes())
}

func (b *builder) copy(p, name string) {
	data, err := templateFS.ReadFile("templates/" + name)
	if err != nil && b.err == nil {
		b.err = err
	}
	b.raw(p, modeFile, data)
}
