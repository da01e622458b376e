package hub

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/wire"
)

// Defaults of the event log's retention and polling.
const (
	DefaultEventRetention = 30 * 24 * time.Hour
	DefaultEventKeep      = 100_000
	// eventRecheck is how often a held GET /v1/events asks the store for
	// events another replica recorded (this hub's own wake it at once).
	eventRecheck = 2 * time.Second
)

// EventJSON is an event as GET /v1/events shows it.
type EventJSON struct {
	ID     int64     `json:"id"`
	Time   time.Time `json:"time"`
	Type   string    `json:"type"`
	Host   string    `json:"host,omitempty"`
	Actor  string    `json:"actor,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// EventsJSON is the body of GET /v1/events. LastID is the id to pass as
// after to follow on: the newest event returned, or the after asked for
// when none is.
type EventsJSON struct {
	Events []EventJSON `json:"events"`
	LastID int64       `json:"last_id"`
}

// event records e in the fleet's event log and wakes the held event
// polls. A failure is logged, never answered: the action the event
// describes has happened already.
func (s *Server) event(ctx context.Context, e store.Event) {
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	if _, err := s.st.AppendEvent(context.WithoutCancel(ctx), e); err != nil {
		s.log.Error("event log", "type", e.Type, "host", e.Host, "err", err)
		return
	}
	s.mu.Lock()
	close(s.eventWake)
	s.eventWake = make(chan struct{})
	s.mu.Unlock()
}

// operatorEvent records an event caused by the request's operator.
func (s *Server) operatorEvent(r *http.Request, typ, host, detail string) {
	s.event(r.Context(), store.Event{Type: typ, Host: host, Actor: operatorOf(r).Name, Detail: detail})
}

func (s *Server) eventWaiter() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.eventWake
}

// events serves GET /v1/events?after=ID&wait=D&limit=N: a blocking query
// as the desired one. Without after it answers at once with the newest
// limit events; with after it answers at once if events past after
// exist, else holds the request until one is recorded or wait (default
// 5 min, capped at 10, with up to wait/16 jitter) passes, and then
// answers with what there is (maybe nothing). A pruned after is no
// error: the answer starts at the oldest event kept.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := limitParam(r, 100, 1000)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_query", err.Error())
		return
	}
	var after int64 = -1
	if v := q.Get("after"); v != "" {
		if after, err = strconv.ParseInt(v, 10, 64); err != nil || after < 0 {
			writeError(w, http.StatusBadRequest, "bad_query", fmt.Sprintf("after=%q is not an event id (a whole number >= 0, the last_id of the previous answer)", v))
			return
		}
	}
	wait, err := parseWait(q.Get("wait"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_query", err.Error())
		return
	}
	if after < 0 {
		last, err := s.st.LastEventID(r.Context())
		if err != nil {
			s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
			return
		}
		s.writeEvents(w, r, max(last-int64(limit), 0), limit, last)
		return
	}
	wake := s.eventWaiter()
	es, err := s.st.Events(r.Context(), after, limit)
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
		return
	}
	if len(es) == 0 && wait > 0 {
		s.eventPolls.Add(1)
		es, err = s.holdEvents(r, wake, after, limit, wait+jitter(wait))
		s.eventPolls.Add(-1)
		if r.Context().Err() != nil {
			return
		}
		if err != nil {
			s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
			return
		}
	}
	writeJSON(w, http.StatusOK, eventsJSON(es, after))
}

// holdEvents waits for events past after: woken by this hub's events,
// rechecking the store every eventRecheck for other replicas', until d
// passes, the hub shuts down or the client goes away.
func (s *Server) holdEvents(r *http.Request, wake <-chan struct{}, after int64, limit int, d time.Duration) ([]store.Event, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	tick := time.NewTicker(eventRecheck)
	defer tick.Stop()
	for {
		select {
		case <-wake:
			wake = s.eventWaiter()
		case <-tick.C:
		case <-t.C:
			return s.st.Events(r.Context(), after, limit)
		case <-s.closing:
			return s.st.Events(r.Context(), after, limit)
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
		es, err := s.st.Events(r.Context(), after, limit)
		if err != nil || len(es) > 0 {
			return es, err
		}
	}
}

// writeEvents answers the events after after (up to limit).
func (s *Server) writeEvents(w http.ResponseWriter, r *http.Request, after int64, limit int, last int64) {
	es, err := s.st.Events(r.Context(), after, limit)
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
		return
	}
	writeJSON(w, http.StatusOK, eventsJSON(es, last))
}

func eventsJSON(es []store.Event, after int64) EventsJSON {
	out := EventsJSON{Events: make([]EventJSON, len(es)), LastID: after}
	for i, e := range es {
		out.Events[i] = EventJSON{ID: e.ID, Time: e.Time, Type: e.Type, Host: e.Host, Actor: e.Actor, Detail: e.Detail}
		out.LastID = max(out.LastID, e.ID)
	}
	return out
}

// statusSummary condenses a report into the status an operator follows:
// frozen or not, how many managed guests are in each phase, how many
// actions wait for signatures. A host.status event is recorded when it
// changes from one full report to the next.
func statusSummary(rep wire.Report) string {
	counts := map[string]int{}
	for _, s := range rep.Sync {
		counts[s.Phase]++
	}
	var parts []string
	if rep.Facts.Frozen {
		parts = append(parts, "frozen")
	}
	for _, p := range wire.Phases {
		if n := counts[p]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", p, n))
		}
	}
	if len(rep.Pending) > 0 {
		parts = append(parts, fmt.Sprintf("pending signatures %d", len(rep.Pending)))
	}
	if len(rep.Rejected) > 0 {
		parts = append(parts, fmt.Sprintf("rejected jobs %d", len(rep.Rejected)))
	}
	if len(parts) == 0 {
		return "no managed guests"
	}
	return strings.Join(parts, ", ")
}
