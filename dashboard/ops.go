package dashboard

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// LoadTLS returns the TLS configuration when folder holds web.crt and
// web.key (or cert/web.crt and cert/web.key, NVFlare's layout), else nil:
// the Dashboard then speaks plain HTTP, as NVFlare's does.
func LoadTLS(folder string) (*tls.Config, error) {
	for _, dir := range []string{folder, filepath.Join(folder, "cert")} {
		crt, key := filepath.Join(dir, "web.crt"), filepath.Join(dir, "web.key")
		_, errC := os.Stat(crt)
		_, errK := os.Stat(key)
		if errors.Is(errC, os.ErrNotExist) && errors.Is(errK, os.ErrNotExist) {
			continue
		}
		if errC != nil || errK != nil {
			return nil, fmt.Errorf("%s: web.crt and web.key must both exist", dir)
		}
		pair, err := tls.LoadX509KeyPair(crt, key)
		if err != nil {
			return nil, err
		}
		return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
	}
	return nil, nil
}

// loginLimiter refuses logins for an email after maxFailures failed
// attempts within window (NVFlare has no limit).
type loginLimiter struct {
	mu       sync.Mutex
	failures map[string][]time.Time
}

const (
	maxLoginFailures = 5
	loginWindow      = 15 * time.Minute
	maxTrackedEmails = 100_000
)

func (l *loginLimiter) recent(email string, now time.Time) []time.Time {
	var keep []time.Time
	for _, t := range l.failures[email] {
		if now.Sub(t) < loginWindow {
			keep = append(keep, t)
		}
	}
	if keep == nil {
		delete(l.failures, email)
	} else {
		l.failures[email] = keep
	}
	return keep
}

// blocked reports whether email may not try now.
func (l *loginLimiter) blocked(email string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failures == nil {
		return false
	}
	return len(l.recent(email, now)) >= maxLoginFailures
}

func (l *loginLimiter) fail(email string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failures == nil {
		l.failures = map[string][]time.Time{}
	}
	if len(l.failures) >= maxTrackedEmails {
		// Many distinct emails failing: drop what left the window first,
		// then, if still full, forget everything rather than grow.
		for e := range l.failures {
			l.recent(e, now)
		}
		if len(l.failures) >= maxTrackedEmails {
			l.failures = map[string][]time.Time{}
		}
	}
	l.failures[email] = append(l.recent(email, now), now)
}

func (l *loginLimiter) reset(email string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.failures, email)
}

// metrics are the Dashboard's Prometheus metrics, on their own registry.
type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// poolStatsFunc gives the key pool's size (keys ready), hits and misses.
type poolStatsFunc func() (ready int, hits, misses uint64)

func newMetrics(pool poolStatsFunc) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flare_dashboard_requests_total", Help: "HTTP requests by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "flare_dashboard_request_duration_seconds", Help: "HTTP request latency by route pattern.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
	}
	m.registry.MustRegister(m.requests, m.duration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "flare_dashboard_key_pool_keys", Help: "Pre-generated participant keys ready for kit downloads (--key-pool).",
		}, func() float64 { n, _, _ := pool(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "flare_dashboard_key_pool_hits_total", Help: "Kit downloads whose key came from the key pool.",
		}, func() float64 { _, h, _ := pool(); return float64(h) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "flare_dashboard_key_pool_misses_total", Help: "Kit downloads that generated their key inline (pool empty or disabled).",
		}, func() float64 { _, _, m := pool(); return float64(m) }))
	return m
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// instrument counts and times each request under its route pattern.
func (m *metrics) instrument(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: 200}
		mux.ServeHTTP(sw, r)
		_, route := mux.Handler(r)
		if route == "" {
			route = "unmatched"
		}
		m.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// ClientIP is the peer address of r (for logs).
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
