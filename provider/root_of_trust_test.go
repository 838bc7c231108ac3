package provider

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
)

// moveAway renames p to p+".bak" (a backup a pipeline lost), and back.
func moveAway(t *testing.T, p string) func() {
	t.Helper()
	return func() {
		if err := os.Rename(p, p+".bak"); err != nil {
			t.Fatal(err)
		}
	}
}

func moveBack(t *testing.T, p string) func() {
	t.Helper()
	return func() {
		if err := os.Rename(p+".bak", p); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAccRootOfTrust_MissingMaterialFails: a project whose CA directory,
// root key or participant key is gone (a fresh runner with the same state)
// fails the plan with an error naming what is missing, how to restore it
// and how to rotate on purpose; nothing is planned for replacement, and
// putting the material back gives an empty plan again.
func TestAccRootOfTrust_MissingMaterialFails(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	config := federationConfig(dir, []string{"site-1"}, "")
	empty := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{Config: config},
			{
				// The whole CA directory is gone.
				PreConfig: moveAway(t, caDir),
				Config:    config,
				PlanOnly:  true,
				ExpectError: regexp.MustCompile(`(?s)Root\s+CA\s+Missing.*` + regexp.QuoteMeta(filepath.Join(caDir, "rootCA.pem")) +
					`\s+is\s+missing.*Nothing\s+was\s+planned.*Restore\s+it:\s+put\s+the\s+CA\s+directory.*terraform\s+apply\s+-refresh=false\s+-replace=ADDRESS`),
			},
			{PreConfig: moveBack(t, caDir), Config: config, ConfigPlanChecks: empty},
			{
				// Only the root key is gone.
				PreConfig:   moveAway(t, filepath.Join(caDir, "rootCA.key")),
				Config:      config,
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Root\s+CA\s+Missing.*rootCA\.key\s+is\s+missing`),
			},
			{PreConfig: moveBack(t, filepath.Join(caDir, "rootCA.key")), Config: config, ConfigPlanChecks: empty},
			{
				// A participant's key is gone: an error, not a new key.
				PreConfig: moveAway(t, filepath.Join(caDir, "participants", "site-1.key")),
				Config:    config,
				PlanOnly:  true,
				ExpectError: regexp.MustCompile(`(?s)Participant\s+Key\s+Missing.*flare_client\s+"site-1".*site-1\.key\s+is\s+gone.*` +
					`terraform\s+apply\s+-refresh=false\s+-replace=ADDRESS`),
			},
			{PreConfig: moveBack(t, filepath.Join(caDir, "participants", "site-1.key")), Config: config, ConfigPlanChecks: empty},
		},
	})
}

// TestAccRootOfTrust_ClientsKeyMissingFails: flare_clients refuses a
// missing client key too, and says how to reissue that one client.
func TestAccRootOfTrust_ClientsKeyMissingFails(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "ca", "participants", "site-2.key")
	config := clientsConfig(dir, map[string]string{"site-1": "", "site-2": ""})
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{Config: config},
			{
				PreConfig:   moveAway(t, key),
				Config:      config,
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Client\s+Key\s+Missing.*site-2\.key\s+is\s+gone.*remove\s+it\s+from\s+clients\s+in\s+one\s+apply`),
			},
			{
				PreConfig:        moveBack(t, key),
				Config:           config,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}},
			},
		},
	})
}
