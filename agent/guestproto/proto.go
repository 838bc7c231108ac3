// Package guestproto is the line protocol between flare-agent on the host
// and the attestation responder in the guest (`flare-agent guest`), spoken
// over the virtio-serial port org.flare.attest: one JSON object per line
// each way. The channel is untrusted; integrity comes from the report
// signature and freshness from the nonce in REPORT_DATA.
package guestproto

// Ops.
const (
	OpAttest = "attest" // the default when Op is empty
	OpPing   = "ping"
)

// MaxLine bounds one line (evidence with a certificate chain is a few KiB).
const MaxLine = 1 << 20

// Request is one host → guest line.
type Request struct {
	// ID is echoed in the response, so a late answer to an abandoned
	// request is recognised and dropped.
	ID    string `json:"id"`
	Op    string `json:"op,omitempty"`
	Nonce []byte `json:"nonce,omitempty"` // base64 in JSON
	// Simulated is set only for CVMs the agent launched in simulated mode:
	// the values the simulated platform (go-sev-guest's test device) puts
	// into its report, standing in for what the AMD secure processor
	// would measure and QEMU would pass as host-data. A responder on real
	// SEV-SNP hardware ignores it.
	Simulated *SimulatedPlatform `json:"simulated,omitempty"`
}

// SimulatedPlatform are report fields of the simulated platform (hex, as
// in launch.json).
type SimulatedPlatform struct {
	Measurement string `json:"measurement"`
	HostData    string `json:"host_data,omitempty"`
	Policy      string `json:"policy"`
}

// Response is one guest → host line.
type Response struct {
	ID string `json:"id"`
	// Evidence is internal/attest's evidence, serialized (base64 in JSON).
	Evidence []byte `json:"evidence,omitempty"`
	Error    string `json:"error,omitempty"`
	// Simulated: the responder runs with --simulated (test device, fake
	// AMD chain).
	Simulated bool   `json:"simulated"`
	Version   string `json:"version,omitempty"`
}
