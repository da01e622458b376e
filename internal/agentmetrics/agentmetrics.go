// Package agentmetrics is the agent's Prometheus metrics (steward agent
// --metrics-listen): ticks by outcome, actions by op and outcome, PVE
// request latency by route, journal fsync latency and hub call failures,
// on a registry of its own (no global state). Its Observe methods are the
// hooks the agent's parts call: engine reports (agent.Config.OnTick), PVE
// requests (pve.Options.Observe), journal fsyncs
// (agent.Config.JournalSync) and hub failures (agent.HubOptions.OnError);
// those packages stay free of Prometheus. All methods are safe for
// concurrent use.
package agentmetrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/steward-pve/steward/internal/engine"
)

// Metrics holds the agent's collectors. Build it with New.
type Metrics struct {
	reg       *prometheus.Registry
	ticks     *prometheus.CounterVec   // outcome: ok, error
	actions   *prometheus.CounterVec   // op, outcome: ok, failed, skipped
	pending   prometheus.Gauge         // actions waiting for signatures after the last tick
	pve       *prometheus.HistogramVec // method, route, code
	fsync     prometheus.Histogram
	hubErrors *prometheus.CounterVec // call
}

// New returns Metrics registered on a fresh registry, with the Go runtime
// and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		ticks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "steward_agent_ticks_total", Help: "Reconcile ticks by outcome (ok, or error when the tick itself failed).",
		}, []string{"outcome"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "steward_agent_actions_total", Help: "Actions the ticks submitted, by op and outcome (ok, failed, skipped).",
		}, []string{"op", "outcome"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "steward_agent_pending_signatures", Help: "Destructive actions waiting for operator signatures after the last tick.",
		}),
		pve: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "steward_agent_pve_request_duration_seconds", Help: "PVE API request latency by method, route template and HTTP status (0: no response).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}, []string{"method", "route", "code"}),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "steward_agent_journal_fsync_duration_seconds", Help: "Journal fsync latency (every mutation waits for one before it starts).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
		}),
		hubErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "steward_agent_hub_errors_total", Help: "Failed calls to the hub by call (desired: the long poll; report: reports and heartbeats).",
		}, []string{"call"}),
	}
	m.reg.MustRegister(m.ticks, m.actions, m.pending, m.pve, m.fsync, m.hubErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Both tick outcomes exist from the start, so a rate over them is
	// defined before the first failure.
	m.ticks.WithLabelValues("ok")
	m.ticks.WithLabelValues("error")
	return m
}

// ObserveTick counts a tick and its actions: the signature of
// agent.Config.OnTick (rep is the zero Report when err is not nil).
func (m *Metrics) ObserveTick(rep engine.Report, err error) {
	if err != nil {
		m.ticks.WithLabelValues("error").Inc()
		return
	}
	m.ticks.WithLabelValues("ok").Inc()
	for _, r := range rep.Results {
		outcome := "ok"
		switch {
		case r.Skip != engine.NotSkipped:
			outcome = "skipped"
		case r.Err != nil:
			outcome = "failed"
		}
		m.actions.WithLabelValues(string(r.Action.Op), outcome).Inc()
	}
	m.pending.Set(float64(len(rep.Pending)))
}

// ObservePVE records one PVE request: the signature of pve.Options.Observe.
func (m *Metrics) ObservePVE(method, route string, status int, d time.Duration) {
	m.pve.WithLabelValues(method, route, strconv.Itoa(status)).Observe(d.Seconds())
}

// ObserveFsync records one journal fsync: agent.Config.JournalSync.
func (m *Metrics) ObserveFsync(d time.Duration) { m.fsync.Observe(d.Seconds()) }

// ObserveHubError counts a failed hub call: agent.HubOptions.OnError.
func (m *Metrics) ObserveHubError(call string) { m.hubErrors.WithLabelValues(call).Inc() }

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Listen opens addr for Serve; an error names the address.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("agent: --metrics-listen %s: %w", addr, err)
	}
	return ln, nil
}

// Serve serves GET /metrics on ln until ctx ends, then shuts the server
// down (waiting up to 5 seconds for scrapes in flight). It returns nil
// after ctx ended and the error that stopped it otherwise.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if log != nil {
		srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
