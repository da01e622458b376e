package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/pgtest"
	"github.com/steward-pve/steward/internal/wire"
)

// hearing wraps a Notifier and reports each notification for host on
// heard, so a test knows when a replica's subscription is live.
type hearing struct {
	*Notifier
	host  string
	heard chan struct{}
}

func (h *hearing) Subscribe(ctx context.Context, fn func(string, int64)) error {
	return h.Notifier.Subscribe(ctx, func(host string, gen int64) {
		if host == h.host {
			select {
			case h.heard <- struct{}{}:
			default:
			}
			return
		}
		fn(host, gen)
	})
}

type replica struct {
	st  *Store
	hub *hub.Server
	url string
	n   *hearing
}

// startReplica starts a hub on its own Store (its own pool) on url.
func startReplica(t *testing.T, url string, recheck time.Duration) *replica {
	t.Helper()
	st := open(t, url, Options{})
	n := &hearing{Notifier: st.Notifier(), host: "warm-up.invalid", heard: make(chan struct{}, 1)}
	h := hub.New(st, hub.Options{Notifier: n, Recheck: recheck})
	srv := httptest.NewServer(h.Handler())
	t.Cleanup(func() { h.Shutdown(); srv.Close() })
	return &replica{st: st, hub: h, url: srv.URL, n: n}
}

// listening waits until r's subscription hears a notification sent from
// another replica (LISTEN is set up asynchronously).
func (r *replica) listening(t *testing.T, from *replica) {
	t.Helper()
	for {
		if err := from.st.Notifier().Publish(t.Context(), r.n.host, 0); err != nil {
			t.Fatal(err)
		}
		select {
		case <-r.n.heard:
			return
		case <-time.After(20 * time.Millisecond):
		case <-t.Context().Done():
			t.Fatal("the replica's subscription never heard a notification")
		}
	}
}

