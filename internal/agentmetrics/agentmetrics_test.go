package agentmetrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/gate"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestObserve(t *testing.T) {
	m := New()
	if body := scrape(t, m); !strings.Contains(body, `steward_agent_ticks_total{outcome="error"} 0`) {
		t.Errorf("tick outcomes not present from the start:\n%s", body)
	}
	m.ObserveTick(engine.Report{
		Results: []engine.Result{
			{Action: action.Action{Op: action.SetConfig}},
			{Action: action.Action{Op: action.SetConfig}, Err: errors.New("boom")},
			{Action: action.Action{Op: action.Start}, Skip: engine.Skip(1), Skipped: "frozen"},
		},
		Pending: []gate.Decision{{}, {}},
	}, nil)
	m.ObserveTick(engine.Report{}, errors.New("pve unreachable"))
	m.ObservePVE("GET", "/nodes/{node}/qemu", 200, 3*time.Millisecond)
	m.ObservePVE("POST", "/nodes/{node}/qemu/{vmid}/status/start", 0, time.Second)
	m.ObserveFsync(time.Millisecond)
	m.ObserveHubError("desired")
	m.ObserveHubError("desired")
	body := scrape(t, m)
	for _, want := range []string{
		`steward_agent_ticks_total{outcome="ok"} 1`,
		`steward_agent_ticks_total{outcome="error"} 1`,
		`steward_agent_actions_total{op="config",outcome="ok"} 1`,
		`steward_agent_actions_total{op="config",outcome="failed"} 1`,
		`steward_agent_actions_total{op="start",outcome="skipped"} 1`,
		`steward_agent_pending_signatures 2`,
		`steward_agent_pve_request_duration_seconds_count{code="200",method="GET",route="/nodes/{node}/qemu"} 1`,
		`steward_agent_pve_request_duration_seconds_count{code="0",method="POST",route="/nodes/{node}/qemu/{vmid}/status/start"} 1`,
		`steward_agent_journal_fsync_duration_seconds_count 1`,
		`steward_agent_hub_errors_total{call="desired"} 2`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Two Metrics in one process do not collide (no global registry).
	if other := scrape(t, New()); strings.Contains(other, `steward_agent_ticks_total{outcome="ok"} 1`) {
		t.Error("a new Metrics shares counts with another")
	}
}
