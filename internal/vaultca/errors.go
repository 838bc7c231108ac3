package vaultca

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/api"
)

// PermissionError is a 403 from Vault, with the policy grant that is missing.
type PermissionError struct {
	Action     string // what was attempted, e.g. "sign with transit key transit/keys/ca"
	Capability string // e.g. "update"
	Path       string // e.g. "transit/sign/ca"
	Namespace  string
	Address    string
}

func (e *PermissionError) Error() string {
	ns := ""
	if e.Namespace != "" {
		ns = fmt.Sprintf(" in namespace %q", e.Namespace)
	}
	return fmt.Sprintf("%s: permission denied by vault at %s (HTTP 403): the token's policy needs %q on %q%s, e.g.\n"+
		"  path %q { capabilities = [%q] }", e.Action, e.Address, e.Capability, e.Path, ns, e.Path, e.Capability)
}

// describe turns an api error into one that says what failed and how to fix
// it: 403 names the policy grant; transport errors name the address.
func describe(client *api.Client, action string, err error, capability, path string) error {
	if err == nil {
		return nil
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		if re.StatusCode == http.StatusForbidden && capability != "" {
			return &PermissionError{Action: action, Capability: capability, Path: path,
				Namespace: client.Namespace(), Address: client.Address()}
		}
		return fmt.Errorf("%s: vault at %s answered HTTP %d on %s: %s", action, client.Address(), re.StatusCode, path, vaultMessages(re))
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: no answer from vault at %s in time (%v); is the server up and the address right?", action, client.Address(), err)
	}
	return fmt.Errorf("%s: cannot reach vault at %s (check VAULT_ADDR / address and that the server runs): %w", action, client.Address(), err)
}

func vaultMessages(re *api.ResponseError) string {
	var msgs []string
	for _, m := range re.Errors {
		// Vault wraps errors as "1 error occurred:\n\t* msg\n\n".
		m = strings.TrimSpace(m)
		if i := strings.Index(m, "* "); strings.HasPrefix(m, "1 error occurred:") && i >= 0 {
			m = strings.TrimSpace(m[i+2:])
		}
		if m != "" {
			msgs = append(msgs, m)
		}
	}
	if len(msgs) == 0 {
		return "(no error message)"
	}
	return strings.Join(msgs, "; ")
}
