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
	pending     prometheus.Gauge
	store       *prometheus.HistogramVec // by store method
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
	m.pending = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "steward_hub_pending_signatures", Help: "Actions waiting for operator signatures across the fleet (refreshed every sweep).",
	})
	m.store = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "steward_hub_store_duration_seconds", Help: "Store call latency by method.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
	}, []string{"op"})
	held := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "steward_hub_long_polls_held", Help: "Desired-state long-polls being held now.",
	}, func() float64 { return float64(s.HeldPolls()) })
	eventsHeld := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "steward_hub_event_polls_held", Help: "Event long-polls (GET /v1/events) being held now.",
	}, func() float64 { return float64(s.HeldEventPolls()) })
	connected := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "steward_hub_connected_agents", Help: "Enrolled hosts that reported or sent a heartbeat within 2 poll intervals.",
	}, func() float64 { return float64(s.connected(s.now())) })
	hosts := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "steward_hub_enrolled_hosts", Help: "Enrolled, unrevoked hosts this hub knows of.",
	}, func() float64 { return float64(s.fleetSize()) })
	interval := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "steward_hub_poll_interval_seconds", Help: "The report interval the hub tells agents (stretched as the fleet grows).",
	}, func() float64 { return s.pollInterval().Seconds() })
	m.reg.MustRegister(m.reports, m.requests, m.propagation, held, eventsHeld, connected, hosts, interval, m.pending, m.store,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if s.alerts != nil {
		m.reg.MustRegister(s.alerts.Collectors()...)
	}
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
