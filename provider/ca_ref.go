package provider

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/flarekit/terraform-provider-flare/internal/localca"
)

// A project's id names where its CA lives, so participants and kits that
// hold only the id can reach the signer: "local:<dir>" for the embedded CA.
const localRefPrefix = "local:"

func localProjectID(dir string) string {
	return localRefPrefix + filepath.Clean(dir)
}

// storeFromProjectID resolves a project_id to its CA store.
func storeFromProjectID(id string) (localca.Store, error) {
	dir, ok := strings.CutPrefix(id, localRefPrefix)
	if !ok || dir == "" {
		return localca.Store{}, fmt.Errorf("project_id %q is not a flare_project id: use flare_project.<name>.id (ids look like %q)", id, localRefPrefix+".flare-ca")
	}
	return localca.Store{Dir: dir}, nil
}
