package hub

import (
	"context"
	"math"
	"time"

	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/wire"
)

// PollInterval returns the report interval the hub tells every agent of
// a fleet of hosts enrolled hosts: base, stretched so that the fleet's
// reports (one per host per interval) stay within budget reports per
// second:
//
//	interval = max(base, hosts / budget seconds)
//
// rounded up to a whole second (the envelope carries seconds) and capped
// at wire.MaxPollInterval. A budget <= 0 means no stretching. For example
// with base 60s and budget 200/s, 12,000 hosts keep 60s and 30,000 hosts
// report every 150s (200 reports/s).
func PollInterval(base time.Duration, hosts int, budget float64) time.Duration {
	d := base
	if budget > 0 && hosts > 0 {
		secs := math.Ceil(float64(hosts) / budget)
		if secs >= wire.MaxPollInterval.Seconds() {
			return wire.MaxPollInterval
		}
		d = max(d, time.Duration(secs)*time.Second)
	}
	d = (d + time.Second - 1) / time.Second * time.Second
	return min(d, wire.MaxPollInterval)
}

// hostState is what the hub keeps in memory about an enrolled host.
type hostState struct {
	lastSeen time.Time
	// silent is true once the host.silent event was recorded for the
	// current silence (cleared, with host.returned, when it reports).
	silent bool
	// silenceAlerted is the start of the silence host.silent was last
	// raised for (see sweepAlerts).
	silenceAlerted time.Time
}

// seenLocked records a report or heartbeat of host at t in memory;
// dirty marks it for the next flush. It returns whether the host was
// silent (the caller records host.returned). s.fleetMu is held.
func (s *Server) seenLocked(host string, t time.Time, dirty bool) (wasSilent bool) {
	hs, ok := s.fleet[host]
	if !ok {
		hs = &hostState{}
		s.fleet[host] = hs
	}
	if t.After(hs.lastSeen) {
		hs.lastSeen = t
	}
	wasSilent, hs.silent = hs.silent, false
	if dirty {
		if prev, ok := s.dirty[host]; !ok || t.After(prev) {
			s.dirty[host] = t
		}
	}
	return wasSilent
}

// seen records a report (stored already: dirty false) or a heartbeat
// (dirty true: written by the next flush) of host, and records
// host.returned if the host had been silent.
func (s *Server) seen(ctx context.Context, host string, dirty bool) {
	s.fleetMu.Lock()
	wasSilent := s.seenLocked(host, s.now(), dirty)
	s.fleetMu.Unlock()
	if wasSilent {
		s.event(ctx, store.Event{Type: store.EventHostReturned, Host: host, Detail: "reporting again"})
	}
}

// forget drops a revoked host from the fleet in memory.
func (s *Server) forget(host string) {
	s.fleetMu.Lock()
	defer s.fleetMu.Unlock()
	delete(s.fleet, host)
	delete(s.dirty, host)
}

// lastSeen returns the in-memory last-seen time of host (zero: unknown),
// newer than the store's until the next flush.
func (s *Server) lastSeen(host string) time.Time {
	s.fleetMu.Lock()
	defer s.fleetMu.Unlock()
	if hs, ok := s.fleet[host]; ok {
		return hs.lastSeen
	}
	return time.Time{}
}

// fleetSize is the number of enrolled hosts this hub knows of.
func (s *Server) fleetSize() int {
	s.fleetMu.Lock()
	defer s.fleetMu.Unlock()
	return len(s.fleet)
}

// pollInterval is the interval for the fleet as this hub knows it.
func (s *Server) pollInterval() time.Duration {
	return PollInterval(s.poll, s.fleetSize(), s.budget)
}

// connected counts the hosts seen within two poll intervals of now.
func (s *Server) connected(now time.Time) int {
	iv := s.pollInterval()
	s.fleetMu.Lock()
	defer s.fleetMu.Unlock()
	n := 0
	for _, hs := range s.fleet {
		if !hs.lastSeen.IsZero() && now.Sub(hs.lastSeen) <= 2*iv {
			n++
		}
	}
	return n
}

