package provider

import (
	"fmt"
	"strings"
)

// A root of trust is never replaced by accident. When state says a project
// or a participant exists and its key material cannot be found, refresh
// fails with one of these errors instead of dropping the resource (which
// would plan a new root CA, or a new key, and with it new kits for every
// site). Replacing is an explicit act: `terraform apply -refresh=false
// -replace=ADDRESS` (refresh would fail on the missing material), or early
// renewal of a participant whose key is still there.

// rotateHint says how to replace a resource on purpose.
func rotateHint(what, consequence string) string {
	return fmt.Sprintf("To make a new %s on purpose instead, run\n\n"+
		"  terraform apply -refresh=false -replace=ADDRESS\n\n"+
		"with ADDRESS the resource's address (terraform state list shows it): %s",
		what, consequence)
}

// rootMissingDetail explains a project whose CA material is gone.
func rootMissingDetail(project, missing, restore string) string {
	return strings.Join([]string{
		fmt.Sprintf("State holds the project %q, but %s.", project, missing),
		"Nothing was planned: a new root CA would replace every participant's certificate and every startup kit, " +
			"and sites running with the old kits would stop trusting the federation.",
		"Restore it: " + restore,
		rotateHint("root CA", "every participant of the project gets a new key and certificate, and every kit is written again."),
	}, "\n\n")
}

// keyMissingDetail explains a participant whose private key is gone.
func keyMissingDetail(typ, name, missing, restore string) string {
	return strings.Join([]string{
		fmt.Sprintf("State holds %s %q with its certificate, but %s.", typ, name, missing),
		"Nothing was planned: a new key means a new certificate and a new kit that the site must install.",
		"Restore it: " + restore,
		rotateHint("key and certificate for "+name, "its kit is written again with them."),
	}, "\n\n")
}

// localRestore is the restore hint for material kept in a CA directory.
func localRestore(dir string) string {
	return fmt.Sprintf("put the CA directory %s back from its backup (or run Terraform in the working directory that has it; "+
		"it is relative to the working directory). In a pipeline, where runners keep nothing between runs, keep it on a "+
		"persistent volume, or use the vault_transit backend, which keeps everything in Vault and in state.", dir)
}
