package approve

import (
	"bytes"
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/flarekit/terraform-provider-flare/internal/pki"
)

// site is the participant definition in a request's site.yaml. It comes in
// two shapes: a one-participant project.yml ({name, participants: [..]}),
// which `nvflare cert request` writes, or a flat mapping (project, name,
// org, kind, type, cert_role).
type site struct {
	doc           yaml.Node
	projectShaped bool
	identity      Request
}

func parseSiteYAML(b []byte) (*site, error) {
	s := &site{}
	if err := yaml.Unmarshal(b, &s.doc); err != nil {
		return nil, bad("site.yaml is not YAML: %v", err)
	}
	root := docRoot(&s.doc)
	if root == nil || root.Kind != yaml.MappingNode {
		return nil, bad("site.yaml must be a mapping")
	}
	var m map[string]any
	if err := root.Decode(&m); err != nil {
		return nil, bad("site.yaml: %v", err)
	}
	str := func(mm map[string]any, k string) string {
		v, _ := mm[k].(string)
		return v
	}
	parts, shaped := m["participants"].([]any)
	if _, isList := m["participants"]; isList && !shaped {
		return nil, bad("site.yaml participants must be a list")
	}
	if !shaped {
		t := str(m, "type")
		if t == "" {
			t = str(m, "cert_type")
		}
		s.identity = Request{Project: str(m, "project"), Name: str(m, "name"), Org: str(m, "org"),
			Kind: str(m, "kind"), CertType: t, CertRole: str(m, "cert_role")}
		return s, nil
	}
	s.projectShaped = true
	if len(parts) != 1 {
		return nil, bad("site.yaml must define exactly one participant, has %d", len(parts))
	}
	p, ok := parts[0].(map[string]any)
	if !ok {
		return nil, bad("site.yaml participants[0] must be a mapping")
	}
	for _, k := range []string{"connection_security", "listening_host"} {
		if _, has := p[k]; has {
			return nil, bad("site.yaml participants[0] sets %s, which distributed provisioning does not support", k)
		}
	}
	id := Request{Project: str(m, "name"), Name: str(p, "name"), Org: str(p, "org")}
	switch str(p, "type") {
	case "client":
		id.Kind, id.CertType = KindSite, pki.CertTypeClient
	case "server":
		id.Kind, id.CertType = KindServer, pki.CertTypeServer
	case "admin":
		role := normalizeRole(str(p, "role"))
		if !pki.IsAdminCertType(role) {
			return nil, bad("site.yaml admin role %q is not one of org_admin, lead, member", str(p, "role"))
		}
		id.Kind, id.CertType, id.CertRole = KindUser, role, role
	default:
		return nil, bad("site.yaml participant type %q is not client, server or admin", str(p, "type"))
	}
	s.identity = id
	return s, nil
}

// matches checks that site.yaml names the participant request.json does.
func (s *site) matches(r *Request) error {
	id := s.identity
	for _, f := range []struct{ name, site, req string }{
		{"project", id.Project, r.Project}, {"name", id.Name, r.Name}, {"org", id.Org, r.Org},
		{"kind", id.Kind, r.Kind}, {"cert_type", id.CertType, r.CertType},
	} {
		if f.site != f.req {
			return bad("site.yaml %s %q does not match request.json's %q", f.name, f.site, f.req)
		}
	}
	if normalizeRole(id.CertRole) != r.CertRole {
		return bad("site.yaml cert_role %q does not match request.json's %q", id.CertRole, r.CertRole)
	}
	return nil
}

// sanitized is site.yaml as approve puts it into the signed zip: without
// builders, packager and the participant's endpoint fields (the signed
// zip's endpoint is the approver's). Unchanged bytes when there is nothing
// to drop, which is the case for what `nvflare cert request` writes.
func (s *site) sanitized(orig []byte) ([]byte, error) {
	if !s.projectShaped {
		return orig, nil
	}
	root := docRoot(&s.doc)
	changed := dropKeys(root, "builders", "packager")
	if parts := mapValue(root, "participants"); parts != nil && len(parts.Content) == 1 {
		if dropKeys(parts.Content[0], "server", "fed_learn_port", "admin_port", "connection_security") {
			changed = true
		}
	}
	if !changed {
		return orig, nil
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("re-encoding site.yaml: %w", err)
	}
	return buf.Bytes(), enc.Close()
}

func docRoot(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) != 1 {
			return nil
		}
		return n.Content[0]
	}
	return n
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func dropKeys(m *yaml.Node, keys ...string) bool {
	if m == nil || m.Kind != yaml.MappingNode {
		return false
	}
	drop := map[string]bool{}
	for _, k := range keys {
		drop[k] = true
	}
	changed := false
	out := m.Content[:0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if drop[m.Content[i].Value] {
			changed = true
			continue
		}
		out = append(out, m.Content[i], m.Content[i+1])
	}
	m.Content = out
	return changed
}

// flatSiteYAML is the site.yaml of a signed zip made from a bare CSR: a
// one-participant project definition, as `nvflare cert request` writes.
func flatSiteYAML(r *Request) ([]byte, error) {
	p := map[string]string{"name": r.Name, "org": r.Org, "type": string(r.ParticipantType())}
	if r.CertRole != "" {
		p["role"] = r.CertRole
	}
	doc := struct {
		Name         string              `yaml:"name"`
		Participants []map[string]string `yaml:"participants"`
	}{r.Project, []map[string]string{p}}
	return yaml.Marshal(doc)
}
