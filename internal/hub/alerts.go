package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/alert"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/wire"
)

// Where each alert comes from (see package alert for the events):
//
//   - host.silent: the sweep, when a host has sent neither report nor
//     heartbeat for Config.SilentIntervals poll intervals (once per
//     silence; the host's next report ends it);
//   - guest.drift, op.failed, job.rejected, host.frozen: a full report
//     (a guest in phase drift_observed, an action with an error, a
//     rejected job, the freeze flag), and job results (failed, rejected);
//   - pending.waiting: the sweep, for each pending action that has been
//     in the store for Config.PendingAfter, as this hub has watched it
//     (a restarted hub starts the clock again);
//   - host.blocked: an operator's block;
//   - receipts.broken: a gap or a broken chain in the agent's receipts.
//
// Every alert goes through the Dispatcher's dedup, so the same condition
// seen on every report or by several replicas is sent once per window.

// alert hands a to the dispatcher, if notifications are configured; a
// failure is logged, never answered (what the alert describes happened).
func (s *Server) alert(ctx context.Context, a alert.Alert) {
	if s.alerts == nil {
		return
	}
	if _, err := s.alerts.Emit(context.WithoutCancel(ctx), a); err != nil {
		s.log.Error("notification", "event", a.Event, "host", a.Host, "err", err)
	}
}

// reportAlerts raises what a full report shows.
func (s *Server) reportAlerts(ctx context.Context, rep wire.Report) {
	if s.alerts == nil {
		return
	}
	if rep.Facts.Frozen {
		s.alert(ctx, alert.Alert{Event: alert.HostFrozen, Host: rep.Host, Summary: fmt.Sprintf("Host %s is frozen: its freeze file stops every change.", rep.Host)})
	}
	for _, sy := range rep.Sync {
		if sy.Phase != wire.PhaseDriftObserved {
			continue
		}
		var ch []string
		for _, c := range sy.Drift {
			ch = append(ch, fmt.Sprintf("%s: %q, desired %q", c.Key, c.From, c.To))
		}
		s.alert(ctx, alert.Alert{Event: alert.GuestDrift, Host: rep.Host, VMID: sy.VMID,
			Summary: fmt.Sprintf("Guest %d on %s (observe mode) differs from its desired state.", sy.VMID, rep.Host), Detail: strings.Join(ch, "\n")})
	}
	for _, ar := range rep.Actions {
		if ar.Error == "" {
			continue
		}
		subject := ar.Action.Op
		if ar.Job != "" {
			subject = ar.Job
		}
		s.alert(ctx, alert.Alert{Event: alert.OpFailed, Host: rep.Host, VMID: ar.Action.VMID, Subject: subject,
			Summary: fmt.Sprintf("%s of guest %d on %s failed.", ar.Action.Op, ar.Action.VMID, rep.Host), Detail: ar.Error})
	}
	for _, rj := range rep.Rejected {
		subject, vmid := rj.Job, 0
		if rj.Action != nil {
			vmid = rj.Action.VMID
		}
		if subject == "" {
			subject = rj.Code
		}
		s.alert(ctx, alert.Alert{Event: alert.JobRejected, Host: rep.Host, VMID: vmid, Subject: subject,
			Summary: fmt.Sprintf("Host %s rejected a signed job.", rep.Host), Detail: rj.Reason})
	}
}

// sweepAlerts raises silence and long-waiting signatures (the sweep's
// part); hosts are the enrolled ones, iv the poll interval.
func (s *Server) sweepAlerts(ctx context.Context, now time.Time, iv time.Duration) {
	if s.alerts == nil {
		return
	}
	cfg := s.alerts.Config()
	limit := time.Duration(cfg.SilentIntervals) * iv
	type silent struct {
		host string
		last time.Time
	}
	var quiet []silent
	s.fleetMu.Lock()
	for id, hs := range s.fleet {
		if hs.lastSeen.IsZero() || now.Sub(hs.lastSeen) <= limit {
			hs.silenceAlerted = false
			continue
		}
		if !hs.silenceAlerted {
			hs.silenceAlerted = true
			quiet = append(quiet, silent{id, hs.lastSeen})
		}
	}
	s.fleetMu.Unlock()
	for _, q := range quiet {
		s.alert(ctx, alert.Alert{Event: alert.HostSilent, Host: q.host,
			Summary: fmt.Sprintf("Host %s has sent no report nor heartbeat for %v.", q.host, now.Sub(q.last).Round(time.Second)),
			Detail:  fmt.Sprintf("Last seen %s; the poll interval is %v.", q.last.UTC().Format(time.RFC3339), iv)})
	}
	if cfg.Wants(alert.PendingWaiting) {
		s.pendingAlerts(ctx, now, cfg.PendingAfter)
	}
}

