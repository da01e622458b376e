package agent

import (
	"context"
	"log/slog"
	"maps"
	"slices"

	"github.com/steward-pve/steward/internal/engine"
)

// SummaryAttrs are a tick's summary as log attributes: the guests
// managed, in sync, changed, pending signature and failed, then any other
// phase with guests in it (converging, drift_observed, ...) and the signed
// jobs that ran, failed or were rejected.
func SummaryAttrs(s engine.Summary) []slog.Attr {
	attrs := []slog.Attr{
		slog.Int("managed", s.Managed),
		slog.Int("in_sync", s.Phases[engine.PhaseInSync]),
		slog.Int("changed", s.Changed),
		slog.Int("pending_signature", s.PendingSignature),
		slog.Int("failed", s.Failed),
	}
	for _, ph := range slices.Sorted(maps.Keys(s.Phases)) {
		switch ph {
		case engine.PhaseInSync, engine.PhasePendingSignature, engine.PhaseError:
			continue
		}
		attrs = append(attrs, slog.Int(ph, s.Phases[ph]))
	}
	for _, kv := range []struct {
		k string
		n int
	}{{"jobs_ran", s.JobsRan}, {"jobs_failed", s.JobsFailed}, {"jobs_rejected", s.JobsRejected}, {"jobs_awaiting_signatures", s.JobsAwaiting}} {
		if kv.n > 0 {
			attrs = append(attrs, slog.Int(kv.k, kv.n))
		}
	}
	return attrs
}

// logReport logs the one summary line of a tick.
func logReport(l *slog.Logger, rep engine.Report) {
	l.LogAttrs(context.Background(), slog.LevelInfo, "tick", SummaryAttrs(rep.Summary())...)
}
