package flareinit

import (
	"encoding/json"
	"fmt"

	"github.com/google/go-sev-guest/client"

	"github.com/flarekit/terraform-provider-flare/agent/guest"
	"github.com/flarekit/terraform-provider-flare/agent/guestproto"
)

// simulatedQuoteProvider is the SIMULATED platform flare-agent describes in
// fw_cfg: the measurement it computed from the files it launched, as the
// AMD secure processor would, and the kit's host data and policy.
func simulatedQuoteProvider(raw []byte) (client.QuoteProvider, error) {
	var p guestproto.SimulatedPlatform
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("simulated platform (fw_cfg %s): %w", SimulatedPlatformFwCfg, err)
	}
	return guest.SimulatedQuoteProvider(p)
}
