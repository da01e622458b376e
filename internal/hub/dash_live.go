package hub

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// sseHeartbeat is how often an idle event stream sends a comment, so
// proxies and the browser keep the connection.
const sseHeartbeat = 25 * time.Second

// reportChanged wakes the dashboard's event streams: a host sent a full
// report whose content changed. (Events in the store wake them too; a
// report is not one, so that the event log holds what an operator
// follows, not every drift value.)
func (s *Server) reportChanged(host string) {
	s.mu.Lock()
	s.lastReportHost = host
	close(s.reportWake)
	s.reportWake = make(chan struct{})
	s.mu.Unlock()
}

func (s *Server) reportWaiter() (<-chan struct{}, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reportWake, s.lastReportHost
}

// events serves GET /ui/events: server-sent events, one "fleet" event
// for each event of the fleet's log (data: EventJSON) and a "report"
// event (data: {"host": H}) when this hub stores a report whose content
// changed. The pages reload their live part on either. Last-Event-ID
// resumes after a log event id. The stream ends when the hub shuts
// down or the client goes away, and (with an "ended" event) when the
// session expires, is logged out or its operator token is revoked.
func (d *dashboard) events(w http.ResponseWriter, r *http.Request, sess session) {
	fl := http.NewResponseController(w)
	ctx := r.Context()
	after, err := d.s.st.LastEventID(ctx)
	if err != nil {
		d.fail(w, err)
		return
	}
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 && n < after {
			after = n
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 3000\n\n")
	if err := fl.Flush(); err != nil {
		d.s.log.Error("dashboard: the event stream cannot be flushed", "err", err)
		return
	}

	hb := time.NewTicker(sseHeartbeat)
	defer hb.Stop()
	recheck := time.NewTicker(eventRecheck) // events other replicas record
	defer recheck.Stop()
	end := time.NewTimer(time.Until(sess.Expires))
	defer end.Stop()
	for {
		wake := d.s.eventWaiter()
		rwake, _ := d.s.reportWaiter()
		es, err := d.s.st.Events(ctx, after, 100)
		if err != nil {
			if ctx.Err() == nil {
				d.s.log.Error("dashboard: reading the event log", "err", err)
			}
			return
		}
		for _, e := range es {
			b, _ := json.Marshal(EventJSON{ID: e.ID, Time: e.Time, Type: e.Type, Host: e.Host, Actor: e.Actor, Detail: e.Detail})
			fmt.Fprintf(w, "id: %d\nevent: fleet\ndata: %s\n\n", e.ID, b)
			after = e.ID
		}
		if len(es) > 0 {
			fl.Flush()
			if len(es) == 100 {
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-d.s.closing:
			return
		case <-end.C:
			fmt.Fprint(w, "event: ended\ndata: {}\n\n")
			fl.Flush()
			return
		case <-wake:
		case <-recheck.C:
			// Logout or a revoked token ends the stream too, within
			// eventRecheck: it must not go on showing the fleet.
			if _, _, ok, err := d.lookup(r); err == nil && !ok {
				fmt.Fprint(w, "event: ended\ndata: {}\n\n")
				fl.Flush()
				return
			}
		case <-rwake:
			_, host := d.s.reportWaiter()
			b, _ := json.Marshal(map[string]string{"host": host})
			fmt.Fprintf(w, "event: report\ndata: %s\n\n", strings.TrimSpace(string(b)))
			fl.Flush()
		case <-hb.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			fl.Flush()
		}
	}
}
