package manager

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flarekit/terraform-provider-flare/agent/api"
)

// Metrics are the agent's Prometheus collectors.
type Metrics struct {
	Launches      *prometheus.CounterVec   // mode, result
	LaunchSeconds *prometheus.HistogramVec // step: total, qemu, qmp, verify
	Restarts      prometheus.Counter
	Attestations  *prometheus.CounterVec   // mode, result (verified, rejected, error)
	AttestSeconds *prometheus.HistogramVec // step: fetch, verify
	Stops         *prometheus.CounterVec   // how: powerdown, quit, kill
}

// NewMetrics registers the collectors on reg, with a gauge of CVMs by
// state read from m at scrape time.
func NewMetrics(reg prometheus.Registerer, m *Manager) *Metrics {
	buckets := []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	x := &Metrics{
		Launches: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "flare_agent", Name: "launches_total",
			Help: "CVM launches by mode (snp, simulated) and result (ok, error)."}, []string{"mode", "result"}),
		LaunchSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "flare_agent", Name: "launch_seconds",
			Help: "Launch duration by step: verify (kit files), qemu (QEMU's own start until QMP listens), qmp (connect and query-status), total.", Buckets: buckets},
			[]string{"step"}),
		Restarts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "flare_agent", Name: "restarts_total",
			Help: "Relaunches after QEMU exited without a stop request (restart policy on-failure)."}),
		Attestations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "flare_agent", Name: "attestations_total",
			Help: "Attestation requests by mode and result (verified, rejected, error)."}, []string{"mode", "result"}),
		AttestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "flare_agent", Name: "attestation_seconds",
			Help: "Attestation duration by step: fetch (guest round trip), verify (signature and policy checks).", Buckets: buckets},
			[]string{"step"}),
		Stops: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "flare_agent", Name: "stops_total",
			Help: "Stops by how QEMU ended: powerdown (guest shut down), quit (QMP quit after stop_timeout), kill."}, []string{"how"}),
	}
	reg.MustRegister(x.Launches, x.LaunchSeconds, x.Restarts, x.Attestations, x.AttestSeconds, x.Stops)
	if m != nil {
		reg.MustRegister(&stateCollector{m: m, desc: prometheus.NewDesc("flare_agent_cvms", "CVMs known to the agent, by state and mode.", []string{"state", "mode"}, nil)})
	}
	return x
}

type stateCollector struct {
	m    *Manager
	desc *prometheus.Desc
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[[2]string]int{}
	for _, s := range []string{api.StateStarting, api.StateRunning, api.StateStopping, api.StateStopped, api.StateCrashed, api.StateFailed} {
		for _, mode := range []string{api.ModeSNP, api.ModeSimulated} {
			counts[[2]string{s, mode}] = 0
		}
	}
	for _, v := range c.m.List() {
		counts[[2]string{v.State, v.Mode}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}
