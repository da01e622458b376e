package alert

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/backoff"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
)

// receiver is a webhook receiver on loopback that verifies signatures
// the way the README tells operators to, and refuses replays.
type receiver struct {
	t    *testing.T
	key  []byte
	srv  *httptest.Server
	mu   sync.Mutex
	fail int // answer 503 to this many more requests
	got  []WebhookBody
	seen map[string]bool // delivery ids
	hits int
	bad  []string // verification failures
	got1 chan struct{}
}

func newReceiver(t *testing.T, key string) *receiver {
	r := &receiver{t: t, key: []byte(key), seen: map[string]bool{}, got1: make(chan struct{}, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hits++
	if r.fail > 0 {
		r.fail--
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if err := VerifyWebhook(r.key, req.Header, body, time.Now(), 5*time.Minute); err != nil {
		r.bad = append(r.bad, err.Error())
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if id := req.Header.Get(HeaderDelivery); r.seen[id] {
		w.WriteHeader(http.StatusOK) // a redelivery: acknowledged, not shown twice
		return
	} else {
		r.seen[id] = true
	}
	var b WebhookBody
	if err := json.Unmarshal(body, &b); err != nil {
		r.bad = append(r.bad, err.Error())
	}
	r.got = append(r.got, b)
	r.got1 <- struct{}{}
}

func (r *receiver) wait(t *testing.T, n int) []WebhookBody {
	t.Helper()
	for {
		r.mu.Lock()
		got := append([]WebhookBody(nil), r.got...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.got1:
		case <-t.Context().Done():
			t.Fatalf("waiting for %d webhook deliveries: got %d", n, len(got))
		}
	}
}

func openStore(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func webhookConfig(t *testing.T, url string) *Config {
	t.Helper()
	c, err := Parse([]byte(`
sinks:
  ops:
    type: webhook
    url: ` + url + `
    secret: {env: HOOK_KEY}
rules:
  - events: [guest.drift, host.silent]
    sinks: [ops]
    dedup: 30m
`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var fastRetry = backoff.Policy{Initial: time.Millisecond, Max: 5 * time.Millisecond}

func newDispatcher(t *testing.T, c *Config, out Outbox, o DispatcherOptions) *Dispatcher {
	t.Helper()
	sinks, err := Build(c, Options{Getenv: func(k string) string {
		if k == "HOOK_KEY" {
			return "hook-secret"
		}
		return ""
	}})
	if err != nil {
		t.Fatal(err)
	}
	if o.Retry == (backoff.Policy{}) {
		o.Retry = fastRetry
	}
	o.Poll = 10 * time.Millisecond
	return NewDispatcher(c, sinks, out, o)
}

func run(t *testing.T, d *Dispatcher) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	return func() { cancel(); <-done }
}

// TestWebhookDeliveryRetryDedup: an alert reaches a webhook receiver
// signed (HMAC over timestamp and body), after the receiver failed twice;
// the same alert within the dedup window sends nothing more.
func TestWebhookDeliveryRetryDedup(t *testing.T) {
	rcv := newReceiver(t, "hook-secret")
	rcv.fail = 2
	st := openStore(t, filepath.Join(t.TempDir(), "hub.db"))
	defer st.Close()
	d := newDispatcher(t, webhookConfig(t, rcv.srv.URL), st, DispatcherOptions{})
	defer run(t, d)()
	at := time.Now().UTC().Truncate(time.Second)
	a := Alert{Event: GuestDrift, Host: "pve-a", VMID: 101, Time: at, Summary: "guest 101 drifted", Detail: "memory 2048 -> 4096"}
	if n, err := d.Emit(t.Context(), a); err != nil || n != 1 {
		t.Fatalf("Emit: %d, %v; want 1 message", n, err)
	}
	got := rcv.wait(t, 1)
	if b := got[0]; b.Event != GuestDrift || b.Host != "pve-a" || b.VMID != 101 || b.Summary != a.Summary || b.Detail != a.Detail || !b.Time.Equal(at) || b.Title != "steward: guest.drift on pve-a guest 101" || b.ID == 0 {
		t.Fatalf("delivered: %+v", b)
	}
	rcv.mu.Lock()
	hits, bad := rcv.hits, rcv.bad
	rcv.mu.Unlock()
	if hits != 3 || len(bad) != 0 {
		t.Fatalf("receiver: %d requests, verification failures %v; want 3 (two 503s, then delivered) and none", hits, bad)
	}
	// Flapping: the same guest again within the window stores nothing.
	for range 5 {
		if n, err := d.Emit(t.Context(), Alert{Event: GuestDrift, Host: "pve-a", VMID: 101, Time: at.Add(time.Minute), Summary: "again"}); err != nil || n != 0 {
			t.Fatalf("Emit within the dedup window: %d, %v; want 0", n, err)
		}
	}
	// Another guest, and an event no rule routes.
	if n, _ := d.Emit(t.Context(), Alert{Event: GuestDrift, Host: "pve-a", VMID: 102, Time: at, Summary: "guest 102"}); n != 1 {
		t.Fatalf("Emit for another guest: %d; want 1", n)
	}
	if n, _ := d.Emit(t.Context(), Alert{Event: OpFailed, Host: "pve-a", Time: at, Summary: "x"}); n != 0 {
		t.Fatalf("Emit of an unrouted event: %d; want 0", n)
	}
	if got := rcv.wait(t, 2); got[1].VMID != 102 {
		t.Fatalf("second delivery: %+v", got[1])
	}
	ns, _ := st.Notifications(t.Context(), 0, 10)
	if len(ns) != 2 || ns[0].State != store.OutboxDelivered || ns[0].Attempts != 3 || ns[0].Key != "guest.drift/pve-a/101" {
		t.Fatalf("outbox: %+v; want 2 messages, the first delivered on its third attempt", ns)
	}
}

// TestNoLossAcrossRestart: messages queued while no hub delivers, and one
// claimed by a hub that died mid-send, are delivered by the next hub.
func TestNoLossAcrossRestart(t *testing.T) {
	rcv := newReceiver(t, "hook-secret")
	path := filepath.Join(t.TempDir(), "hub.db")
	st := openStore(t, path)
	c := webhookConfig(t, rcv.srv.URL)
	first := newDispatcher(t, c, st, DispatcherOptions{Owner: "hub-1"})
	at := time.Now().UTC()
	for _, h := range []string{"pve-a", "pve-b"} {
		if _, err := first.Emit(t.Context(), Alert{Event: HostSilent, Host: h, Time: at, Summary: h + " is silent"}); err != nil {
			t.Fatal(err)
		}
	}
	// hub-1 claims pve-a's message and dies before sending it.
	if got, err := st.ClaimNotifications(t.Context(), "hub-1", time.Now(), DefaultLease, 1); err != nil || len(got) != 1 {
		t.Fatalf("claim: %v, %v", got, err)
	}
	st.Close()

	st = openStore(t, path)
	defer st.Close()
	// The next hub runs once the dead one's lease has run out (its clock
	// is put past the lease rather than the test waiting for it).
	second := newDispatcher(t, c, st, DispatcherOptions{Owner: "hub-2", Now: func() time.Time { return time.Now().Add(DefaultLease + time.Second) }})
	defer run(t, second)()
	got := rcv.wait(t, 2)
	hosts := map[string]bool{got[0].Host: true, got[1].Host: true}
	if !hosts["pve-a"] || !hosts["pve-b"] {
		t.Fatalf("delivered after the restart: %+v; want pve-a's and pve-b's", got)
	}
}

// TestPermanentRefusalGivesUp: a 4xx is not retried.
func TestPermanentRefusalGivesUp(t *testing.T) {
	rcv := newReceiver(t, "another-key") // verification fails: 401
	st := openStore(t, filepath.Join(t.TempDir(), "hub.db"))
	defer st.Close()
	d := newDispatcher(t, webhookConfig(t, rcv.srv.URL), st, DispatcherOptions{})
	if _, err := d.Emit(t.Context(), Alert{Event: HostSilent, Host: "pve-a", Summary: "x"}); err != nil {
		t.Fatal(err)
	}
	for d.once(t.Context()) {
	}
	d.once(t.Context())
	ns, _ := st.Notifications(t.Context(), 0, 10)
	if len(ns) != 1 || ns[0].State != store.OutboxDead || !strings.Contains(ns[0].LastError, "401") {
		t.Fatalf("outbox: %+v; want the message dead after a 401", ns)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if rcv.hits != 1 {
		t.Fatalf("receiver hit %d times; want once (no retry of a refusal)", rcv.hits)
	}
}

func TestVerifyWebhook(t *testing.T) {
	key := []byte("k")
	body := []byte(`{"event":"test"}`)
	now := time.Unix(1_800_000_000, 0)
	h := http.Header{}
	h.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	h.Set(HeaderSignature, Sign(key, now.Unix(), body))
	if err := VerifyWebhook(key, h, body, now, time.Minute); err != nil {
		t.Fatalf("a good signature: %v", err)
	}
	if err := VerifyWebhook(key, h, append(body, ' '), now, time.Minute); err == nil {
		t.Fatal("a changed body verified")
	}
	if err := VerifyWebhook([]byte("other"), h, body, now, time.Minute); err == nil {
		t.Fatal("another key verified")
	}
	if err := VerifyWebhook(key, h, body, now.Add(2*time.Minute), time.Minute); err == nil {
		t.Fatal("a replay two minutes later verified")
	}
	h2 := h.Clone()
	h2.Set(HeaderTimestamp, strconv.FormatInt(now.Unix()+1, 10)) // re-dated, same signature
	if err := VerifyWebhook(key, h2, body, now, time.Minute); err == nil {
		t.Fatal("a re-dated request verified")
	}
}

// TestSlackAndNtfyBodies: what the chat sinks post.
func TestSlackAndNtfyBodies(t *testing.T) {
	type req struct {
		hdr  http.Header
		body string
	}
	reqs := make(chan req, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		reqs <- req{r.Header, string(b)}
	}))
	defer srv.Close()
	c, err := Parse([]byte(`
sinks:
  chat: {type: slack, url_secret: {value: "` + srv.URL + `/hooks/T000/B000/XXXX"}}
  phone: {type: ntfy, url: "` + srv.URL + `/steward-alerts", token: {file: TOKENFILE}}
rules:
  - {events: [receipts.broken], sinks: [chat, phone]}
`))
	if err != nil {
		t.Fatal(err)
	}
	sinks, err := Build(c, Options{ReadFile: func(p string) ([]byte, error) {
		if p != "TOKENFILE" {
			return nil, errors.New("unexpected file")
		}
		return []byte("tk_secret\n"), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	a := Alert{Event: ReceiptsBroken, Host: "pve-a", Time: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Summary: "the receipt chain broke", Detail: "seq 7: prev hash mismatch"}
	if err := sinks["chat"].Send(t.Context(), Message{ID: 1, Alert: a}); err != nil {
		t.Fatal(err)
	}
	r := <-reqs
	var sb map[string]any
	if err := json.Unmarshal([]byte(r.body), &sb); err != nil || len(sb) != 1 {
		t.Fatalf("slack body %s: want one field, text", r.body)
	}
	want := "*steward: receipts.broken on pve-a*\nthe receipt chain broke\nseq 7: prev hash mismatch\n(receipts.broken/pve-a at 2026-03-01T12:00:00Z)"
	if sb["text"] != want || r.hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("slack text: got %q; want %q", sb["text"], want)
	}
	if err := sinks["phone"].Send(t.Context(), Message{ID: 2, Alert: a}); err != nil {
		t.Fatal(err)
	}
	r = <-reqs
	if r.body != "the receipt chain broke\nseq 7: prev hash mismatch\n(receipts.broken/pve-a at 2026-03-01T12:00:00Z)" ||
		r.hdr.Get("Title") != "steward: receipts.broken on pve-a" || r.hdr.Get("Priority") != "high" ||
		r.hdr.Get("Tags") != "receipts_broken" || r.hdr.Get("Authorization") != "Bearer tk_secret" {
		t.Fatalf("ntfy request: headers %v body %q", r.hdr, r.body)
	}
}

// TestSecretsStayOutOfErrors: a failing Slack webhook (whose URL is the
// secret) and a missing secret name where they looked, never the value.
func TestSecretsStayOutOfErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	url := srv.URL + "/hooks/SECRETPATH"
	srv.Close() // nothing listens now
	c, err := Parse([]byte(`
sinks:
  chat: {type: slack, url_secret: {value: "` + url + `"}}
rules: [{events: [op.failed], sinks: [chat]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	sinks, err := Build(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = sinks["chat"].Send(t.Context(), Message{Alert: Alert{Event: OpFailed, Summary: "x"}})
	if err == nil || strings.Contains(err.Error(), "SECRETPATH") {
		t.Fatalf("send to a closed port: %v; want an error without the URL", err)
	}
	c2, _ := Parse([]byte(`
sinks:
  ops: {type: webhook, url: "https://example.invalid/", secret: {env: NO_SUCH_VAR}}
rules: [{events: [op.failed], sinks: [ops]}]
`))
	if _, err := Build(c2, Options{Getenv: func(string) string { return "" }}); err == nil || !strings.Contains(err.Error(), "sinks.ops: secret: environment variable NO_SUCH_VAR is empty or unset") {
		t.Fatalf("a missing secret: %v", err)
	}
}
