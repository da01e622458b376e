package hubclient_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/tlspin"
)

// replicas starts n hub servers on one store (replicas as a shared
// database makes them) behind loopback TLS listeners. httptest's servers
// all present the same certificate, as pinned replicas must.
func replicas(t *testing.T, n int) (srvs []*httptest.Server, fp, opTok string) {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	opTok = hub.NewToken("stwo_")
	if err := st.CreateOperator(t.Context(), "alice", store.HashToken(opTok)); err != nil {
		t.Fatal(err)
	}
	for range n {
		h := hub.New(st, hub.Options{})
		srv := httptest.NewTLSServer(h.Handler())
		t.Cleanup(func() { h.Shutdown(); srv.Close() })
		srvs = append(srvs, srv)
	}
	return srvs, tlspin.Of(srvs[0].Certificate().Raw), opTok
}

// deadURL is a loopback address nothing listens on.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "https://" + addr
}

func TestFailoverToALiveReplica(t *testing.T) {
	srvs, fp, opTok := replicas(t, 2)
	unavailable := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"this replica's schema is older","code":"not_ready"}`, http.StatusServiceUnavailable)
	}))
	t.Cleanup(unavailable.Close)
	urls := []string{deadURL(t), unavailable.URL, srvs[0].URL, srvs[1].URL}
	live := map[string]bool{srvs[0].URL: true, srvs[1].URL: true}
	// Whichever replica a client starts at (a random one), every call is
	// answered by a live replica, and the client then stays there.
	for i := range 12 {
		var mu sync.Mutex
		var moves []string
		c, err := hubclient.New(hubclient.Options{URL: strings.Join(urls, ", "), Fingerprint: fp, Token: opTok,
			OnFailover: func(from, to string, err error) {
				mu.Lock()
				moves = append(moves, from+" -> "+to+": "+err.Error())
				mu.Unlock()
			}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.JSON(t.Context(), http.MethodGet, "/v1/hosts", nil, nil, nil); err != nil {
			t.Fatalf("client %d: %v (moves %q)", i, err, moves)
		}
		at := c.URL()
		if !live[at] {
			t.Fatalf("client %d: answered, but URL() is %s; want a live replica", i, at)
		}
		mu.Lock()
		n := len(moves)
		mu.Unlock()
		if err := c.JSON(t.Context(), http.MethodGet, "/v1/hosts", nil, nil, nil); err != nil || c.URL() != at {
			t.Fatalf("client %d: second call: %v at %s; want an answer from %s again", i, err, c.URL(), at)
		}
		if len(moves) != n {
			t.Fatalf("client %d: the second call moved again: %q", i, moves[n:])
		}
		for _, m := range moves {
			if strings.Contains(m, opTok) {
				t.Fatalf("a failover error carries the token: %s", m)
			}
		}
	}
	// A hub error that is the request's fault is not retried elsewhere.
	moved := false
	c, _ := hubclient.New(hubclient.Options{URL: srvs[0].URL + "," + srvs[1].URL, Fingerprint: fp, Token: opTok,
		OnFailover: func(from, to string, err error) { moved = true }})
	if err := c.JSON(t.Context(), http.MethodGet, "/v1/hosts/nope", nil, nil, nil); hubclient.StatusOf(err) != http.StatusNotFound || moved {
		t.Fatalf("got %v (moved to another replica: %v); want the hub's 404 from the first", err, moved)
	}
	// A replica killed: the other answers.
	srvs[0].Close()
	for range 4 {
		if err := c.JSON(t.Context(), http.MethodGet, "/v1/hosts", nil, nil, nil); err != nil || c.URL() != srvs[1].URL {
			t.Fatalf("with one replica gone: %v at %s; want an answer from %s", err, c.URL(), srvs[1].URL)
		}
	}
	// Every replica gone: the error says so and nothing hangs.
	srvs[1].Close()
	err := c.JSON(t.Context(), http.MethodGet, "/v1/hosts", nil, nil, nil)
	var te *hubclient.TransportError
	if !errors.As(err, &te) {
		t.Fatalf("with every replica gone: got %v; want a TransportError", err)
	}
}

// A replica that accepts requests and never answers is left once a call
// to it runs out of time: the next call goes to the next replica.
func TestFailoverAfterATimeout(t *testing.T) {
	srvs, fp, opTok := replicas(t, 1)
	release := make(chan struct{})
	hung := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release); hung.Close() })
	timedOut := false
	for i := 0; i < 64 && !timedOut; i++ { // each client starts at a random replica
		c, err := hubclient.New(hubclient.Options{URL: hung.URL + "," + srvs[0].URL, Fingerprint: fp, Token: opTok})
		if err != nil {
			t.Fatal(err)
		}
		before := c.URL()
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		err = c.JSON(ctx, http.MethodGet, "/v1/hosts", nil, nil, nil)
		cancel()
		switch {
		case err == nil:
			continue
		case !errors.Is(err, context.DeadlineExceeded):
			t.Fatalf("a call that ran out of time: %v; want the deadline", err)
		case c.URL() == before:
			t.Fatalf("a call to %s ran out of time and the next call starts there again", before)
		case before != hung.URL:
			continue // the live replica was slower than the deadline (a busy machine): it was left too
		}
		timedOut = true
		if err := c.JSON(t.Context(), http.MethodGet, "/v1/hosts", nil, nil, nil); err != nil || c.URL() != srvs[0].URL {
			t.Fatalf("the call after: %v at %s; want an answer from %s", err, c.URL(), srvs[0].URL)
		}
	}
	if !timedOut {
		t.Fatal("no client of 64 started at the hung replica")
	}
}

func TestParseURLs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int // replicas; 0 means refused
	}{
		{"https://a.example:8440", 1},
		{"https://a.example:8440,https://b.example:8440", 2},
		{" https://a.example:8440 , https://b.example:8440 ,https://c.example", 3},
		{"https://a.example:8440,https://a.example:8440/", 0},
		{"https://a.example:8440,", 0},
		{",https://a.example:8440", 0},
		{"https://a.example:8440,http://b.example:8440", 0},
		{strings.Repeat("https://a.example,", hubclient.MaxURLs) + "https://z.example", 0},
	} {
		us, err := hubclient.ParseURLs(tc.in)
		switch {
		case tc.want == 0 && err == nil:
			t.Errorf("ParseURLs(%q) = %v; want an error", tc.in, us)
		case tc.want != 0 && (err != nil || len(us) != tc.want):
			t.Errorf("ParseURLs(%q) = %v, %v; want %d URLs", tc.in, us, err, tc.want)
		}
	}
}

func TestReplicasEachTalkToOne(t *testing.T) {
	srvs, fp, opTok := replicas(t, 1)
	dead := deadURL(t)
	c, err := hubclient.New(hubclient.Options{URL: dead + "," + srvs[0].URL, Fingerprint: fp, Token: opTok})
	if err != nil {
		t.Fatal(err)
	}
	reps := c.Replicas()
	if len(reps) != 2 || reps[0].URL() != dead || reps[1].URL() != srvs[0].URL {
		t.Fatalf("Replicas: got %d; want one per URL in order", len(reps))
	}
	if err := reps[0].JSON(t.Context(), http.MethodGet, "/v1/hosts", nil, nil, nil); err == nil {
		t.Fatal("the replica client of a dead URL answered: it moved to another replica")
	}
	if err := reps[1].JSON(t.Context(), http.MethodGet, "/v1/hosts", nil, nil, nil); err != nil {
		t.Fatalf("the live replica: %v", err)
	}
}