func call(t *testing.T, ctx context.Context, method, url, tok string, body []byte, hdr ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

const doc = `apiVersion: steward/v1
kind: Fleet
hosts:
  pve-a:
    guests:
      101:
        kind: lxc
        state: running
`

// TestLongPollWakesAcrossReplicas: two hubs on one database; a PUT of
// desired state on hub A answers the agent's long-poll held on hub B
// through LISTEN/NOTIFY (B's re-check is an hour away), and a second
// replica's If-Match PUT on the stale generation is refused.
func TestLongPollWakesAcrossReplicas(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a := startReplica(t, url, time.Hour)
	b := startReplica(t, url, time.Hour)
	ctx := t.Context()
	opTok, hostTok := hub.NewToken("stwo_"), hub.NewToken("stwh_")
	if err := a.st.CreateOperator(ctx, "alice", store.HashToken(opTok)); err != nil {
		t.Fatal(err)
	}
	if err := a.st.CreateJoinToken(ctx, "pve-a", store.HashToken("join"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.st.Enroll(ctx, store.HashToken("join"), store.HashToken(hostTok)); err != nil {
		t.Fatal(err)
	}
	b.listening(t, a)

	for gen := int64(1); gen <= 3; gen++ {
		got := make(chan wire.Desired, 1)
		go func() {
			c, body := call(t, ctx, "GET", b.url+"/v1/agent/hosts/pve-a/desired?after="+strconv.FormatInt(gen-1, 10)+"&wait=10m", hostTok, nil)
			var d wire.Desired
			if c != 200 || json.Unmarshal(body, &d) != nil {
				t.Errorf("long-poll on B: got %d %s; want 200", c, body)
			}
			got <- d
		}()
		for b.hub.HeldPolls() != 1 {
			select {
			case <-ctx.Done():
				t.Fatal("hub B never held the long-poll")
			case <-time.After(time.Millisecond):
			}
		}
		if c, body := call(t, ctx, "PUT", a.url+"/v1/hosts/pve-a/desired", opTok, []byte(doc), "If-Match", strconv.FormatInt(gen-1, 10)); c != 200 {
			t.Fatalf("PUT on A: got %d %s", c, body)
		}
		select {
		case d := <-got:
			if d.Generation != gen {
				t.Fatalf("long-poll on B: got generation %d; want %d", d.Generation, gen)
			}
		case <-time.After(time.Minute):
			t.Fatalf("generation %d: the long-poll on B was never answered after the PUT on A", gen)
		}
		// The same If-Match through B now loses.
		if c, body := call(t, ctx, "PUT", b.url+"/v1/hosts/pve-a/desired", opTok, []byte(doc), "If-Match", strconv.FormatInt(gen-1, 10)); c != http.StatusPreconditionFailed {
			t.Fatalf("stale If-Match on B: got %d %s; want 412", c, body)
		}
	}
}

// TestNotifierSubscriptionReportsConnectionLoss: when the listening
// connection is killed, the subscription returns an error (the hub then
// subscribes again) rather than hanging deaf.
func TestNotifierSubscriptionReportsConnectionLoss(t *testing.T) {
	st := open(t, pgtest.NewDatabase(t), Options{})
	ctx := t.Context()
	errc := make(chan error, 1)
	go func() { errc <- st.Notifier().Subscribe(ctx, func(string, int64) {}) }()
	// Wait for the listener, then terminate its backend.
	for {
		var n int
		if err := st.pool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN "+NotifyChannel+"'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := st.pool.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN "+NotifyChannel+"'"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Subscribe after its connection was killed: nil; want an error")
		}
	case <-time.After(time.Minute):
		t.Fatal("Subscribe did not return after its connection was killed")
	}
}

func TestParsePayload(t *testing.T) {
	for _, tc := range []struct {
		in   string
		host string
		gen  int64
		ok   bool
	}{
		{"pve-a 3", "pve-a", 3, true},
		{"a.b_c 0", "a.b_c", 0, true},
		{"pve-a", "", 0, false},
		{" 3", "", 0, false},
		{"pve-a -1", "", 0, false},
		{"pve-a x", "", 0, false},
	} {
		host, gen, ok := parsePayload(tc.in)
		if host != tc.host || gen != tc.gen || ok != tc.ok {
			t.Errorf("parsePayload(%q): got %q %d %v; want %q %d %v", tc.in, host, gen, ok, tc.host, tc.gen, tc.ok)
		}
	}
}

// TestOlderReplicaNotReady: a hub replica older than the database's
// schema fails /readyz and answers writes 503 with the reason, so a load
// balancer drains it; reads still work.
func TestOlderReplicaNotReady(t *testing.T) {
	url := pgtest.NewDatabase(t)
	r := startReplica(t, url, time.Hour)
	ctx := t.Context()
	opTok := hub.NewToken("stwo_")
	if err := r.st.CreateOperator(ctx, "alice", store.HashToken(opTok)); err != nil {
		t.Fatal(err)
	}
	if err := r.st.CreateJoinToken(ctx, "pve-a", store.HashToken("join"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if c, body := call(t, ctx, "GET", r.url+"/readyz", "", nil); c != 200 {
		t.Fatalf("/readyz on a current schema: %d %s", c, body)
	}
	if _, err := r.st.pool.Exec(ctx, "UPDATE steward_schema SET version = version + 1"); err != nil {
		t.Fatal(err)
	}
	c, body := call(t, ctx, "GET", r.url+"/readyz", "", nil)
	if c != http.StatusServiceUnavailable || !bytes.Contains(body, []byte("schema_newer")) {
		t.Fatalf("/readyz on a newer schema: got %d %s; want 503 schema_newer", c, body)
	}
	c, body = call(t, ctx, "PUT", r.url+"/v1/hosts/pve-a/desired", opTok, []byte(doc))
	if c != http.StatusServiceUnavailable || !bytes.Contains(body, []byte("refuses writes")) {
		t.Fatalf("PUT on a newer schema: got %d %s; want 503 saying the replica refuses writes", c, body)
	}
	if c, body := call(t, ctx, "GET", r.url+"/v1/hosts/pve-a/desired", opTok, nil); c != 200 {
		t.Fatalf("a read on a newer schema: got %d %s; want 200", c, body)
	}
}
