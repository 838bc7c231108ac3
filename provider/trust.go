package provider

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"

	"github.com/flarekit/terraform-provider-flare/internal/localca"
)

// A root of trust is never replaced by accident. When state says a project
// or a participant exists and its key material cannot be found, refresh
// fails with one of these errors instead of dropping the resource (which
// would plan a new root CA, or a new key, and with it new kits for every
// site). Replacing is an explicit act: `terraform apply -refresh=false
// -replace=ADDRESS` (refresh would fail on the missing material), a change
// of a resource's rotation_trigger, or early renewal of a participant whose
// key is still there.

// rotationTrigger is the name of the attribute that rotates a key on purpose.
const rotationTrigger = "rotation_trigger"

// rotationTriggerAttribute is rotation_trigger, the same on every resource
// that issues a key and certificate (flare_server, flare_client,
// flare_admin, flare_relay, flare_agent_identity): any string, and any
// change of it (set, changed, removed) replaces the resource, which issues
// a new key and certificate. what names the holder in the description.
func rotationTriggerAttribute(what string) schema.StringAttribute {
	return schema.StringAttribute{
		Optional:      true,
		PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
		Validators:    []validator.String{stringvalidator.LengthAtLeast(1)},
		MarkdownDescription: rotationTriggerDescription(what,
			"the plan replaces this resource, which issues a new private key and certificate, and every kit made from it is written again",
			"It is `terraform apply -replace=<address>` recorded in the configuration; a key that is lost is never replaced by "+
				"itself (refresh fails and says how to restore it), and with `-refresh=false` a changed `rotation_trigger` "+
				"replaces it as `-replace` does."),
	}
}

// rotationTriggerDescription is the one description of rotation_trigger:
// what a change does (onChange) and how it relates to -replace and lost
// keys on this resource (tail).
func rotationTriggerDescription(what, onChange, tail string) string {
	return "Rotates " + what + " key on purpose: any string (a date such as `\"2027-01\"`, a ticket number); " +
		"when it changes (set, changed or removed), " + onChange + ". An unchanged value plans nothing. " + tail
}

// entryRotationTriggerAttribute is rotation_trigger on one entry of a
// resource that holds many key holders (flare_clients): the same values and
// meaning, but a change rotates that entry only, in an update of the
// resource, not a replacement of all of it.
func entryRotationTriggerAttribute(what, onChange, tail string) schema.StringAttribute {
	return schema.StringAttribute{
		Optional:            true,
		Validators:          []validator.String{stringvalidator.LengthAtLeast(1)},
		MarkdownDescription: rotationTriggerDescription(what, onChange, tail),
	}
}

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

// issued is a key and certificate the provider issued (a participant's, an
// agent's), as refresh finds them. Its checks are the rule above, once for
// every resource that holds a key: a key that is gone, unreadable or
// replaced, a root that is gone, or a certificate the root did not sign is
// an error naming what is missing, how to restore it and how to rotate on
// purpose, never a silent new key (which is what dropping the resource
// from state would plan).
type issued struct {
	what      string // what the key is, in summaries: "Participant", "Agent"
	typ       string // the resource type, "flare_client"
	name      string // what state holds: the participant's name
	projectID string
	store     caStore // the project's key store: its root certificate
	keyWhere  string  // where the key lives
	restore   string  // how to bring the key back
}

// keyError explains a key that could not be read (err from the key's
// reader; a missing key wraps fs.ErrNotExist).
func (i issued) keyError(err error) diag.Diagnostics {
	var d diag.Diagnostics
	if errors.Is(err, fs.ErrNotExist) {
		d.AddError(i.what+" Key Missing", i.detail(err.Error(), i.restore))
		return d
	}
	d.AddError("Cannot Read "+i.what+" Key", i.detail(fmt.Sprintf("its private key %s cannot be read: %v", i.keyWhere, err), i.restore))
	return d
}

// detail is keyMissingDetail with the resource's own way to rotate.
func (i issued) detail(missing, restore string) string {
	return keyMissingDetail(i.typ, i.name, missing, restore) + "\n\n" +
		"Or change its " + rotationTrigger + " in the configuration and run terraform apply -refresh=false: the same replacement, recorded in the configuration."
}

// check verifies that key is cert's key and cert chains to the project's
// root. Only the root certificate is read: refresh never signs.
func (i issued) check(ctx context.Context, key *rsa.PrivateKey, cert *x509.Certificate) diag.Diagnostics {
	var d diag.Diagnostics
	if !key.PublicKey.Equal(cert.PublicKey) {
		d.AddError(i.what+" Key Does Not Match", i.detail(
			fmt.Sprintf("%s holds another key than the one its certificate is for (replaced outside Terraform?)", i.keyWhere),
			i.restore))
		return d
	}
	root, err := i.store.RootCert(ctx)
	if errors.Is(err, localca.ErrNoCA) {
		d.AddError("Project Root CA Missing", rootMissingDetail(i.projectID, err.Error(), i.store.Restore()))
		return d
	}
	if err != nil {
		d.AddError("Cannot Load Project CA", rootMissingDetail(i.projectID, "its root certificate cannot be read: "+err.Error(), i.store.Restore()))
		return d
	}
	if err := cert.CheckSignatureFrom(root); err != nil {
		d.AddError("Certificate Not Signed By Project CA", i.detail(
			fmt.Sprintf("its certificate is not signed by the project's root CA in %s (%v): it holds another CA", i.store.Where(), err),
			i.store.Restore()))
	}
	return d
}
