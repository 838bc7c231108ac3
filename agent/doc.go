// Package agent is flare-agent, the on-host daemon that launches CVM kits
// with QEMU, re-attaches to them after restarts and verifies their SEV-SNP
// attestation (or, on hosts without SEV-SNP, runs them in an explicitly
// named simulated mode). The command is agent/cmd/flare-agent; the API
// types are in agent/api and the Go client in agent/client.
//
// This package holds the OpenAPI document the agent serves at
// /openapi.yaml.
package agent

import _ "embed"

// OpenAPI is agent/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
