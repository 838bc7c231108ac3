package kit

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/flarekit/terraform-provider-flare/internal/project"
)

// The topology of testdata/cc/project.yml: server1 and site-1 are CC sites
// (compute_env mock), site-2 is not.
var (
	ccMock = Authorizer{ID: "mock_authorizer", Path: MockAuthorizerPath}
	ccSNP  = Authorizer{ID: "snp_authorizer", Path: SNPAuthorizerPath,
		Args: map[string]any{"snpguest_binary": "/host/bin/snpguest", "max_retries": 3}}
	ccSites    = []string{"server1", "site-1"}
	ccSettings = map[string]*CC{
		"server1": {Issuers: []Issuer{{ccMock, 100}}, Verifiers: []Authorizer{ccMock, ccSNP},
			CheckFrequency: 120, EnabledSites: ccSites},
		"site-1": {Issuers: []Issuer{{ccMock, 100}, {ccSNP, 250}}, Verifiers: []Authorizer{ccMock},
			CheckFrequency: 300, EnabledSites: ccSites, ClassAllowList: []string{"my_org.trainers.Trainer"}},
	}
)

// TestCCMatchesNVFlare builds the kits of testdata/cc/project.yml for each
// line and compares them with what that line's `nvflare provision` wrote
// (testdata/cc/lines/<line>, made by regen.sh): the same files in a CC kit,
// and the same JSON in every local/ file. cc_verifier_ids comes from a
// Python set and cc_enabled_sites in project order, so both compare as sets
// (CCManager only asks `in`).
func TestCCMatchesNVFlare(t *testing.T) {
	f := newFixture(t)
	for _, version := range Versions() {
		line, _ := LookupLine(version)
		dir := filepath.Join("testdata", "cc", "lines", version)
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("no NVFlare output for line %s: run testdata/cc/regen.sh", version)
		}
		for _, p := range []project.Participant{
			{Type: project.TypeServer, Name: "server1", Org: "nvidia", FedLearnPort: 8002, AdminPort: 8003},
			{Type: project.TypeClient, Name: "site-1", Org: "nvidia"},
			{Type: project.TypeClient, Name: "site-2", Org: "nvidia"},
		} {
			in := f.input(t, p)
			in.Line, in.CC = line, ccSettings[p.Name]
			cc := in.CC
			if cc != nil && !line.CCClassAllowList {
				c := *cc
				c.ClassAllowList = nil // refused on 2.7 (TestCCRejects); NVFlare 2.7 ignores it
				in.CC = &c
			}
			k, err := Build(in)
			if err != nil {
				t.Fatalf("%s %s: %v", version, p.Name, err)
			}
			want := filepath.Join(dir, p.Name)
			if cc != nil {
				raw, err := os.ReadFile(filepath.Join(want, "files.txt"))
				if err != nil {
					t.Fatal(err)
				}
				if got, exp := strings.Join(paths(k), "\n"), strings.TrimSpace(string(raw)); got != exp {
					t.Errorf("%s %s files:\n got %s\nwant %s", version, p.Name, got, exp)
				}
			}
			entries, err := os.ReadDir(want)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if e.Name() == "files.txt" {
					continue
				}
				ours := k.File("local/" + e.Name())
				if ours == nil {
					t.Errorf("%s %s: no local/%s", version, p.Name, e.Name())
					continue
				}
				theirs, err := os.ReadFile(filepath.Join(want, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				var a, b any
				if err := json.Unmarshal(ours.Data, &a); err != nil {
					t.Fatalf("%s %s ours local/%s: %v", version, p.Name, e.Name(), err)
				}
				if err := json.Unmarshal(theirs, &b); err != nil {
					t.Fatal(err)
				}
				if e.Name() == "cc_manager__p_resources.json" {
					sortArgs(a, "cc_verifier_ids", "cc_enabled_sites")
					sortArgs(b, "cc_verifier_ids", "cc_enabled_sites")
				}
				if !reflect.DeepEqual(a, b) {
					ja, _ := json.MarshalIndent(a, "", " ")
					jb, _ := json.MarshalIndent(b, "", " ")
					t.Errorf("%s %s local/%s differs from NVFlare's:\n ours %s\n NVFlare %s", version, p.Name, e.Name(), ja, jb)
				}
			}
		}
	}
}

