package project

import (
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParseFile: project.yml is read by flare_project_config, often from
// a repository others write to. Whatever it holds, ParseFile must not
// panic, and what it accepts must pass the checks it claims: a valid
// project name, valid participants with unique names, exactly one
// server, connect_to naming a relay. The accepted file also survives a
// round trip through YAML.
func FuzzParseFile(f *testing.F) {
	good := []byte(`api_version: 3
name: example_project
description: NVIDIA FLARE sample project yaml file
participants:
  - name: server1
    type: server
    org: nvidia
    fed_learn_port: 8002
    admin_port: 8003
    host_names: [server1.example.com, 10.0.0.5]
    default_host: server1.example.com
  - name: relay-1
    type: relay
    org: nvidia
    port: 8102
  - name: site-1
    type: client
    org: nvidia
    connect_to: relay-1
    capacity:
      num_of_gpus: 2
      mem_per_gpu_in_GiB: 16
  - name: admin@nvidia.com
    type: admin
    org: nvidia
    role: project_admin
`)
	if _, err := ParseFile(good); err != nil {
		f.Fatalf("the seed project.yml is refused: %v", err)
	}
	f.Add(good)
	f.Add([]byte("api_version: 3\nname: p\nparticipants:\n  - {name: s, type: server, org: o}\n  - {name: s, type: server, org: o}\n"))
	f.Add([]byte("api_version: 2\nname: p\n"))
	f.Add([]byte("a: &a [*a, *a]\nb: &b [*a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n"))
	f.Add([]byte("api_version: 3\nname: p\nparticipants: {}\n"))
	f.Add([]byte("---\n...\n%YAML 1.1\n---\n"))
	f.Add([]byte("api_version: !!binary AAAA\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		pf, err := ParseFile(data)
		if err != nil {
			return
		}
		if pf.APIVersion != SupportedAPIVersion {
			t.Fatalf("accepted api_version %d", pf.APIVersion)
		}
		if err := ValidateProjectName(pf.Name); err != nil {
			t.Fatalf("accepted project name %q: %v", pf.Name, err)
		}
		seen := map[string]bool{}
		relays := map[string]bool{}
		servers := 0
		for _, p := range pf.Participants {
			if err := p.Validate(); err != nil {
				t.Fatalf("accepted participant %+v: %v", p, err)
			}
			if seen[p.Name] {
				t.Fatalf("accepted name %q twice", p.Name)
			}
			seen[p.Name] = true
			if p.Type == TypeRelay {
				relays[p.Name] = true
			}
			if p.Type == TypeServer {
				servers++
			}
		}
		for _, p := range pf.Participants {
			if p.ConnectTo != "" && !relays[p.ConnectTo] {
				t.Fatalf("accepted connect_to %q of %q, not a relay", p.ConnectTo, p.Name)
			}
		}
		if servers != 1 {
			t.Fatalf("accepted %d servers", servers)
		}
		// What was accepted, written back as project.yml, is accepted again
		// with the same participants.
		type yp struct {
			Name         string   `yaml:"name"`
			Type         string   `yaml:"type"`
			Org          string   `yaml:"org"`
			FedLearnPort int      `yaml:"fed_learn_port,omitempty"`
			AdminPort    int      `yaml:"admin_port,omitempty"`
			HostNames    []string `yaml:"host_names,omitempty"`
			DefaultHost  string   `yaml:"default_host,omitempty"`
			Role         string   `yaml:"role,omitempty"`
			ConnectTo    string   `yaml:"connect_to,omitempty"`
			Port         int      `yaml:"port,omitempty"`
		}
		out := struct {
			APIVersion   int    `yaml:"api_version"`
			Name         string `yaml:"name"`
			Participants []yp   `yaml:"participants"`
		}{APIVersion: pf.APIVersion, Name: pf.Name}
		for _, p := range pf.Participants {
			out.Participants = append(out.Participants, yp{Name: p.Name, Type: string(p.Type), Org: p.Org,
				FedLearnPort: p.FedLearnPort, AdminPort: p.AdminPort, HostNames: p.HostNames, DefaultHost: p.DefaultHost,
				Role: p.Role, ConnectTo: p.ConnectTo, Port: p.Port})
		}
		b, err := yaml.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseFile(b)
		if err != nil {
			t.Fatalf("the accepted file, written back, is refused: %v\n%s", err, b)
		}
		if len(again.Participants) != len(pf.Participants) {
			t.Fatalf("round trip: %d participants, want %d", len(again.Participants), len(pf.Participants))
		}
		for i, p := range again.Participants {
			q := pf.Participants[i]
			if p.Name != q.Name || p.Type != q.Type || p.Org != q.Org || p.ConnectTo != q.ConnectTo || p.Role != q.Role {
				t.Fatalf("round trip: participant %d is %+v, was %+v", i, p, q)
			}
		}
	})
}
