package hub

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/wire"
)

// replica starts another hub on e's store (another replica), with opt.
func (e *env) replica(opt Options) *env {
	e.t.Helper()
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(e.log, nil))
	}
	h := New(e.st, opt)
	srv := httptest.NewServer(h.Handler())
	e.t.Cleanup(func() { h.Shutdown(); srv.Close() })
	return &env{t: e.t, hub: h, url: srv.URL, opTok: e.opTok, log: e.log, st: e.st}
}

// deafNotifier loses every notification: Publish reaches no one.
type deafNotifier struct{}

func (deafNotifier) Publish(context.Context, string, int64) error { return nil }
func (deafNotifier) Subscribe(ctx context.Context, _ func(string, int64)) error {
	<-ctx.Done()
	return nil
}

// pollOn starts a long-poll on e for host after generation after and
// returns the channel its answer arrives on.
func pollOn(e *env, host, tok string, after int64) <-chan wire.Desired {
	ch := make(chan wire.Desired, 1)
	go func() {
		c, b := e.do("GET", "/v1/agent/hosts/"+host+"/desired?after="+itoa(after)+"&wait=10m", tok, nil)
		var d wire.Desired
		if c != 200 || json.Unmarshal(b, &d) != nil {
			e.t.Errorf("long-poll: got %d %s; want 200", c, b)
		}
		ch <- d
	}()
	return ch
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// answer waits for a long-poll's answer, failing the test when the
// context ends first (the poll was never woken).
func answer(t *testing.T, ch <-chan wire.Desired, what string) wire.Desired {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	select {
	case d := <-ch:
		return d
	case <-ctx.Done():
		t.Fatalf("%s: the long-poll was never answered", what)
		return wire.Desired{}
	}
}

// TestNotifierWakesOtherHub: a PUT on hub A answers a long-poll held on
// hub B when they share a Notifier, with no re-check to fall back on.
func TestNotifierWakesOtherHub(t *testing.T) {
	n := &LocalNotifier{}
	a := newEnv(t).replica(Options{Notifier: n, Recheck: time.Hour})
	b := a.replica(Options{Notifier: n, Recheck: time.Hour})
	tok := a.enroll("pve-a")
	ch := pollOn(b, "pve-a", tok, 0)
	waitHeld(t, b.hub, 1)
	a.must(200, "PUT", "/v1/hosts/pve-a/desired", a.opTok, []byte(docA), nil)
	if d := answer(t, ch, "poll on B after a PUT on A"); d.Generation != 1 {
		t.Fatalf("poll on B: got generation %d; want 1", d.Generation)
	}
}

// TestRecheckCoversLostNotification: with every notification lost, a
// long-poll held on hub B still answers a PUT on hub A, at B's next
// re-check.
func TestRecheckCoversLostNotification(t *testing.T) {
	a := newEnv(t).replica(Options{Notifier: deafNotifier{}, Recheck: time.Hour})
	b := a.replica(Options{Notifier: deafNotifier{}, Recheck: 20 * time.Millisecond})
	tok := a.enroll("pve-a")
	ch := pollOn(b, "pve-a", tok, 0)
	waitHeld(t, b.hub, 1)
	a.must(200, "PUT", "/v1/hosts/pve-a/desired", a.opTok, []byte(docA), nil)
	if d := answer(t, ch, "poll on B with notifications lost"); d.Generation != 1 {
		t.Fatalf("poll on B: got generation %d; want 1", d.Generation)
	}
}

// TestStaleNotificationKeepsPollHeld: a notification of a generation the
// poller already holds does not answer its poll; the next real change
// does.
func TestStaleNotificationKeepsPollHeld(t *testing.T) {
	n := &LocalNotifier{}
	a := newEnv(t).replica(Options{Notifier: n, Recheck: time.Hour})
	tok := a.enroll("pve-a")
	a.must(200, "PUT", "/v1/hosts/pve-a/desired", a.opTok, []byte(docA), nil)
	ch := pollOn(a, "pve-a", tok, 1)
	waitHeld(t, a.hub, 1)
	n.Publish(t.Context(), "pve-a", 1) // a duplicate, or a late one
	a.hub.changed("pve-a", 0)
	// Only a real change wakes it. (A wrong wake-up would answer with
	// generation 1 below.)
	a.must(200, "PUT", "/v1/hosts/pve-a/desired", a.opTok, []byte(strings.Replace(docA, "cores: 2", "cores: 4", 1)), nil)
	if d := answer(t, ch, "poll after a stale notification"); d.Generation != 2 {
		t.Fatalf("poll: got generation %d; want 2 (a stale notification answered it)", d.Generation)
	}
}
