package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte("listen: 127.0.0.1:8443\nstate_dir: st\nagent_kit_dir: /srv/site-1-agent\nstop_timeout: 5s\n"), "/etc/flare-agent")
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/etc/flare-agent/st" || c.AgentKitDir != "/srv/site-1-agent" || c.Mode != "auto" || c.Accel != "auto" ||
		c.Restart.Policy != RestartOnFailure || c.Restart.MaxRestarts != DefaultMaxRestarts || c.StopTimeout.D() != 5*time.Second ||
		c.AttestTimeout.D() != DefaultAttestTimeout || c.Network != "user" || c.QEMU != "qemu-system-x86_64" {
		t.Fatalf("%+v", c)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"listen: x\nstate_dir: s\nagent_kit_dir: k\n", "listen"},
		{"listen: 127.0.0.1:1\nagent_kit_dir: k\n", "state_dir"},
		{"listen: 127.0.0.1:1\nstate_dir: s\nagent_kit_dir: k\nmode: sev\n", "mode"},
		{"listen: 127.0.0.1:1\nstate_dir: s\nagent_kit_dir: k\nrestart: {policy: always}\n", "restart.policy"},
		{"listen: 127.0.0.1:1\nstate_dir: s\nagent_kit_dir: k\nstatus_listen: 0.0.0.0:80\n", "loopback"},
		{"listen: 127.0.0.1:1\nstate_dir: s\nagent_kit_dir: k\nstop_timeout: soon\n", "duration"},
		{"listen: 127.0.0.1:1\nstate_dir: s\nagent_kit_dir: k\nlisten_port: 3\n", "listen_port"},
		{"listen: 127.0.0.1:1\nstate_dir: s\nagent_kit_dir: k\naccel: hvf\n", "accel"},
		{"listen: 127.0.0.1:1\nstate_dir: s\nagent_kit_dir: k\nminimum_tcb: recent\n", "minimum_tcb"},
		{"listen: 127.0.0.1:1\nstate_dir: s\nagent_kit_dir: k\nsimulated_firmware: /nonexistent/OVMF.fd\n", "simulated_firmware \"/nonexistent/OVMF.fd\" is not a readable file"},
		{"listen: 127.0.0.1:1\nstate_dir: s\nagent_kit_dir: k\nmode: snp\nsimulated_firmware: /etc/hostname\n", "mode is snp"},
		{"listen: 127.0.0.1:1\nstate_dir: s\n", "agent_kit_dir is missing"},
		// A participant's startup kit is refused, with what to do instead.
		{"listen: 127.0.0.1:1\nstate_dir: s\nkit_dir: /srv/site-1\n", "flare_agent_identity"},
		{"listen: 127.0.0.1:1\nstate_dir: s\nkit_dir: /srv/site-1\nagent_kit_dir: k\n", "kit_dir /srv/site-1: flare-agent no longer uses a participant's startup kit"},
	} {
		_, err := Parse([]byte(tc.yaml), "/")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error about %s", tc.yaml, err, tc.want)
		}
	}
}
