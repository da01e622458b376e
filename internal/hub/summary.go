package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/wire"
)

// ReportSummaryJSON is a host's last report at a glance: what the fleet
// views (`steward hosts list`, `steward status`) show of every host, so
// they make one request (GET /v1/hosts?summary=1) however many hosts
// there are, and never move whole reports.
type ReportSummaryJSON struct {
	Time         time.Time `json:"time"` // when the agent observed what the report says
	Node         string    `json:"node"`
	AgentVersion string    `json:"agent_version,omitempty"`
	Frozen       bool      `json:"frozen,omitempty"`
	// DesiredGeneration is the generation the agent converged toward.
	DesiredGeneration int64 `json:"desired_generation"`
	Guests            int   `json:"guests"`  // guests PVE lists on the host
	Managed           int   `json:"managed"` // guests desired state names
	// Sync counts managed guests by phase; every phase is present.
	Sync     map[string]int `json:"sync"`
	Pending  int            `json:"pending_signatures"` // actions held for signatures
	Rejected int            `json:"rejected_jobs"`      // signed jobs refused in the last tick
}

// Summarize is r at a glance.
func Summarize(r wire.Report) ReportSummaryJSON {
	s := ReportSummaryJSON{Time: r.Time, Node: r.Facts.Node, AgentVersion: r.Facts.AgentVersion, Frozen: r.Facts.Frozen,
		DesiredGeneration: r.DesiredGeneration, Guests: len(r.Guests), Managed: len(r.Sync), Sync: map[string]int{},
		Pending: len(r.Pending), Rejected: len(r.Rejected)}
	for _, p := range wire.Phases {
		s.Sync[p] = 0
	}
	for _, sy := range r.Sync {
		s.Sync[sy.Phase]++
	}
	return s
}

// summaryEntry is a cached summary and the hash of the report it is of.
type summaryEntry struct {
	hash string
	sum  ReportSummaryJSON
}

// summarize sets out[i].Summary for every host of hosts that reported.
// A summary is computed once per report (the store's report hash names
// it; hosts[i].ReportHash is read with the host) and kept in memory, so a
// fleet view reads and decodes only the reports that changed since the
// last one. A report stored by another replica after hosts was read is
// picked up by the next call.
func (s *Server) summarize(ctx context.Context, hosts []store.Host, out []HostJSON) error {
	s.sumMu.Lock()
	cache := s.summaryCache
	s.sumMu.Unlock()
	next := make(map[string]summaryEntry, len(hosts))
	for i, h := range hosts {
		if h.ReportHash == "" {
			continue
		}
		e, ok := cache[h.ID]
		if !ok || e.hash != h.ReportHash {
			rep, err := s.st.LastReport(ctx, h.ID)
			if errors.Is(err, store.ErrNotFound) {
				continue // revoked or not yet stored: no summary
			}
			if err != nil {
				return err
			}
			wr, err := wire.DecodeReport(rep.Body)
			if err != nil {
				return fmt.Errorf("the stored report of %q: %w", h.ID, err)
			}
			e = summaryEntry{hash: rep.Hash, sum: Summarize(wr)}
		}
		next[h.ID] = e
		sum := e.sum
		out[i].Summary = &sum
	}
	s.sumMu.Lock()
	s.summaryCache = next
	s.sumMu.Unlock()
	return nil
}