// flush writes the heartbeats held in memory to the store in one
// transaction. On failure they stay held for the next flush.
func (s *Server) flush(ctx context.Context) error {
	s.fleetMu.Lock()
	batch := s.dirty
	s.dirty = make(map[string]time.Time, len(batch))
	s.fleetMu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := s.st.TouchHosts(ctx, batch)
	if err != nil {
		s.fleetMu.Lock()
		for h, t := range batch {
			if prev, ok := s.dirty[h]; !ok || t.After(prev) {
				s.dirty[h] = t
			}
		}
		s.fleetMu.Unlock()
	}
	return err
}

// sweep is one pass of the hub's housekeeping at now: flush heartbeats,
// merge the store's view of the fleet (hosts enrolled or seen through
// another replica), record host.silent for hosts quiet for two poll
// intervals, refresh the pending-signature gauge, prune the event log
// and delete expired dashboard sessions.
// first is the pass at start: a host silent already then gets no event
// (the hub cannot tell when it went quiet).
func (s *Server) sweep(ctx context.Context, now time.Time, first bool) {
	if err := s.flush(ctx); err != nil {
		s.log.Error("writing heartbeats", "err", err)
	}
	hosts, err := s.st.Hosts(ctx)
	if err != nil {
		s.log.Error("sweep: listing hosts", "err", err)
		return
	}
	iv := PollInterval(s.poll, countEnrolled(hosts), s.budget)
	var silent []string
	s.fleetMu.Lock()
	keep := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		if h.EnrolledAt.IsZero() || !h.RevokedAt.IsZero() {
			continue
		}
		keep[h.ID] = true
		hs, ok := s.fleet[h.ID]
		if !ok {
			hs = &hostState{}
			s.fleet[h.ID] = hs
		}
		if h.LastSeen.After(hs.lastSeen) {
			hs.lastSeen = h.LastSeen
		}
	}
	for id, hs := range s.fleet {
		if !keep[id] {
			delete(s.fleet, id)
			continue
		}
		quiet := !hs.lastSeen.IsZero() && now.Sub(hs.lastSeen) > 2*iv
		if quiet && !hs.silent {
			hs.silent = true
			if !first {
				silent = append(silent, id)
			}
		}
	}
	s.fleetMu.Unlock()
	s.sweepAlerts(ctx, now, iv, hosts)
	for _, id := range silent {
		s.event(ctx, store.Event{Type: store.EventHostSilent, Host: id,
			Detail: "no report nor heartbeat for " + (2 * iv).String()})
	}
	if n, err := s.st.PendingCount(ctx); err == nil {
		s.m.pending.Set(float64(n))
	} else {
		s.log.Error("sweep: counting pending signatures", "err", err)
	}
	if _, err := s.st.PruneEvents(ctx, now.Add(-s.eventAge), s.eventKeep); err != nil {
		s.log.Error("sweep: pruning the event log", "err", err)
	}
	if _, err := s.st.PruneSessions(ctx, now); err != nil {
		s.log.Error("sweep: pruning expired dashboard sessions", "err", err)
	}
}

func countEnrolled(hosts []store.Host) int {
	n := 0
	for _, h := range hosts {
		if !h.EnrolledAt.IsZero() && h.RevokedAt.IsZero() {
			n++
		}
	}
	return n
}

// loop runs the housekeeping: a flush every s.flushEvery, a sweep every
// s.sweepEvery, until Close; then a last flush.
func (s *Server) loop() {
	defer close(s.loopDone)
	ctx := context.Background()
	s.sweep(ctx, s.now(), true)
	flushT := time.NewTicker(s.flushEvery)
	defer flushT.Stop()
	sweepT := time.NewTicker(s.sweepEvery)
	defer sweepT.Stop()
	for {
		select {
		case <-s.loopStop:
			if err := s.flush(ctx); err != nil {
				s.log.Error("writing heartbeats at close", "err", err)
			}
			return
		case <-flushT.C:
			if err := s.flush(ctx); err != nil {
				s.log.Error("writing heartbeats", "err", err)
			}
		case <-sweepT.C:
			s.sweep(ctx, s.now(), false)
		}
	}
}
