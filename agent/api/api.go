// Package api holds the JSON types of flare-agent's HTTP API, shared by the
// server (agent/server) and the Go client (agent/client). agent/openapi.yaml
// describes the same shapes.
//
// Binary values (nonces, evidence) are []byte and travel as standard base64
// in JSON; report fields (measurement, host data, report data, chip id) are
// lower-case hex strings, as in launch.json.
package api

import "time"

// Launch modes. ModeSimulated runs the guest without any SEV object and its
// attestation reports come from go-sev-guest's test device signed by a fake
// AMD chain: they prove nothing about the hardware. Every verdict of a
// simulated CVM has Simulated set.
const (
	ModeAuto      = "auto"
	ModeSNP       = "snp"
	ModeSimulated = "simulated"
)

// CVM states.
const (
	// StateStarting: QEMU was started; QMP is not answering yet.
	StateStarting = "starting"
	// StateRunning: QMP answers and the guest runs.
	StateRunning = "running"
	// StateStopping: a stop was requested (system_powerdown sent).
	StateStopping = "stopping"
	// StateStopped: QEMU exited after a stop request.
	StateStopped = "stopped"
	// StateCrashed: QEMU exited without a stop request and the restart
	// policy allows no (further) restart.
	StateCrashed = "crashed"
	// StateFailed: QEMU could not be started.
	StateFailed = "failed"
)

// Active reports whether a CVM in state s has (or is about to have) a
// QEMU process.
func Active(s string) bool {
	return s == StateStarting || s == StateRunning || s == StateStopping
}

// Health is GET /healthz.
type Health struct {
	Status  string `json:"status"` // "ok"
	Version string `json:"version"`
	// Site is the CN of the agent's certificate, Org its organization.
	Site string `json:"site"`
	Org  string `json:"org"`
	// Mode is the configured mode (auto|snp|simulated); EffectiveMode is
	// what a launch uses now (snp or simulated).
	Mode          string     `json:"mode"`
	EffectiveMode string     `json:"effective_mode"`
	SNP           SNPSupport `json:"snp"`
	QEMU          string     `json:"qemu"`         // binary path
	QEMUVersion   string     `json:"qemu_version"` // e.g. "7.2.22"
	KVM           bool       `json:"kvm"`          // /dev/kvm usable
	CVMs          int        `json:"cvms"`         // CVMs with a QEMU process
	Time          time.Time  `json:"time"`
}

// SNPSupport says whether this host can launch SEV-SNP guests, and if not,
// exactly why.
type SNPSupport struct {
	Available bool `json:"available"`
	// Reasons lists every missing requirement, e.g. "QEMU 7.2.22 has no
	// sev-snp-guest object: SEV-SNP needs QEMU 9.1 or newer".
	Reasons []string `json:"reasons,omitempty"`
	// CBitPos is the host's C-bit position (CPUID 0x8000001F EBX[5:0]),
	// or the fallback 51 when CPUID does not report SEV.
	CBitPos int `json:"cbitpos"`
}

// CVM is the status of one launched kit.
type CVM struct {
	ID string `json:"id"`
	// KitID is launch.json's id; KitDir the kit folder QEMU runs from
	// (for an upload, the agent's unpacked copy).
	KitID       string `json:"kit_id"`
	KitDir      string `json:"kit_dir"`
	Participant string `json:"participant"`
	Role        string `json:"role"`

	Mode  string `json:"mode"`  // snp or simulated
	Accel string `json:"accel"` // kvm or tcg
	State string `json:"state"`
	// QEMUStatus is QMP query-status's status (running, paused, ...),
	// as last seen.
	QEMUStatus string `json:"qemu_status,omitempty"`
	PID        int    `json:"pid,omitempty"`
	// GuestReady: the guest opened the attestation port (QMP
	// VSERPORT_CHANGE), so the responder is up.
	GuestReady bool `json:"guest_ready"`

	VCPUs               int    `json:"vcpus"`
	MemoryMiB           int    `json:"memory_mib"`
	GuestPolicy         string `json:"guest_policy"`
	HostData            string `json:"host_data,omitempty"`
	ExpectedMeasurement string `json:"expected_measurement,omitempty"`

	Restarts    int        `json:"restarts"`
	CreatedAt   time.Time  `json:"created_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	StoppedAt   *time.Time `json:"stopped_at,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LaunchedBy  string     `json:"launched_by,omitempty"` // CN of the launching cert
	LastVerdict *Summary   `json:"last_verdict,omitempty"`
	// Launch is how long the last (re)launch took, by step.
	Launch *LaunchTimings `json:"launch,omitempty"`
}