// pendingAlerts watches each host's pending actions: one that has been
// pending for after raises pending.waiting (once per action while it
// stays pending on this hub).
func (s *Server) pendingAlerts(ctx context.Context, now time.Time, after time.Duration) {
	s.fleetMu.Lock()
	hosts := make([]string, 0, len(s.fleet))
	for id := range s.fleet {
		hosts = append(hosts, id)
	}
	s.fleetMu.Unlock()
	seen := map[string]bool{}
	for _, h := range hosts {
		ps, err := s.st.Pending(ctx, h)
		if err != nil {
			if !errors.Is(err, store.ErrNotFound) {
				s.log.Error("sweep: reading pending signatures", "host", h, "err", err)
			}
			continue
		}
		for _, p := range ps {
			tag := pendingTag(p.Payload)
			key := h + "/" + tag
			seen[key] = true
			s.mu.Lock()
			w, ok := s.pendingSince[key]
			if !ok {
				w = &pendingWatch{since: now}
				s.pendingSince[key] = w
			}
			due := !w.alerted && now.Sub(w.since) >= after
			if due {
				w.alerted = true
			}
			s.mu.Unlock()
			if due {
				detail := p.Reason
				if len(p.Destroys) > 0 {
					detail += "\nwould destroy or overwrite: " + strings.Join(p.Destroys, ", ")
				}
				s.alert(ctx, alert.Alert{Event: alert.PendingWaiting, Host: h, VMID: p.Action.VMID, Subject: p.Action.Op + "/" + tag,
					Summary: fmt.Sprintf("%s of guest %d on %s has waited %v for signatures.", p.Action.Op, p.Action.VMID, h, now.Sub(w.since).Round(time.Second)),
					Detail:  detail})
			}
		}
	}
	s.mu.Lock()
	for k := range s.pendingSince {
		if !seen[k] {
			delete(s.pendingSince, k)
		}
	}
	s.mu.Unlock()
}

// pendingTag names a pending action by its payload (a short hash).
func pendingTag(payload []byte) string {
	sum := sha256.Sum256(payload)
	return hex.EncodeToString(sum[:8])
}

type pendingWatch struct {
	since   time.Time
	alerted bool
}

// NotificationJSON is an outbox message as GET /v1/notifications shows
// it (its body is the alert).
type NotificationJSON struct {
	ID        int64       `json:"id"`
	Sink      string      `json:"sink"`
	Key       string      `json:"key"`
	State     string      `json:"state"`
	Attempts  int         `json:"attempts"`
	CreatedAt time.Time   `json:"created_at"`
	NextAt    *time.Time  `json:"next_at,omitempty"`
	DoneAt    *time.Time  `json:"done_at,omitempty"`
	LastError string      `json:"last_error,omitempty"`
	Alert     alert.Alert `json:"alert"`
}

// notifications serves GET /v1/notifications?after=ID&limit=N: the
// outbox, oldest first.
func (s *Server) notifications(w http.ResponseWriter, r *http.Request) {
	limit, err := limitParam(r, 100, 1000)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_query", err.Error())
		return
	}
	after, err := afterParam(r, "a notification id")
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_query", err.Error())
		return
	}
	ns, err := s.st.Notifications(r.Context(), after, limit)
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
		return
	}
	out := make([]NotificationJSON, len(ns))
	for i, n := range ns {
		out[i] = NotificationJSON{ID: n.ID, Sink: n.Sink, Key: n.Key, State: n.State, Attempts: n.Attempts, CreatedAt: n.CreatedAt,
			DoneAt: timePtr(n.DoneAt), LastError: n.LastError}
		if n.State == store.OutboxPending {
			out[i].NextAt = timePtr(n.NextAt)
		}
		_ = jsonUnmarshal(n.Body, &out[i].Alert)
	}
	writeJSON(w, http.StatusOK, map[string]any{"notifications": out})
}

type notifyTestRequest struct {
	Sink string `json:"sink"`
}

// notifyTest serves POST /v1/notifications/test {"sink": S}: a test
// message to that sink through the outbox -> {"id"}.
func (s *Server) notifyTest(w http.ResponseWriter, r *http.Request) {
	req, ok := decodeStrict[notifyTestRequest](w, r, MaxOperatorBody, "the test request")
	if !ok {
		return
	}
	if s.alerts == nil {
		writeError(w, http.StatusConflict, "notifications_off", "this hub has no notification config (steward hub --notify-config FILE)")
		return
	}
	id, err := s.alerts.Test(r.Context(), req.Sink, operatorOf(r).Name)
	if errors.Is(err, alert.ErrNoSink) {
		writeError(w, http.StatusNotFound, "no_such_sink", fmt.Sprintf("the hub's notification config has no sink %q", req.Sink))
		return
	}
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "not_found", "")
		return
	}
	s.auditLog(r, "notify.test", "", "sink "+req.Sink)
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "sink": req.Sink})
}

func (s *Server) receiptsAlert(ctx context.Context, host, detail string) {
	s.alert(ctx, alert.Alert{Event: alert.ReceiptsBroken, Host: host,
		Summary: fmt.Sprintf("The journal receipts of %s left a gap or broke their hash chain.", host), Detail: detail})
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
