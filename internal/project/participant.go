// Package project is the federation model: participants, NVFlare's naming
// rules, and project.yml import.
package project

import (
	"fmt"
	"regexp"
	"strings"
)

// Type is a participant type as NVFlare names it in project.yml.
type Type string

// Participant types.
const (
	TypeServer Type = "server"
	TypeClient Type = "client"
	TypeAdmin  Type = "admin"
	TypeRelay  Type = "relay"
)

// Admin roles NVFlare's default authorization policy knows.
const (
	RoleProjectAdmin = "project_admin"
	RoleOrgAdmin     = "org_admin"
	RoleLead         = "lead"
	RoleMember       = "member"
)

// AdminRoles lists the roles an admin may have.
var AdminRoles = []string{RoleProjectAdmin, RoleOrgAdmin, RoleLead, RoleMember}

// Participant is everything a startup kit needs to know about one member of
// the federation except its key material.
type Participant struct {
	Type Type   `json:"type"`
	Name string `json:"name"`
	Org  string `json:"org"`

	// Server.
	FedLearnPort int      `json:"fed_learn_port,omitempty"`
	AdminPort    int      `json:"admin_port,omitempty"`
	HostNames    []string `json:"host_names,omitempty"`
	DefaultHost  string   `json:"default_host,omitempty"`

	// Client.
	NumGPUs        int     `json:"num_gpus,omitempty"`
	MemPerGPUInGiB float64 `json:"mem_per_gpu_in_GiB,omitempty"`
	ConnectTo      string  `json:"connect_to,omitempty"`

	// Admin.
	Role string `json:"role,omitempty"`

	// Relay.
	Port int `json:"port,omitempty"`
}

// CertRole is the role NVFlare puts into the participant's certificate:
// admins carry theirs; servers, clients and relays carry none.
func (p Participant) CertRole() string {
	if p.Type == TypeAdmin {
		return p.Role
	}
	return ""
}

// ServerHost is the host name clients dial: default_host, else the name.
func (p Participant) ServerHost() string {
	if p.DefaultHost != "" {
		return p.DefaultHost
	}
	return p.Name
}

// NVFlare's name rules (nvflare/apis/utils/format_check.py).
var (
	hostNameRule    = regexp.MustCompile(`^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])\.)*([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9])$`)
	siteNameRule    = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	emailRule       = regexp.MustCompile(`^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$`)
	orgRule         = regexp.MustCompile(`^[A-Za-z0-9_]+$`)
	projectNameRule = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
)

// MaxProjectNameLength is where NVFlare truncates project names.
const MaxProjectNameLength = 63

// ValidateName checks a participant name against NVFlare's rule for its
// type. The error says what is wrong and how to fix it.
func ValidateName(t Type, name string) error {
	if name == "" {
		return fmt.Errorf("name must not be empty")
	}
	switch t {
	case TypeAdmin:
		return ValidateEmail(name)
	case TypeServer:
		return ValidateHostName(name)
	case TypeClient, TypeRelay:
		if !siteNameRule.MatchString(name) {
			return fmt.Errorf("%s name %q is not allowed: use letters, digits, '-' and '_' only (no dots or spaces)", t, name)
		}
		return nil
	}
	return fmt.Errorf("unknown participant type %q", t)
}

// ValidateHostName checks a DNS host name (server names, default_host,
// host_names).
func ValidateHostName(name string) error {
	if len(name) > 253 || !hostNameRule.MatchString(name) {
		return fmt.Errorf("%q is not a valid host name: use DNS labels of letters, digits and '-', separated by dots, like server1.example.com", name)
	}
	return nil
}

// ValidateProjectName checks a project name: it becomes the root CA's
// common name and a directory name.
func ValidateProjectName(name string) error {
	if len(name) > MaxProjectNameLength {
		return fmt.Errorf("project name %q is longer than %d characters (NVFlare would truncate it)", name, MaxProjectNameLength)
	}
	if !projectNameRule.MatchString(name) {
		return fmt.Errorf("project name %q is not allowed: start with a letter or digit and use letters, digits, '_', '-' and '.'", name)
	}
	return nil
}

// ValidateEmail checks an admin name, which NVFlare requires to be an email.
func ValidateEmail(s string) error {
	if !emailRule.MatchString(s) {
		return fmt.Errorf("admin name %q must be an email address like alice@example.com (NVFlare identifies admins by email)", s)
	}
	return nil
}

// ValidateOrg checks an organisation name.
func ValidateOrg(org string) error {
	if !orgRule.MatchString(org) {
		return fmt.Errorf("org %q is not allowed: use letters, digits and '_' only", org)
	}
	return nil
}

// ValidatePort checks a TCP port number.
func ValidatePort(field string, port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("%s %d is out of range: use a TCP port from 1 to 65535", field, port)
	}
	return nil
}

// ValidateRole checks an admin role.
func ValidateRole(role string) error {
	for _, r := range AdminRoles {
		if r == role {
			return nil
		}
	}
	return fmt.Errorf("role %q is not one of %s", role, strings.Join(AdminRoles, ", "))
}

// Validate checks one participant on its own.
func (p Participant) Validate() error {
	if err := ValidateName(p.Type, p.Name); err != nil {
		return err
	}
	if err := ValidateOrg(p.Org); err != nil {
		return err
	}
	switch p.Type {
	case TypeServer:
		if err := ValidatePort("fed_learn_port", p.FedLearnPort); err != nil {
			return err
		}
		if err := ValidatePort("admin_port", p.AdminPort); err != nil {
			return err
		}
		for _, h := range append([]string{p.DefaultHost}, p.HostNames...) {
			if h == "" {
				continue
			}
			if err := ValidateHostName(h); err != nil {
				return err
			}
		}
	case TypeClient:
		if p.NumGPUs < 0 {
			return fmt.Errorf("num_gpus must be 0 or more")
		}
		if p.MemPerGPUInGiB < 0 {
			return fmt.Errorf("mem_per_gpu_in_GiB must be 0 or more")
		}
	case TypeAdmin:
		return ValidateRole(p.Role)
	case TypeRelay:
		if err := ValidatePort("port", p.Port); err != nil {
			return err
		}
		if p.DefaultHost != "" {
			return ValidateHostName(p.DefaultHost)
		}
	default:
		return fmt.Errorf("unknown participant type %q", p.Type)
	}
	return nil
}

// FieldError is a validation failure tied to one attribute.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// ValidateCross checks rules that involve more than one field. A server's
// admin_port may equal fed_learn_port: NVFlare 2.5+ then serves admins on
// the one port (it opens a second listener only when they differ).
func (p Participant) ValidateCross() *FieldError {
	if p.Type == TypeClient && p.ConnectTo != "" {
		if err := ValidateName(TypeRelay, p.ConnectTo); err != nil {
			return &FieldError{Field: "connect_to", Msg: err.Error()}
		}
	}
	return nil
}

// Defaults NVFlare's provisioner uses when project.yml leaves them out.
const (
	DefaultFedLearnPort = 8002
	DefaultAdminPort    = 8003
	DefaultRelayPort    = 8102
)
