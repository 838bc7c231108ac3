package kbs

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
)

// metrics are hand-written Prometheus counters (text format 0.0.4).
type metrics struct {
	mu       sync.Mutex
	counters map[string]map[string]uint64 // name → labels → value
	help     map[string]string
}

func newMetrics() *metrics {
	m := &metrics{counters: map[string]map[string]uint64{}, help: map[string]string{
		"flare_kbs_requests_total":     "HTTP requests by endpoint and status code.",
		"flare_kbs_attestations_total": "Attestations by result (ok, refused) and mode (sev-snp, simulated).",
		"flare_kbs_releases_total":     "Resources released by mode (sev-snp, simulated).",
		"flare_kbs_denials_total":      "Resource requests refused, by reason.",
	}}
	for name := range m.help {
		m.counters[name] = map[string]uint64{}
	}
	return m
}

func labels(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", kv[i], kv[i+1])
	}
	return b.String()
}

func (m *metrics) inc(name string, kv ...string) {
	m.mu.Lock()
	m.counters[name][labels(kv...)]++
	m.mu.Unlock()
}

func (m *metrics) get(name string, kv ...string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counters[name][labels(kv...)]
}

func (m *metrics) write(w io.Writer, sessions int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.counters))
	for n := range m.counters {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", n, m.help[n], n)
		ls := make([]string, 0, len(m.counters[n]))
		for l := range m.counters[n] {
			ls = append(ls, l)
		}
		sort.Strings(ls)
		for _, l := range ls {
			fmt.Fprintf(w, "%s{%s} %d\n", n, l, m.counters[n][l])
		}
	}
	fmt.Fprintf(w, "# HELP flare_kbs_sessions Open protocol sessions.\n# TYPE flare_kbs_sessions gauge\nflare_kbs_sessions %d\n", sessions)
}
