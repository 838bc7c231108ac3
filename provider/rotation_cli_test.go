package provider

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// stateAttr reads one attribute of one resource from `terraform show -json`.
func stateAttr(t *testing.T, r *tfRunner, address, attr string) string {
	t.Helper()
	st := showState(t, r)
	for _, res := range st.Values.RootModule.Resources {
		if res.Address == address {
			v, _ := res.AttributeValues[attr].(string)
			return v
		}
	}
	t.Fatalf("%s: %s not in state", r.name, address)
	return ""
}

// TestAccRootOfTrust_CLI drives the real terraform binary with the local
// backend as a pipeline would: deleting .flare-ca turns the plan into the
// "Root CA Missing" error (exit 1, nothing planned); putting it back plans
// nothing; the documented rotation (-refresh=false -replace) makes a new
// root on purpose, and the documented reissue of one participant gives it
// a new key while the root stays.
func TestAccRootOfTrust_CLI(t *testing.T) {
	tf := tfBinary(t)
	rc := providerMirror(t)
	dir := t.TempDir()
	a := newRunner(t, "runner", tf, rc, dir, pipelineConfig("", `{ dir = ".flare-ca" }`, "site-1"))
	a.must("init", "-input=false")
	a.must("apply", "-auto-approve", "-input=false")
	root1 := stateAttr(t, a, "flare_project.p", "root_ca_fingerprint")
	key1 := stateAttr(t, a, "flare_client.site_1", "key_fingerprint")

	ca := filepath.Join(dir, ".flare-ca")
	if err := os.Rename(ca, ca+".bak"); err != nil {
		t.Fatal(err)
	}
	res := a.run("plan", "-detailed-exitcode", "-input=false")
	if res.code != 1 || !regexp.MustCompile(`(?s)Error: Root CA Missing.*\.flare-ca/rootCA\.pem\s+is\s+missing.*terraform apply -refresh=false\s+-replace=ADDRESS`).MatchString(res.String()) {
		t.Fatalf("plan without .flare-ca: exit %d, want 1 and the Root CA Missing error:\n%s", res.code, res)
	}
	if strings.Contains(res.stdout, "must be replaced") || strings.Contains(res.stdout, "will be created") {
		t.Fatalf("plan without .flare-ca planned changes:\n%s", res)
	}
	if err := os.Rename(ca+".bak", ca); err != nil {
		t.Fatal(err)
	}
	a.must("plan", "-detailed-exitcode", "-input=false")

	// Reissue one participant on purpose: new key, same root.
	if err := os.Remove(filepath.Join(ca, "participants", "site-1.key")); err != nil {
		t.Fatal(err)
	}
	if res := a.run("plan", "-input=false"); res.code != 1 || !strings.Contains(res.stderr, "Participant Key Missing") {
		t.Fatalf("plan without site-1.key: exit %d:\n%s", res.code, res)
	}
	a.must("apply", "-auto-approve", "-input=false", "-refresh=false", "-replace=flare_client.site_1")
	if k := stateAttr(t, a, "flare_client.site_1", "key_fingerprint"); k == key1 {
		t.Fatal("reissue kept the old key")
	}
	if r := stateAttr(t, a, "flare_project.p", "root_ca_fingerprint"); r != root1 {
		t.Fatal("reissuing a participant changed the root")
	}
	a.must("plan", "-detailed-exitcode", "-input=false")

	// Rotate the root on purpose, after losing it.
	if err := os.RemoveAll(ca); err != nil {
		t.Fatal(err)
	}
	a.must("apply", "-auto-approve", "-input=false", "-refresh=false", "-replace=flare_project.p")
	root2 := stateAttr(t, a, "flare_project.p", "root_ca_fingerprint")
	if root2 == "" || root2 == root1 {
		t.Fatalf("rotation: root fingerprint %q, was %q", root2, root1)
	}
	a.must("plan", "-detailed-exitcode", "-input=false")
	if err := checkKits(filepath.Join(dir, "kits"), map[string]string{"server1": "server", "site-1": "client", "admin@nvidia.com": "client"})(nil); err != nil {
		t.Fatal(err)
	}
	if got := fingerprintOfFile(t, filepath.Join(dir, "kits", "site-1", "startup", "rootCA.pem")); got != root2 {
		t.Fatalf("site-1's kit has root %s, the project %s", got, root2)
	}
	a.must("destroy", "-auto-approve", "-input=false")
}
