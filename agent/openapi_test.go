package agent

import (
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/flarekit/terraform-provider-flare/agent/api"
)

// TestOpenAPI checks that openapi.yaml parses, has every route the server
// serves, and that its schemas name every JSON field of the API types.
func TestOpenAPI(t *testing.T) {
	var doc struct {
		OpenAPI    string                    `yaml:"openapi"`
		Paths      map[string]map[string]any `yaml:"paths"`
		Components struct {
			Schemas map[string]struct {
				Properties map[string]any `yaml:"properties"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	for _, r := range []struct{ path, method string }{
		{"/healthz", "get"}, {"/v1/cvms", "get"}, {"/v1/cvms", "post"}, {"/v1/cvms/upload", "post"},
		{"/v1/cvms/{id}", "get"}, {"/v1/cvms/{id}", "delete"}, {"/v1/cvms/{id}/attestation", "post"},
		{"/v1/cvms/{id}/logs", "get"}, {"/openapi.yaml", "get"}, {"/metrics", "get"}, {"/", "get"},
	} {
		if _, ok := doc.Paths[r.path][r.method]; !ok {
			t.Errorf("openapi.yaml lacks %s %s", strings.ToUpper(r.method), r.path)
		}
	}
	for name, v := range map[string]any{"CVM": api.CVM{}, "Verdict": api.Verdict{}, "Health": api.Health{}} {
		props := doc.Components.Schemas[name].Properties
		typ := reflect.TypeOf(v)
		for i := 0; i < typ.NumField(); i++ {
			tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			if _, ok := props[tag]; !ok {
				t.Errorf("openapi.yaml schema %s lacks %q", name, tag)
			}
		}
	}
}
