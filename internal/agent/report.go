package agent

import (
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/steward-pve/steward/internal/engine"
)

// logReport logs one line summing up a tick.
func logReport(l *slog.Logger, rep engine.Report) {
	counts := map[string]int{}
	for _, g := range rep.Guests {
		counts[g.Phase]++
	}
	var parts []string
	for k, v := range counts {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	l.Info("tick done", "actions", len(rep.Results), "pending_signature", len(rep.Pending), "rejected", len(rep.Rejected), "guests", strings.Join(parts, " "))
}
