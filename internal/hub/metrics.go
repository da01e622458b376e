package hub

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the hub's Prometheus metrics, on a registry of its own (no
// global state: two Servers in one process do not collide).
type metrics struct {
	reg         *prometheus.Registry
	reports     *prometheus.CounterVec // by kind: report, heartbeat
	requests    *prometheus.HistogramVec
	propagation prometheus.Histogram
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "steward_hub_reports_total", Help: "Reports and heartbeats received from agents.",
		}, []string{"kind"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "steward_hub_request_duration_seconds", Help: "HTTP request latency by route (long-polls included).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"route", "code"}),
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "steward_hub_desired_propagation_seconds",
			Help:    "From a desired PUT to an agent's fetch of that generation (this hub's PUTs only).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
	}
	held := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "steward_hub_long_polls_held", Help: "Desired-state long-polls being held now.",
	}, func() float64 { return float64(s.HeldPolls()) })
	m.reg.MustRegister(m.reports, m.requests, m.propagation, held,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// observeRequest records one request under its route pattern (never the
// raw path: host ids would make unbounded label values).
func (m *metrics) observeRequest(route string, code int, d time.Duration) {
	if route == "" {
		route = "unmatched"
	}
	m.requests.WithLabelValues(route, http.StatusText(code)).Observe(d.Seconds())
}
