package kit

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// Kits built through one SignatureCache verify, share the signatures of
// the files they have in common, and sign their own files themselves.
func TestSignatureCache(t *testing.T) {
	f := newFixture(t)
	cache := NewSignatureCache(f.ca.Signer)
	other := client
	other.Name = "site-2"
	out := t.TempDir()
	sigs := map[string]map[string]map[string]string{} // kit -> folder -> file -> signature
	for _, p := range []struct {
		name string
		in   Input
	}{{"site-1", f.input(t, client)}, {"site-2", f.input(t, other)}} {
		in := p.in
		in.Signatures = cache
		k, err := Build(in)
		if err != nil {
			t.Fatal(err)
		}
		dir, err := k.Write(out)
		if err != nil {
			t.Fatal(err)
		}
		sigs[p.name] = map[string]map[string]string{}
		for _, sub := range []string{"startup", "local"} {
			if err := VerifyFolder(filepath.Join(dir, sub), f.ca.Cert); err != nil {
				t.Errorf("%s: VerifyFolder(%s): %v", p.name, sub, err)
			}
			m := map[string]string{}
			if err := json.Unmarshal(k.File(sub+"/"+SignatureFile).Data, &m); err != nil {
				t.Fatal(err)
			}
			sigs[p.name][sub] = m
		}
	}
	for _, sub := range []string{"startup", "local"} {
		a, b := sigs["site-1"][sub], sigs["site-2"][sub]
		for name, s := range a {
			same := s == b[name]
			shared := sub == "local" || name == "rootCA.pem" || name == "start.sh" || name == "stop_fl.sh"
			if same != shared {
				t.Errorf("%s/%s: same signature in both kits = %v, want %v", sub, name, same, shared)
			}
		}
	}

	// A cache made for another signer is refused, not used.
	g := newFixture(t)
	in := f.input(t, client)
	in.Signatures = NewSignatureCache(g.ca.Signer)
	if _, err := Build(in); err == nil || !strings.Contains(err.Error(), "another signer") {
		t.Errorf("Build with another signer's cache: %v", err)
	}
}