func sortArgs(v any, keys ...string) {
	args := v.(map[string]any)["components"].([]any)[0].(map[string]any)["args"].(map[string]any)
	for _, k := range keys {
		l := args[k].([]any)
		sort.Slice(l, func(i, j int) bool { return l[i].(string) < l[j].(string) })
	}
}

// A CC kit is signed in every folder, the root's signature.json signing its
// folders' names as NVFlare's sign_folders does; our VerifyFolder (the
// same walk as NVFlare's verify_folder_signature) accepts it, and a kit
// that stops being a CC kit loses the extra signatures when rewritten.
func TestCCSignedEverywhere(t *testing.T) {
	f := newFixture(t)
	in := f.input(t, client)
	in.CC = &CC{Issuers: []Issuer{{ccMock, 100}}, EnabledSites: []string{"server1"}}
	k, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	var root map[string]string
	if err := json.Unmarshal(k.File(SignatureFile).Data, &root); err != nil {
		t.Fatal(err)
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range root {
			if !yield(n) {
				return
			}
		}
	})
	if got := strings.Join(names, " "); got != "local readme.txt startup transfer" {
		t.Errorf("root signature.json signs %s", got)
	}
	var mgr struct {
		Components []struct {
			Args map[string]any `json:"args"`
		} `json:"components"`
	}
	if err := json.Unmarshal(k.File("local/cc_manager__p_resources.json").Data, &mgr); err != nil {
		t.Fatal(err)
	}
	if got := mgr.Components[0].Args["cc_enabled_sites"]; !reflect.DeepEqual(got, []any{"server", "site-1"}) {
		t.Errorf("cc_enabled_sites %v: the server as \"server\", then self", got)
	}
	if _, ok := mgr.Components[0].Args["verify_frequency"]; ok {
		t.Error("verify_frequency written without check_frequency")
	}
	parent := t.TempDir()
	dir, err := k.Write(parent)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyFolder(dir, f.ca.Cert); err != nil {
		t.Fatalf("CC kit does not verify from its root: %v", err)
	}
	if d, _ := DigestDir(dir); d != k.Digest() {
		t.Error("DigestDir of a fresh CC kit differs from its Digest")
	}
	in.CC = nil
	plain, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Write(parent); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{SignatureFile, "transfer/" + SignatureFile, "local/cc_manager__p_resources.json", "local/mock_authorizer__p_resources.json"} {
		if _, err := os.Stat(filepath.Join(dir, gone)); err == nil {
			t.Errorf("%s left behind after the kit stopped being a CC kit", gone)
		}
	}
	if d, _ := DigestDir(dir); d != plain.Digest() {
		t.Error("DigestDir after CC -> plain differs from the plain kit's Digest")
	}
}

func TestCCRejects(t *testing.T) {
	f := newFixture(t)
	l27, _ := LookupLine("2.7")
	for name, tc := range map[string]struct {
		p    project.Participant
		cc   CC
		line *Line
		want string
	}{
		"admin":              {admin, CC{Issuers: []Issuer{{ccMock, 100}}}, nil, "only server and client"},
		"no issuer":          {client, CC{}, nil, "at least one issuer"},
		"expiration":         {client, CC{Issuers: []Issuer{{ccMock, 120}}, CheckFrequency: 120}, nil, "below check_frequency"},
		"bad path":           {client, CC{Issuers: []Issuer{{Authorizer{ID: "x", Path: "Mock"}, 10}}}, nil, "dotted path"},
		"cc_manager id":      {client, CC{Issuers: []Issuer{{Authorizer{ID: "cc_manager", Path: MockAuthorizerPath}, 10}}}, nil, "component id"},
		"conflicting id":     {client, CC{Issuers: []Issuer{{ccMock, 10}}, Verifiers: []Authorizer{{ID: ccMock.ID, Path: SNPAuthorizerPath}}}, nil, "defined twice"},
		"2.7 class list":     {client, CC{Issuers: []Issuer{{ccMock, 10}}, ClassAllowList: []string{"a.B"}}, l27, "2.7"},
		"empty enabled site": {client, CC{Issuers: []Issuer{{ccMock, 10}}, EnabledSites: []string{""}}, nil, "enabled_sites[0]"},
	} {
		in := f.input(t, tc.p)
		in.Line = tc.line
		cc := tc.cc
		in.CC = &cc
		if _, err := Build(in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
}
