package engine_test

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/backoff"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/executor"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guestq"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/plan"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/sim/simtest"
)

// harness is an engine wired to a real in-process simulator on loopback,
// with its journal in a temp dir: the same parts `steward agent` builds.
type harness struct {
	t      testing.TB
	srv    *simtest.Server
	client *pve.Client
	eng    *engine.Engine
	j      *journal.Journal
	dir    string

	requests *countingTransport
	taskUser string // the token the client uses, as UPIDs name it
	// now, when set, is the engine's clock from the next open on.
	now func() time.Time
	// gate, when set, is the engine's gate from the next open on.
	gate *gate.Gate
	// backoff is the clock of the guests' backoff, kept across open. It
	// stands still until a test moves it (passBackoff), so whether a tick
	// finds a guest backing off after a failure never depends on how long
	// the ticks before it took on the wall clock.
	backoff *fakeClock
}

// harnessBackoff is every backoff delay of a harness engine (no jitter).
const harnessBackoff = time.Second

// passBackoff moves the backoff clock past every backoff begun so far:
// the next tick may retry a guest that failed, as a tick after the
// agent's interval would.
func (h *harness) passBackoff() { h.backoff.Add(harnessBackoff) }

type countingTransport struct {
	base http.RoundTripper
	n    atomic.Int64
	// fault, when set, answers every request instead of the simulator;
	// pass calls the simulator.
	fault atomic.Pointer[func(r *http.Request, pass func() (*http.Response, error)) (*http.Response, error)]
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	if f := c.fault.Load(); f != nil {
		return (*f)(r, func() (*http.Response, error) { return c.base.RoundTrip(r) })
	}
	return c.base.RoundTrip(r)
}

// setFault installs f as the transport's fault (nil removes it).
func (h *harness) setFault(f func(r *http.Request, pass func() (*http.Response, error)) (*http.Response, error)) {
	if f == nil {
		h.requests.fault.Store(nil)
		return
	}
	h.requests.fault.Store(&f)
}

func newHarness(t testing.TB, opts sim.Options, guests ...sim.GuestSpec) *harness {
	t.Helper()
	if opts.TaskDuration == 0 {
		opts.TaskDuration = 5 * time.Millisecond
	}
	srv := simtest.Start(t, opts)
	for _, g := range guests {
		if err := srv.Sim.AddGuest(g); err != nil {
			t.Fatalf("AddGuest(%d): %v", g.VMID, err)
		}
	}
	tok, err := pve.ParseToken(srv.Token)
	if err != nil {
		t.Fatal(err)
	}
	// The client trusts exactly the simulator's certificate (simtest's
	// transport) and counts the requests it sends.
	counter := &countingTransport{base: srv.Client.Transport}
	client, err := pve.New(pve.Options{URL: srv.URL, Token: tok, HTTPClient: &http.Client{Transport: counter}})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, srv: srv, client: client, dir: t.TempDir(), requests: counter, taskUser: tok.ID,
		backoff: &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}
	h.open()
	return h
}

// open (re)builds the engine over the journal in h.dir, as an agent start
// does, and runs recovery.
func (h *harness) open() {
	h.t.Helper()
	j, err := journal.Open(h.dir, journal.Options{})
	if err != nil {
		h.t.Fatalf("journal.Open: %v", err)
	}
	q := guestq.New(guestq.Options{})
	h.t.Cleanup(func() {
		q.Close(h.t.Context())
		j.Close()
	})
	h.j = j
	node := h.srv.Sim.Node()
	h.eng = &engine.Engine{
		Host: "pve", Node: node, PVE: h.client, Journal: j, Queue: q, TaskUser: h.taskUser,
		Gate:    &gate.Gate{Host: "pve"},
		Exec:    &executor.Executor{Client: h.client, Node: node, Wait: pve.WaitOptions{Initial: time.Millisecond, Max: 10 * time.Millisecond}},
		Backoff: backoff.NewTracker(backoff.Policy{Initial: harnessBackoff, Max: harnessBackoff}, h.backoff.Now, nil),
		Plan:    plan.Options{ShutdownTimeout: 5 * time.Second},
		Now:     h.now,
	}
	if h.gate != nil {
		h.eng.Gate = h.gate
	}
	if err := h.eng.Recover(h.t.Context()); err != nil {
		h.t.Fatalf("Recover: %v", err)
	}
}

func (h *harness) tick(want *desired.Host, jobs ...signedop.Job) engine.Report {
	h.t.Helper()
	rep, err := h.eng.Tick(h.t.Context(), want, jobs)
	if err != nil {
		h.t.Fatalf("Tick: %v", err)
	}
	return rep
}

// mutations returns the simulator's mutation record as "op vmid" strings.
func (h *harness) mutations() []string {
	var out []string
	for _, m := range h.srv.Sim.Mutations() {
		out = append(out, m.Op+" "+strconv.Itoa(m.VMID))
	}
	return out
}

func mustParse(t testing.TB, doc string) *desired.Host {
	t.Helper()
	d, err := desired.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("desired.Parse: %v", err)
	}
	return d.ForHost("pve")
}
