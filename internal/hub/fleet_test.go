package hub

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/wire"
)

func TestPollInterval(t *testing.T) {
	tests := []struct {
		base   time.Duration
		hosts  int
		budget float64
		want   time.Duration
	}{
		{60 * time.Second, 0, 200, 60 * time.Second},
		{60 * time.Second, 10_000, 200, 60 * time.Second},  // 167/s: within budget
		{60 * time.Second, 12_000, 200, 60 * time.Second},  // exactly 200/s
		{60 * time.Second, 12_001, 200, 61 * time.Second},  // rounded up: stays under
		{60 * time.Second, 30_000, 200, 150 * time.Second}, // 200/s
		{60 * time.Second, 100_000, 200, 500 * time.Second},
		{60 * time.Second, 1_000_000, -1, 60 * time.Second}, // no budget: never stretched
		{1500 * time.Millisecond, 1, 200, 2 * time.Second},  // whole seconds
		{60 * time.Second, 1 << 30, 1, wire.MaxPollInterval},
		{48 * time.Hour, 1, 200, wire.MaxPollInterval},
	}
	for _, tt := range tests {
		got := PollInterval(tt.base, tt.hosts, tt.budget)
		if got != tt.want {
			t.Errorf("PollInterval(%v, %d, %v): got %v; want %v", tt.base, tt.hosts, tt.budget, got, tt.want)
		}
		if tt.budget > 0 && float64(tt.hosts)/got.Seconds() > tt.budget && got < wire.MaxPollInterval {
			t.Errorf("PollInterval(%v, %d, %v) = %v: the fleet reports %.1f/s, over the budget", tt.base, tt.hosts, tt.budget, got, float64(tt.hosts)/got.Seconds())
		}
	}
}

// The control envelope carries the stretched interval once the fleet
// outgrows the budget.
func TestControlCarriesStretchedInterval(t *testing.T) {
	e := newEnvOpt(t, Options{PollInterval: 30 * time.Second, ReportBudget: 0.1}) // 1 report per 10 s for the whole fleet
	toks := map[string]string{}
	for i := range 4 {
		h := fmt.Sprint("pve-", i)
		toks[h] = e.enroll(h)
	}
	body, _ := wire.EncodeReport(report("pve-0"))
	_, raw := e.do("POST", "/v1/agent/hosts/pve-0/report", toks["pve-0"], body)
	c, err := wire.DecodeControl(raw)
	if err != nil || c.PollInterval != 40*time.Second {
		t.Fatalf("control with 4 hosts at 0.1 reports/s: got %+v, %v; want 40s", c, err)
	}
}

// Heartbeats are held in memory, shown at once, and written by a flush.
func TestHeartbeatsBatched(t *testing.T) {
	e := newEnvOpt(t, Options{FlushInterval: time.Hour, SweepInterval: time.Hour})
	tok := e.enroll("pve-a")
	body, _ := wire.EncodeReport(report("pve-a"))
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body, nil)
	stored, _ := e.st.Host(t.Context(), "pve-a")
	time.Sleep(2 * time.Millisecond) // a later heartbeat than the report
	e.must(200, "POST", "/v1/agent/hosts/pve-a/heartbeat", tok, fmt.Appendf(nil, `{"hash":%q}`, ReportHash(body)), nil)
	var h HostJSON
	e.must(200, "GET", "/v1/hosts/pve-a", e.opTok, nil, &h)
	if h.LastSeen == nil || !h.LastSeen.After(stored.LastSeen) {
		t.Fatalf("last seen shown after a heartbeat: got %v; want after the report's %v", h.LastSeen, stored.LastSeen)
	}
	if now, _ := e.st.Host(t.Context(), "pve-a"); !now.LastSeen.Equal(stored.LastSeen) {
		t.Fatalf("the heartbeat was written at once (%v); want it held until the flush", now.LastSeen)
	}
	if err := e.hub.flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if now, _ := e.st.Host(t.Context(), "pve-a"); !now.LastSeen.Equal(*h.LastSeen) {
		t.Fatalf("stored last seen after a flush: got %v; want %v", now.LastSeen, *h.LastSeen)
	}
	// Close writes what is held.
	time.Sleep(2 * time.Millisecond)
	e.must(200, "POST", "/v1/agent/hosts/pve-a/heartbeat", tok, fmt.Appendf(nil, `{"hash":%q}`, ReportHash(body)), nil)
	e.hub.Close()
	if now, _ := e.st.Host(t.Context(), "pve-a"); !now.LastSeen.After(*h.LastSeen) {
		t.Fatalf("stored last seen after Close: got %v; want the second heartbeat's (after %v)", now.LastSeen, *h.LastSeen)
	}
}

// A host quiet for 2 intervals is reported silent once, and back when it
// reports; a host silent already when the hub starts gets no event.
func TestSilentHosts(t *testing.T) {
	e := newEnvOpt(t, Options{PollInterval: 10 * time.Second, FlushInterval: time.Hour, SweepInterval: time.Hour})
	tok := e.enroll("pve-a")
	e.enroll("pve-b") // never reports: not silent, never seen
	body, _ := wire.EncodeReport(report("pve-a"))
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body, nil)
	ctx := t.Context()
	now := time.Now()
	e.hub.sweep(ctx, now.Add(15*time.Second), false)
	if got := eventTypes(t, e, store.EventHostSilent); len(got) != 0 {
		t.Fatalf("silent events after 15s (interval 10s): %v; want none", got)
	}
	if n := e.hub.connected(now.Add(15 * time.Second)); n != 1 {
		t.Fatalf("connected after 15s: got %d; want 1", n)
	}
	e.hub.sweep(ctx, now.Add(25*time.Second), false)
	e.hub.sweep(ctx, now.Add(35*time.Second), false)
	if got := eventTypes(t, e, store.EventHostSilent); strings.Join(got, " ") != "pve-a" {
		t.Fatalf("silent events after 25s and 35s: %v; want pve-a once", got)
	}
	if n := e.hub.connected(now.Add(25 * time.Second)); n != 0 {
		t.Fatalf("connected after 25s: got %d; want 0", n)
	}
	e.must(200, "POST", "/v1/agent/hosts/pve-a/heartbeat", tok, fmt.Appendf(nil, `{"hash":%q}`, ReportHash(body)), nil)
	if got := eventTypes(t, e, store.EventHostReturned); strings.Join(got, " ") != "pve-a" {
		t.Fatalf("returned events: %v; want pve-a", got)
	}

	// A new hub over the same store, long after: pve-a is silent, but the
	// first sweep cannot tell since when and records nothing.
	h2 := New(e.st, Options{PollInterval: 10 * time.Second, FlushInterval: time.Hour, SweepInterval: time.Hour,
		Now: func() time.Time { return now.Add(time.Hour) }})
	defer h2.Close()
	h2.sweep(ctx, now.Add(time.Hour), true)
	h2.sweep(ctx, now.Add(time.Hour+time.Minute), false)
	if got := eventTypes(t, e, store.EventHostSilent); len(got) != 1 {
		t.Fatalf("silent events after a restart: %v; want still the one", got)
	}
}

// eventTypes returns the hosts of the stored events of type typ.
func eventTypes(t *testing.T, e *env, typ string) []string {
	t.Helper()
	es, err := e.st.Events(t.Context(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range es {
		if ev.Type == typ {
			out = append(out, ev.Host)
		}
	}
	return out
}
