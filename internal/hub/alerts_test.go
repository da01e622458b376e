package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/alert"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/wire"
)

// hookReceiver collects verified webhook deliveries.
type hookReceiver struct {
	mu   sync.Mutex
	got  []alert.WebhookBody
	bad  []string
	note chan struct{}
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := alert.VerifyWebhook([]byte("k3y"), r.Header, body, time.Now(), 5*time.Minute); err != nil {
		h.bad = append(h.bad, err.Error())
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var b alert.WebhookBody
	json.Unmarshal(body, &b)
	h.got = append(h.got, b)
	select {
	case h.note <- struct{}{}:
	default:
	}
}

// waitKeys waits until the deliveries' keys are exactly want (sorted).
func (h *hookReceiver) waitKeys(t *testing.T, want ...string) {
	t.Helper()
	sort.Strings(want)
	// Report what arrived before go test's -timeout would end the run
	// without saying.
	var giveUp <-chan time.Time
	if dl, ok := t.Deadline(); ok {
		giveUp = time.After(time.Until(dl) * 9 / 10)
	}
	for {
		h.mu.Lock()
		var keys []string
		for _, b := range h.got {
			keys = append(keys, b.Key())
		}
		bad := h.bad
		h.mu.Unlock()
		sort.Strings(keys)
		if len(bad) > 0 {
			t.Fatalf("webhook verification failed: %v", bad)
		}
		if strings.Join(keys, " ") == strings.Join(want, " ") {
			return
		}
		if len(keys) > len(want) {
			t.Fatalf("deliveries: %q; want %q", keys, want)
		}
		select {
		case <-h.note:
		case <-time.After(20 * time.Millisecond): // re-read: a note may have been dropped
		case <-giveUp:
			t.Fatalf("deliveries: %q; want %q", keys, want)
		}
	}
}

func newAlertEnv(t *testing.T) (*env, *hookReceiver) {
	rcv := &hookReceiver{note: make(chan struct{}, 1)}
	hook := httptest.NewServer(rcv)
	t.Cleanup(hook.Close)
	cfg, err := alert.Parse([]byte(`
silent_intervals: 3
pending_after: 30m
sinks:
  ops: {type: webhook, url: "` + hook.URL + `", secret: {value: k3y}}
rules:
  - events: [host.silent, guest.drift, pending.waiting, op.failed, job.rejected, host.frozen, host.blocked, receipts.broken]
    sinks: [ops]
`))
	if err != nil {
		t.Fatal(err)
	}
	sinks, err := alert.Build(cfg, alert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := alert.NewDispatcher(cfg, sinks, st, alert.DispatcherOptions{Poll: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	opTok := NewToken("stwo_")
	if err := st.CreateOperator(t.Context(), "alice", store.HashToken(opTok)); err != nil {
		t.Fatal(err)
	}
	logBuf := &syncBuffer{}
	h := New(st, Options{PollInterval: 30 * time.Second, Alerts: d, Logger: slog.New(slog.NewTextHandler(logBuf, nil))})
	srv := httptest.NewServer(h.Handler())
	t.Cleanup(func() {
		h.Shutdown()
		srv.Close()
		h.Close()
		cancel()
		<-done
		st.Close()
	})
	return &env{t: t, hub: h, url: srv.URL, opTok: opTok, log: logBuf, st: st}, rcv
}

// TestAlertsFromWhatTheHubSees: reports, job results, receipts, a block
// and the sweep raise their notifications, each delivered once to a
// verifying webhook receiver; the same conditions again within the dedup
// window send nothing more.
func TestAlertsFromWhatTheHubSees(t *testing.T) {
	e, rcv := newAlertEnv(t)
	tok := e.enroll("pve-a")
	rep := report("pve-a")
	rep.Facts.Frozen = true
	rep.Sync = []wire.Sync{{VMID: 101, Phase: wire.PhaseDriftObserved, Drift: []wire.Change{{Key: "memory", From: "2048", To: "4096"}}}, {VMID: 102, Phase: wire.PhaseInSync}}
	rep.Actions = []wire.ActionResult{{Action: wire.Action{Op: "start", VMID: 103, Kind: "qemu"}, Source: "reconcile", Class: "benign", Error: "TASK ERROR: start failed"}}
	rep.Rejected = []wire.Rejection{{Job: "j-1", Code: "expired", Reason: "the signature expired"}}
	body, _ := wire.EncodeReport(rep)
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body, nil)
	rcv.waitKeys(t, "host.frozen/pve-a", "guest.drift/pve-a/101", "op.failed/pve-a/103/start", "job.rejected/pve-a/j-1")

	// The same conditions in the next report (a changed report): nothing.
	rep.Time = rep.Time.Add(time.Minute)
	body, _ = wire.EncodeReport(rep)
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body, nil)

	e.must(200, "POST", "/v1/hosts/pve-a/block", e.opTok, []byte(`{"reason":"disk swap"}`), nil)
	e.must(409, "POST", "/v1/agent/hosts/pve-a/receipts", tok, receiptsBody(t, "pve-a", 5), nil)
	// Silence: the sweep three poll intervals after the last report.
	now := time.Now()
	e.hub.sweep(t.Context(), now, false)
	e.hub.sweep(t.Context(), now.Add(91*time.Second), false)
	// Pending: first watched at now, alerted once 30 minutes on.
	e.hub.sweep(t.Context(), now.Add(31*time.Minute), false)
	h, err := e.st.Host(t.Context(), "pve-a")
	if err != nil {
		t.Fatal(err)
	}
	silence := "host.silent/pve-a/since " + h.LastSeen.UTC().Truncate(time.Second).Format(time.RFC3339)
	rcv.waitKeys(t, "host.frozen/pve-a", "guest.drift/pve-a/101", "op.failed/pve-a/103/start", "job.rejected/pve-a/j-1",
		"host.blocked/pve-a/alice", "receipts.broken/pve-a", silence, "pending.waiting/pve-a/101/destroy/"+payloadTag("payload\n"))
	rcv.mu.Lock()
	var drift alert.WebhookBody
	for _, b := range rcv.got {
		if b.Event == alert.GuestDrift {
			drift = b
		}
	}
	rcv.mu.Unlock()
	if drift.Detail != `memory: "2048", desired "4096"` || drift.VMID != 101 {
		t.Fatalf("drift alert: %+v", drift)
	}
	// Still silent and still pending at the next sweeps: nothing more.
	e.hub.sweep(t.Context(), now.Add(40*time.Minute), false)
	// The receiver has every message; the hub counts each once its
	// answer is read, so wait for the count.
	for {
		code, b := e.do("GET", "/metrics", "", nil)
		if code == 200 && strings.Contains(string(b), `steward_hub_notifications_delivered_total{outcome="delivered"} 8`) {
			if !strings.Contains(string(b), `steward_hub_notifications_enqueued_total{outcome="deduplicated"} 4`) || !strings.Contains(string(b), "steward_hub_outbox_depth") {
				t.Fatalf("/metrics:\n%s", grepLines(string(b), "notification", "outbox"))
			}
			break
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("/metrics: %d\n%s", code, grepLines(string(b), "notification", "outbox"))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func payloadTag(p string) string { return pendingTag([]byte(p)) }

func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// receiptsBody returns receipts for host starting at seq (past the
// chain's head: a gap).
func receiptsBody(t *testing.T, host string, seq uint64) []byte {
	rs := []wire.Receipt{{Time: time.Now().UTC(), Type: wire.ReceiptBegin, Op: "op1", Source: "reconcile"}}
	wire.Chain(seq-1, wire.ZeroHash, rs)
	b, err := json.Marshal(wire.Receipts{Host: host, Receipts: rs})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNotifyTestEndpoint: POST /v1/notifications/test sends through the
// named sink; the outbox shows it delivered; an unknown sink is 404.
func TestNotifyTestEndpoint(t *testing.T) {
	e, rcv := newAlertEnv(t)
	var out struct {
		ID int64 `json:"id"`
	}
	e.must(200, "POST", "/v1/notifications/test", e.opTok, []byte(`{"sink":"ops"}`), &out)
	rcv.waitKeys(t, "test//alice")
	var list struct {
		Notifications []NotificationJSON `json:"notifications"`
	}
	for {
		e.must(200, "GET", fmt.Sprintf("/v1/notifications?after=%d", out.ID-1), e.opTok, nil, &list)
		if len(list.Notifications) == 1 && list.Notifications[0].State == store.OutboxDelivered {
			break
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("notifications: %+v", list)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if n := list.Notifications[0]; n.Sink != "ops" || n.Alert.Event != alert.Test || n.Attempts != 1 {
		t.Fatalf("the test message: %+v", n)
	}
	code, b := e.do("POST", "/v1/notifications/test", e.opTok, []byte(`{"sink":"pager"}`))
	if code != 404 || errCode(t, b) != "no_such_sink" {
		t.Fatalf("an unknown sink: %d %s", code, b)
	}
	// Without notifications configured.
	plain := newEnv(t)
	code, b = plain.do("POST", "/v1/notifications/test", plain.opTok, []byte(`{"sink":"ops"}`))
	if code != 409 || errCode(t, b) != "notifications_off" {
		t.Fatalf("a hub without notifications: %d %s", code, b)
	}
}
