package hub

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/alert"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/wire"
)

// TestAlertClocksSurviveRestart: the clocks of host.silent and
// pending.waiting live in the store. A hub restarted between the start
// of a condition and its threshold raises the alert at the threshold
// counted from the start (not from its own start), and hubs restarted
// after it was raised do not raise it again, even past the rules' dedup
// window: each alert is sent once.
func TestAlertClocksSurviveRestart(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	set := func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	t0 := now

	rcv := &hookReceiver{note: make(chan struct{}, 1)}
	hook := httptest.NewServer(rcv)
	defer hook.Close()
	// A dedup window far shorter than the test's span: only the stored
	// state keeps the alerts from repeating.
	cfg, err := alert.Parse([]byte(`
dedup: 1m
silent_intervals: 3
pending_after: 30m
sinks:
  ops: {type: webhook, url: "` + hook.URL + `", secret: {value: k3y}}
rules:
  - events: [host.silent, pending.waiting]
    sinks: [ops]
`))
	if err != nil {
		t.Fatal(err)
	}
	sinks, err := alert.Build(cfg, alert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "hub.db")

	// start runs a hub (store, dispatcher, server) on the shared database
	// and clock; stop shuts it down as steward hub does.
	start := func() (*env, func()) {
		st, err := sqlite.Open(t.Context(), path, sqlite.Options{Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		d := alert.NewDispatcher(cfg, sinks, st, alert.DispatcherOptions{Poll: 10 * time.Millisecond, Now: clock})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); d.Run(ctx) }()
		logBuf := &syncBuffer{}
		h := New(st, Options{PollInterval: 30 * time.Second, Alerts: d, Now: clock, Logger: slog.New(slog.NewTextHandler(logBuf, nil))})
		srv := httptest.NewServer(h.Handler())
		e := &env{t: t, hub: h, url: srv.URL, log: logBuf, st: st}
		return e, func() {
			// Let the dispatcher acknowledge what the receiver has: a hub
			// stopped mid-send sends again after its restart (at least
			// once), which is not what this test is about.
			for {
				n, err := st.OutboxDepth(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			h.Shutdown()
			srv.Close()
			h.Close()
			cancel()
			<-done
			st.Close()
		}
	}

	e, stop := start()
	e.opTok = NewToken("stwo_")
	if err := e.st.CreateOperator(t.Context(), "alice", store.HashToken(e.opTok)); err != nil {
		t.Fatal(err)
	}
	opTok := e.opTok
	tok := e.enroll("pve-a")
	rep := report("pve-a") // with a destroy waiting for signatures
	body, _ := wire.EncodeReport(rep)
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body, nil)
	stop()

	// Restarted 20 minutes on: past 3 poll intervals (90s) of silence
	// since the report, so the silence alert is due at this hub's first
	// sweep; the pending one is not (20m < 30m).
	set(t0.Add(20 * time.Minute))
	e, stop = start()
	e.opTok = opTok
	e.hub.sweep(t.Context(), clock(), false)
	silence := "host.silent/pve-a/since " + t0.Format(time.RFC3339)
	rcv.waitKeys(t, silence)
	stop()

	// Restarted again, past the pending threshold counted from the
	// report (t0+30m), but only 11 minutes after this hub's start: a
	// clock started by the hub would not be due yet.
	set(t0.Add(25 * time.Minute))
	e, stop = start()
	e.hub.sweep(t.Context(), clock(), false)
	set(t0.Add(31 * time.Minute))
	e.hub.sweep(t.Context(), clock(), false)
	pending := "pending.waiting/pve-a/101/destroy/" + payloadTag("payload\n")
	rcv.waitKeys(t, silence, pending)
	stop()

	// Another restart well past both and past the dedup window: the same
	// silence and the same pending action raise nothing new.
	set(t0.Add(2 * time.Hour))
	e, stop = start()
	e.hub.sweep(t.Context(), clock(), false)
	set(t0.Add(3 * time.Hour))
	e.hub.sweep(t.Context(), clock(), false)
	// A test message, sent after those sweeps' enqueues, is delivered
	// last: once it is in, the receiver has everything they enqueued.
	e.opTok = opTok
	e.must(200, "POST", "/v1/notifications/test", opTok, []byte(`{"sink":"ops"}`), nil)
	rcv.waitKeys(t, silence, pending, "test//alice")

	// The host reports again, then falls silent anew: a new silence, a
	// new alert.
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body, nil)
	t1 := clock()
	set(t1.Add(5 * time.Minute))
	e.hub.sweep(t.Context(), clock(), false)
	rcv.waitKeys(t, silence, pending, "test//alice", "host.silent/pve-a/since "+t1.Format(time.RFC3339))
	stop()
}
