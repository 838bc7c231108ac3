package project

import (
	"strings"
	"testing"
)

func TestParseFile(t *testing.T) {
	base := `api_version: 3
name: p
participants:
  - {name: server1, type: server, org: nvidia, fed_learn_port: 9000}
  - {name: site-1, type: client, org: nvidia, capacity: {num_of_gpus: 2, mem_per_gpu_in_GiB: 40}}
  - {name: admin@nvidia.com, type: admin, org: nvidia, role: lead}
`
	f, err := ParseFile([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Participants) != 3 || f.Participants[0].AdminPort != 9000 || f.Participants[1].NumGPUs != 2 || f.Participants[1].MemPerGPUInGiB != 40 {
		t.Fatalf("got %+v", f.Participants)
	}
	bad := map[string]string{
		"api_version: 2\nname: p\n":                                                       "only api_version 3",
		base + "  - {name: site-1, type: client, org: nvidia}\n":                          `"site-1" is used twice`,
		base + "  - {name: server2, type: server, org: nvidia}\n":                         "2 servers",
		base + "  - {name: site-2, type: client, org: nvidia, connect_to: r}\n":           `connect_to "r" is not a relay`,
		base + "  - {name: bob, type: admin, org: nvidia, role: member}\n":                "must be an email",
		base + "  - {name: x@y.com, type: admin, org: nvidia, role: root}\n":              `role "root" is not one of`,
		base + "  - {name: site.2, type: client, org: nvidia}\n":                          `client name "site.2" is not allowed`,
		base + "  - {name: site-2, type: overseer, org: nvidia}\n":                        `unknown participant type "overseer"`,
		"api_version: 3\nname: p\nparticipants:\n  - {name: s, type: server, org: a-b}\n": `org "a-b"`,
		"api_version: 3\nname: p\nparticipants: [\n":                                      "not valid YAML",
	}
	for input, want := range bad {
		_, err := ParseFile([]byte(input))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseFile(%q) = %v, want error containing %q", input, err, want)
		}
	}
}

func TestValidateName(t *testing.T) {
	cases := []struct {
		typ  Type
		name string
		ok   bool
	}{
		{TypeServer, "server1.example.com", true},
		{TypeServer, "server_1", false},
		{TypeServer, "-server", false},
		{TypeClient, "site_1-a", true},
		{TypeClient, "site.1", false},
		{TypeRelay, "relay 1", false},
		{TypeAdmin, "a.b+c@example.org", true},
		{TypeAdmin, "admin@localhost", false},
	}
	for _, c := range cases {
		if err := ValidateName(c.typ, c.name); (err == nil) != c.ok {
			t.Errorf("ValidateName(%s, %q) = %v, want ok=%v", c.typ, c.name, err, c.ok)
		}
	}
}
