package e2e_test

import (
	"context"
	"testing"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/client"
	"github.com/flarekit/terraform-provider-flare/agent/manager"
)

// BenchmarkAgentLaunch times a launch request until QMP answers, as the
// agent splits it: its own overhead (reading and hashing the kit, checking
// its signature, state on disk, QMP negotiation) beyond QEMU's own start.
// Each launched CVM is stopped outside the timer (the guest has not booted,
// so the stop is quit after a 1 s power-down wait).
func BenchmarkAgentLaunch(b *testing.B) {
	e := newEnv(b, "1s")
	admin := client.New(e.url, e.adminTLS)
	ctx := context.Background()
	var overhead, qemu, qmp, verify float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := admin.Launch(ctx, e.res.Dir)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if c.Launch == nil {
			b.Fatalf("launch of %s reports no timings", c.ID)
		}
		overhead += c.Launch.TotalMillis - c.Launch.QEMUMillis
		qemu += c.Launch.QEMUMillis
		qmp += c.Launch.QMPMillis
		verify += c.Launch.VerifyMillis
		if _, err := admin.Stop(ctx, c.ID); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(overhead/n, "agent-ms/launch")
	b.ReportMetric(qemu/n, "qemu-ms/launch")
	b.ReportMetric(verify/n, "kit-verify-ms/launch")
	b.ReportMetric(qmp/n, "qmp-ms/launch")
}

// BenchmarkAgentAttest times one attestation of a running guest: the
// caller's round trip, the agent's fetch (guest round trip over
// virtio-serial) and verify (go-sev-guest verify and validate), and the
// same verification again on the caller's side, as the provider does.
func BenchmarkAgentAttest(b *testing.B) {
	e := newEnv(b, "20s")
	admin := client.New(e.url, e.adminTLS)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := admin.Launch(ctx, e.res.Dir)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Stop(context.Background(), c.ID)
	if _, err := admin.WaitReady(ctx, c.ID); err != nil {
		b.Fatal(err)
	}
	// The first report after boot builds the simulated chain in the guest.
	if _, err := admin.Attest(ctx, c.ID, randBytes(32)); err != nil {
		b.Fatal(err)
	}
	exp := manager.Expected{Measurement: e.measurement, HostData: e.hostData, Policy: c.GuestPolicy, Simulated: true}
	var fetch, verify, callerVerify float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		nonce := randBytes(32)
		v, err := admin.Attest(ctx, c.ID, nonce)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		local, err := manager.AttestVerifier{}.Verify(v.Evidence, nonce, exp)
		callerVerify += float64(time.Since(t0).Microseconds()) / 1000
		if err != nil || !local.Verified || !v.Verified {
			b.Fatalf("attestation %d: agent verified %v, caller %v %v (%v)", i, v.Verified, local != nil && local.Verified, err, v.Reasons)
		}
		fetch += v.FetchMillis
		verify += v.VerifyMillis
	}
	n := float64(b.N)
	b.ReportMetric(fetch/n, "fetch-ms/op")
	b.ReportMetric(verify/n, "agent-verify-ms/op")
	b.ReportMetric(callerVerify/n, "caller-verify-ms/op")
}
