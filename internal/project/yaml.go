package project

import (
	"bytes"
	"fmt"

	"gopkg.in/yaml.v3"
)

// File is an NVFlare project.yml.
type File struct {
	APIVersion   int           `yaml:"api_version"`
	Name         string        `yaml:"name"`
	Description  string        `yaml:"description"`
	Participants []Participant `yaml:"-"`
}

type yamlParticipant struct {
	Name         string   `yaml:"name"`
	Type         string   `yaml:"type"`
	Org          string   `yaml:"org"`
	FedLearnPort int      `yaml:"fed_learn_port"`
	AdminPort    int      `yaml:"admin_port"`
	HostNames    []string `yaml:"host_names"`
	DefaultHost  string   `yaml:"default_host"`
	Role         string   `yaml:"role"`
	ConnectTo    string   `yaml:"connect_to"`
	Port         int      `yaml:"port"`
	Capacity     struct {
		NumOfGPUs      int     `yaml:"num_of_gpus"`
		MemPerGPUInGiB float64 `yaml:"mem_per_gpu_in_GiB"`
	} `yaml:"capacity"`
}

// SupportedAPIVersion is the project.yml schema NVFlare 2.4+ writes.
const SupportedAPIVersion = 3

// ParseFile reads a project.yml and checks it the way NVFlare would:
// api_version, known types, names, duplicates, one server, relays named
// by connect_to exist. Unknown participant keys are ignored as NVFlare
// passes them to builders.
func ParseFile(data []byte) (*File, error) {
	var raw struct {
		APIVersion   int               `yaml:"api_version"`
		Name         string            `yaml:"name"`
		Description  string            `yaml:"description"`
		Participants []yamlParticipant `yaml:"participants"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("project.yml is not valid YAML: %w", err)
	}
	if raw.APIVersion != SupportedAPIVersion {
		return nil, fmt.Errorf("project.yml api_version is %d: only api_version %d is supported (NVFlare 2.4 and later)", raw.APIVersion, SupportedAPIVersion)
	}
	if err := ValidateProjectName(raw.Name); err != nil {
		return nil, fmt.Errorf("project.yml name: %w", err)
	}
	f := &File{APIVersion: raw.APIVersion, Name: raw.Name, Description: raw.Description}
	seen := map[string]bool{}
	relays := map[string]bool{}
	for i, rp := range raw.Participants {
		p := Participant{
			Type: Type(rp.Type), Name: rp.Name, Org: rp.Org,
			FedLearnPort: rp.FedLearnPort, AdminPort: rp.AdminPort, HostNames: rp.HostNames, DefaultHost: rp.DefaultHost,
			Role: rp.Role, ConnectTo: rp.ConnectTo, Port: rp.Port,
			NumGPUs: rp.Capacity.NumOfGPUs, MemPerGPUInGiB: rp.Capacity.MemPerGPUInGiB,
		}
		if p.Type == TypeServer {
			p.FedLearnPort = orDefault(p.FedLearnPort, DefaultFedLearnPort)
			p.AdminPort = orDefault(p.AdminPort, p.FedLearnPort) // NVFlare's default
		}
		if p.Type == TypeRelay {
			p.Port = orDefault(p.Port, DefaultRelayPort)
		}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("project.yml participants[%d] (%s): %w", i, rp.Name, err)
		}
		if err := p.ValidateCross(); err != nil {
			return nil, fmt.Errorf("project.yml participants[%d] (%s): %w", i, rp.Name, err)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("project.yml participants[%d]: name %q is used twice; names must be unique", i, p.Name)
		}
		seen[p.Name] = true
		if p.Type == TypeRelay {
			relays[p.Name] = true
		}
		f.Participants = append(f.Participants, p)
	}
	servers := 0
	for _, p := range f.Participants {
		if p.Type == TypeServer {
			servers++
		}
		if p.ConnectTo != "" && !relays[p.ConnectTo] {
			return nil, fmt.Errorf("project.yml participant %q: connect_to %q is not a relay of this project", p.Name, p.ConnectTo)
		}
	}
	if servers != 1 {
		return nil, fmt.Errorf("project.yml has %d servers: a project needs exactly one", servers)
	}
	return f, nil
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