// LaunchTimings splits a launch into steps (milliseconds). QEMUMillis is
// QEMU's own start (exec until it daemonized with QMP listening); the
// agent's overhead is TotalMillis - QEMUMillis.
type LaunchTimings struct {
	VerifyMillis float64 `json:"verify_ms"` // reading launch.json, hashing kit files
	QEMUMillis   float64 `json:"qemu_ms"`
	QMPMillis    float64 `json:"qmp_ms"` // QMP connect, negotiation, query-status
	TotalMillis  float64 `json:"total_ms"`
}

// Summary is the gist of the last attestation of a CVM.
type Summary struct {
	Verified  bool      `json:"verified"`
	Simulated bool      `json:"simulated"`
	At        time.Time `json:"at"`
}

// CVMList is GET /v1/cvms.
type CVMList struct {
	CVMs []CVM `json:"cvms"`
}

// LaunchRequest is POST /v1/cvms.
type LaunchRequest struct {
	// KitDir is the host path of a CVM kit folder (with launch.json).
	KitDir string `json:"kit_dir"`
}

// AttestRequest is POST /v1/cvms/{id}/attestation.
type AttestRequest struct {
	// Nonce is the caller's fresh random value, 16 to 1024 bytes (base64
	// in JSON; 32 random bytes is the norm). REPORT_DATA must equal
	// SHA-512(nonce ‖ guest key fingerprint).
	Nonce []byte `json:"nonce"`
}

// Verdict is the agent's check of one attestation report.
type Verdict struct {
	CVMID string `json:"cvm_id"`
	// Verified: the signature chains to a trusted root and every
	// expected value matched. Reasons lists what failed otherwise.
	Verified bool     `json:"verified"`
	Reasons  []string `json:"reasons,omitempty"`
	// Simulated: the report came from the simulated platform (test
	// device, fake AMD chain trusted only for CVMs launched in simulated
	// mode). It proves nothing about the hardware.
	Simulated bool   `json:"simulated"`
	Mode      string `json:"mode"`

	Nonce               []byte `json:"nonce"`
	Measurement         string `json:"measurement"`          // hex, 48 bytes
	ExpectedMeasurement string `json:"expected_measurement"` // from launch.json
	Policy              string `json:"policy"`               // 0x-hex u64
	HostData            string `json:"host_data"`            // hex, 32 bytes
	ReportData          string `json:"report_data"`          // hex, 64 bytes
	ChipID              string `json:"chip_id"`              // hex, 64 bytes
	TCB                 TCB    `json:"tcb"`
	ReportVersion       uint32 `json:"report_version"`
	VMPL                uint32 `json:"vmpl"`
	GuestSVN            uint32 `json:"guest_svn"`
	PolicyDebug         bool   `json:"policy_debug"`
	ProductLine         string `json:"product_line,omitempty"` // Milan, Genoa, Turin
	Firmware            string `json:"firmware,omitempty"`     // current major.minor.build
	SigningKey          string `json:"signing_key,omitempty"`  // VCEK or VLEK
	// VCEKSource is where the endorsement certificate came from:
	// cert_table (the guest's extended report) or cache.
	VCEKSource string `json:"vcek_source,omitempty"`
	// GuestKey is the hex fingerprint (SHA-256 of the PKIX public key) of
	// the guest's per-boot key, bound into REPORT_DATA with the nonce.
	GuestKey string `json:"guest_key,omitempty"`

	// Evidence is the raw evidence the guest sent (base64 in JSON).
	Evidence []byte `json:"evidence"`

	At time.Time `json:"at"`
	// Latency is how long fetching (guest round trip) and verifying took.
	FetchMillis  float64 `json:"fetch_ms"`
	VerifyMillis float64 `json:"verify_ms"`
}

// TCB holds the report's TCB versions as 0x-hex u64 and the reported TCB's
// parts.
type TCB struct {
	Current   string `json:"current"`
	Reported  string `json:"reported"`
	Committed string `json:"committed"`
	Launch    string `json:"launch"`
	BlSPL     uint8  `json:"bl_spl"`
	TeeSPL    uint8  `json:"tee_spl"`
	SnpSPL    uint8  `json:"snp_spl"`
	UcodeSPL  uint8  `json:"ucode_spl"`
}

// Logs is GET /v1/cvms/{id}/logs.
type Logs struct {
	ID string `json:"id"`
	// Lines are the last lines of the serial console, oldest first.
	Lines []string `json:"lines"`
	// Truncated: the log had more lines than were returned.
	Truncated bool `json:"truncated"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}
