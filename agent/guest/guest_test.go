package guest

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/guestproto"
	"github.com/flarekit/terraform-provider-flare/internal/attest"
)

func TestServe(t *testing.T) {
	host, guest := net.Pipe()
	r := &Responder{Source: &SimulatedSource{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "t"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Serve(ctx, guest, false)
	host.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(host)
	send := func(req any) guestproto.Response {
		t.Helper()
		b, _ := json.Marshal(req)
		if _, err := host.Write(append(b, '\n')); err != nil {
			t.Fatal(err)
		}
		line, err := br.ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		var resp guestproto.Response
		if err := json.Unmarshal(line, &resp); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := send(guestproto.Request{ID: "p", Op: guestproto.OpPing}); resp.ID != "p" || resp.Error != "" || !resp.Simulated {
		t.Fatalf("ping: %+v", resp)
	}
	nonce := make([]byte, 32)
	resp := send(guestproto.Request{ID: "a", Nonce: nonce, Simulated: &guestproto.SimulatedPlatform{Measurement: "", Policy: "0x30000"}})
	if resp.ID != "a" || resp.Error != "" {
		t.Fatalf("attest: %+v", resp)
	}
	ev, err := attest.UnmarshalEvidence(resp.Evidence)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := r.GuestKey()
	want := attest.ReportData(nonce, key)
	if string(ev.Report[0x50:0x90]) != string(want[:]) || !ev.Simulated || ev.Source != attest.SourceSimulated {
		t.Fatalf("evidence not bound to nonce and guest key, or not marked simulated: %+v", ev.Source)
	}
	if resp := send(guestproto.Request{ID: "s", Nonce: []byte("short")}); resp.Error == "" {
		t.Fatal("short nonce accepted")
	}
	if resp := send(guestproto.Request{ID: "x", Op: "reboot"}); resp.Error == "" {
		t.Fatal("unknown op accepted")
	}
	// A hardware responder ignores the host's simulated platform values.
	h := &Responder{Source: &HardwareSource{}, Log: r.Log}
	b, _ := json.Marshal(guestproto.Request{ID: "h", Nonce: nonce, Simulated: &guestproto.SimulatedPlatform{Measurement: "00"}})
	if resp := h.Handle(b); resp.Error == "" || resp.Simulated {
		t.Fatalf("hardware source without /dev/sev-guest: %+v", resp)
	}
}
