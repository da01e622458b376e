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
//     silence, named by the stored last-seen time it started from);
//   - guest.drift, op.failed, job.rejected, host.frozen: a full report
//     (a guest in phase drift_observed, an action with an error, a
//     rejected job, the freeze flag), and job results (failed, rejected);
//   - pending.waiting: the sweep, for each pending action that the
//     store has held for Config.PendingAfter since its host first
//     reported it (the same clock on every replica and across
//     restarts; once per action);
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
// part) at now; hosts are the store's (read by this sweep), iv the poll
// interval.
//
// Both are kept in the store, so every replica, and a restarted hub,
// sees the same conditions from the same start: a host's silence from
// its stored last-seen time, a pending action's wait from when the
// store first recorded it. Each alert's key names one occurrence (the
// silence since T, the action's payload) and goes through EmitOnce, so
// the outbox sends it once whichever hubs raise it and however often;
// what this hub remembers (silenceAlerted, pendingAlerted) only spares
// the store repeated attempts.
func (s *Server) sweepAlerts(ctx context.Context, now time.Time, iv time.Duration, hosts []store.Host) {
	if s.alerts == nil {
		return
	}
	cfg := s.alerts.Config()
	limit := time.Duration(cfg.SilentIntervals) * iv
	stored := make(map[string]time.Time, len(hosts))
	for _, h := range hosts {
		stored[h.ID] = h.LastSeen
	}
	type silent struct {
		host       string
		last, from time.Time // last seen (this hub's view), the silence's start (the store's)
	}
	var quiet []silent
	s.fleetMu.Lock()
	for id, hs := range s.fleet {
		if hs.lastSeen.IsZero() || now.Sub(hs.lastSeen) <= limit {
			continue
		}
		// The store's last-seen time names the silence: every hub reads
		// the same one (this hub's own may be later by a report's
		// handling time).
		from := stored[id]
		if from.IsZero() {
			from = hs.lastSeen
		}
		from = from.UTC().Truncate(time.Second)
		if !hs.silenceAlerted.Equal(from) {
			quiet = append(quiet, silent{id, hs.lastSeen, from})
		}
	}
	s.fleetMu.Unlock()
	for _, q := range quiet {
		_, err := s.alerts.EmitOnce(context.WithoutCancel(ctx), alert.Alert{Event: alert.HostSilent, Host: q.host,
			Subject: "since " + q.from.Format(time.RFC3339),
			Summary: fmt.Sprintf("Host %s has sent no report nor heartbeat for %v.", q.host, now.Sub(q.last).Round(time.Second)),
			Detail:  fmt.Sprintf("Last seen %s; the poll interval is %v.", q.last.UTC().Format(time.RFC3339), iv)})
		if err != nil {
			s.log.Error("notification", "event", alert.HostSilent, "host", q.host, "err", err)
			continue // tried again at the next sweep
		}
		s.fleetMu.Lock()
		if hs, ok := s.fleet[q.host]; ok {
			hs.silenceAlerted = q.from
		}
		s.fleetMu.Unlock()
	}
	if cfg.Wants(alert.PendingWaiting) {
		s.pendingAlerts(ctx, now, cfg.PendingAfter)
	}
}

// pendingAlerts raises pending.waiting for each pending action that the
// store has held for after (once per action: its key names its payload).
func (s *Server) pendingAlerts(ctx context.Context, now time.Time, after time.Duration) {
	ws, err := s.st.WaitingPending(ctx, now.Add(-after))
	if err != nil {
		s.log.Error("sweep: reading the pending signatures waiting", "err", err)
		return
	}
	seen := make(map[string]bool, len(ws))
	for _, w := range ws {
		p := w.Pending
		tag := pendingTag(p.Payload)
		key := w.Host + "/" + store.PendingKey(p)
		seen[key] = true
		s.mu.Lock()
		done := s.pendingAlerted[key]
		s.mu.Unlock()
		if done {
			continue
		}
		detail := p.Reason
		if len(p.Destroys) > 0 {
			detail += "\nwould destroy or overwrite: " + strings.Join(p.Destroys, ", ")
		}
		_, err := s.alerts.EmitOnce(context.WithoutCancel(ctx), alert.Alert{Event: alert.PendingWaiting, Host: w.Host, VMID: p.Action.VMID, Subject: p.Action.Op + "/" + tag,
			Summary: fmt.Sprintf("%s of guest %d on %s has waited %v for signatures.", p.Action.Op, p.Action.VMID, w.Host, now.Sub(w.Since).Round(time.Second)),
			Detail:  detail})
		if err != nil {
			s.log.Error("notification", "event", alert.PendingWaiting, "host", w.Host, "err", err)
			continue
		}
		s.mu.Lock()
		s.pendingAlerted[key] = true
		s.mu.Unlock()
	}
	s.mu.Lock()
	for k := range s.pendingAlerted {
		if !seen[k] {
			delete(s.pendingAlerted, k)
		}
	}
	s.mu.Unlock()
}

// pendingTag names a pending action by its payload (a short hash).
func pendingTag(payload []byte) string {
	sum := sha256.Sum256(payload)
	return hex.EncodeToString(sum[:8])
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
	after, limit, ok := pageParams(w, r, "a notification id")
	if !ok {
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
