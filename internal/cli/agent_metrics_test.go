package cli

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAgentMetrics: with --metrics-listen the daemon serves Prometheus
// metrics that count its ticks and actions and time its PVE requests and
// journal fsyncs; without it nothing listens.
func TestAgentMetrics(t *testing.T) {
	f := newAgentFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, f.args("--interval", "5ms", "--desired", f.desired(t, agentDoc), "--metrics-listen", addr), io.Discard, io.Discard)
	}()
	want := []string{
		`steward_agent_ticks_total{outcome="ok"}`,
		`steward_agent_actions_total{op="config",outcome="ok"} 1`,
		`steward_agent_actions_total{op="start",outcome="ok"} 1`,
		`steward_agent_pve_request_duration_seconds_count{code="200",method="GET",route="/nodes/{node}/qemu"}`,
		`steward_agent_pve_request_duration_seconds_count{code="200",method="POST",route="/nodes/{node}/qemu/{vmid}/status/start"} 1`,
		`steward_agent_journal_fsync_duration_seconds_count`,
		`steward_agent_pending_signatures 0`,
	}
	var body string
	deadline := time.After(time.Minute)
	for {
		body = scrape(t, "http://"+addr+"/metrics")
		missing := ""
		for _, w := range want {
			if !strings.Contains(body, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("agent returned early: %v", err)
		case <-deadline:
			t.Fatalf("metrics never showed %s:\n%s", missing, body)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if strings.Contains(body, f.srv.Token[strings.IndexByte(f.srv.Token, '=')+1:]) {
		t.Error("the PVE token secret appears in the metrics")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("agent returned %v after cancellation; want nil", err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("the metrics address still accepts connections after the agent stopped")
	}

	if _, _, err := runCLI(t, f.args("--once", "--metrics-listen", addr)...); ExitCode(err) != ExitUsage {
		t.Errorf("--once with --metrics-listen: exit %d; want %d", ExitCode(err), ExitUsage)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
