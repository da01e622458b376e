package engine_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/sim"
)

// BenchmarkTick1000 runs one in-sync tick against a simulator holding 1,000
// guests of which 500 are managed, reporting PVE requests per tick (goal:
// the two lists plus one config read per managed guest) and the tick's
// wall time in units of the simulator's per-request latency.
// BenchmarkTickBaselineRequest measures one config read on the same setup,
// so the ratio tick/request is the tick's cost in sequential requests.
func BenchmarkTick1000(b *testing.B) {
	for _, latency := range []time.Duration{0, time.Millisecond} {
		b.Run(fmt.Sprintf("latency=%s", latency), func(b *testing.B) {
			h, want := tickBench(b, latency)
			h.tick(want) // converge first: measure the steady state
			start := h.requests.n.Load()
			b.ResetTimer()
			for range b.N {
				h.tick(want)
			}
			b.StopTimer()
			b.ReportMetric(float64(h.requests.n.Load()-start)/float64(b.N), "requests/tick")
			if latency > 0 {
				b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(latency), "latencies/tick")
			}
		})
	}
}

func BenchmarkTickBaselineRequest(b *testing.B) {
	h, _ := tickBench(b, 0)
	b.ResetTimer()
	for range b.N {
		if _, err := h.client.GuestConfig(b.Context(), "pve", guest.QEMU, 1000); err != nil {
			b.Fatal(err)
		}
	}
}

func tickBench(b *testing.B, latency time.Duration) (*harness, *desired.Host) {
	var guests []sim.GuestSpec
	var doc strings.Builder
	doc.WriteString("apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve:\n    guests:\n")
	for i := range 1000 {
		id := 1000 + i
		g := qemuGuest(id, true, nil)
		if i%2 == 1 {
			g = lxcGuest(id, true, nil)
		}
		guests = append(guests, g)
		if i%2 == 0 {
			fmt.Fprintf(&doc, "      %d: {state: running, config: {cores: 2}}\n", id)
		}
	}
	h := newHarness(b, sim.Options{Faults: sim.Faults{Latency: latency}}, guests...)
	return h, mustParse(b, doc.String())
}
