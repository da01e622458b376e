package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/wire"
)

// fakeTransport answers hub requests in memory (so a synctest bubble
// controls every wait): down makes every request fail as an unreachable
// hub does; otherwise answer writes the desired envelope.
type fakeTransport struct {
	mu     sync.Mutex
	down   bool
	answer func() wire.Desired
	at     []time.Time // when each desired request arrived
}

func (f *fakeTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	f.at = append(f.at, time.Now())
	down, answer := f.down, f.answer
	f.mu.Unlock()
	if down {
		return nil, errors.New("connection refused")
	}
	b, _ := wire.EncodeDesired(answer())
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(b)), Request: r}, nil
}

func (f *fakeTransport) times() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.at...)
}

func newPollHub(t *testing.T, ft *fakeTransport) *Hub {
	t.Helper()
	c, err := hubclient.New(hubclient.Options{URL: "https://hub.invalid:8440", Token: "stwh_x", HTTPClient: &http.Client{Transport: ft}})
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHub(HubOptions{Client: c, Host: "pve"})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestPollBacksOffWhileTheHubIsAway: an unreachable hub is retried with
// growing, jittered delays capped at DefaultHubBackoff.Max; once it
// answers, the new generation is taken and the tick loop woken.
func TestPollBacksOffWhileTheHubIsAway(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ft := &fakeTransport{down: true}
		h := newPollHub(t, ft)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); h.poll(ctx) }()

		time.Sleep(30 * time.Minute)
		at := ft.times()
		if len(at) < 10 || len(at) > 30 {
			t.Fatalf("%d attempts in 30 minutes against an unreachable hub; want a backoff (about 1s doubling, capped at 3m)", len(at))
		}
		var longest time.Duration
		for i := 1; i < len(at); i++ {
			gap := at[i].Sub(at[i-1])
			if gap > DefaultHubBackoff.Max {
				t.Errorf("attempt %d came %v after the one before; want at most %v", i, gap, DefaultHubBackoff.Max)
			}
			longest = max(longest, gap)
		}
		if longest < DefaultHubBackoff.Max/2 {
			t.Errorf("longest gap %v; want the backoff to have reached toward its cap %v", longest, DefaultHubBackoff.Max)
		}

		doc := []byte(`{"apiVersion":"steward/v1","kind":"Fleet","hosts":{"pve":{"guests":{"101":{"kind":"qemu","config":{"cores":"2"}}}}}}`)
		ft.mu.Lock()
		ft.down = false
		ft.answer = func() wire.Desired { return wire.Desired{Host: "pve", Generation: 4, Document: doc} }
		ft.mu.Unlock()
		select {
		case <-h.wake():
		case <-time.After(DefaultHubBackoff.Max + time.Second):
			t.Fatal("the tick loop was not woken once the hub answered")
		}
		if h.Generation() != 4 {
			t.Errorf("generation %d; want 4", h.Generation())
		}
		cancel()
		<-done
	})
}

// TestPollDoesNotSpin: a hub that answers every long poll at once (a
// misbehaving or hostile one) gets at most one poll per minPollGap, and
// one that keeps serving what the agent refuses is backed off from.
func TestPollDoesNotSpin(t *testing.T) {
	for _, tt := range []struct {
		name string
		d    wire.Desired
		max  int
	}{
		{"same generation at once", wire.Desired{Host: "pve"}, 61},
		{"another host's document", wire.Desired{Host: "other", Generation: 9, Document: []byte(`{"apiVersion":"steward/v1","kind":"Fleet"}`)}, 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ft := &fakeTransport{answer: func() wire.Desired { return tt.d }}
				h := newPollHub(t, ft)
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan struct{})
				go func() { defer close(done); h.poll(ctx) }()
				time.Sleep(time.Minute)
				cancel()
				<-done
				if n := len(ft.times()); n > tt.max || n < 2 {
					t.Errorf("%d polls in a minute; want 2..%d", n, tt.max)
				}
				if h.Generation() != 0 {
					t.Errorf("generation %d; want nothing accepted", h.Generation())
				}
			})
		})
	}
}

// FuzzHubAccept: whatever a hub sends, the agent never takes a document
// for another host or at an older generation, and never panics.
func FuzzHubAccept(f *testing.F) {
	f.Add([]byte(`{"host":"pve","generation":6,"document":{"apiVersion":"steward/v1","kind":"Fleet","hosts":{"pve":{"guests":{"101":{"kind":"qemu","config":{"cores":"2"}}}}}}}`))
	f.Add([]byte(`{"host":"pve","generation":3,"document":{"apiVersion":"steward/v1","kind":"Fleet"}}`))
	f.Add([]byte(`{"host":"pve","generation":7,"document":{"apiVersion":"steward/v1","kind":"Fleet","hosts":{"other":{}}}}`))
	f.Add([]byte(`{"host":"other","generation":8}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := wire.DecodeDesired(b)
		if err != nil {
			return
		}
		c, _ := hubclient.New(hubclient.Options{URL: "https://hub.invalid", HTTPClient: http.DefaultClient})
		h, _ := NewHub(HubOptions{Client: c, Host: "pve"})
		first := wire.Desired{Host: "pve", Generation: 5, Document: []byte(`{"apiVersion":"steward/v1","kind":"Fleet"}`)}
		if _, err := h.accept(first); err != nil {
			t.Fatal(err)
		}
		changed, err := h.accept(d)
		if err != nil || !changed {
			if h.Generation() != 5 {
				t.Fatalf("a refused or unchanged answer moved the generation to %d", h.Generation())
			}
			return
		}
		if d.Host != "pve" || d.Generation <= 5 {
			t.Fatalf("accepted %s: host %q generation %d", b, d.Host, d.Generation)
		}
		doc, _ := h.Desired(t.Context())
		for id := range doc.Hosts {
			if id != "pve" {
				t.Fatalf("accepted a document naming host %q", id)
			}
		}
	})
}
