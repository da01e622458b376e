// Command clones measures the time from a desired entry to a running
// guest for many clones of one template on one node (issue 12), against
// the simulator, as a ratio to the serial ideal measured in the same run.
//
// For each kind (a QEMU template and a container template) it runs the
// agent's engine (journal, per-guest queue, gate, executor, as `steward
// agent` builds it) against an in-process simulator on loopback whose
// clone tasks take -clone and other tasks -task. A desired document
// naming one clone is converged -singles times; the median time from the
// document to the guest running, times -n, is the serial ideal. Then a
// document naming -n clones of the same template is converged, the ticks
// back to back (the agent's poll interval, which would separate them, is
// left out: it adds the same wait to the single clone and to the batch).
// It prints the total, each guest's time from the document to running
// (p50, p99), the ratio to the serial ideal, how many clone tasks ran at
// once at most (from the clone tasks' end times and their fixed
// duration), and what bounded it: the agent's queue concurrency (QEMU:
// qemu-server takes only a shared lock on a template that does not run,
// so its clones may run in parallel) or the template lock (pve-container
// locks a container template for the whole clone and refuses another
// clone meanwhile, so the agent runs them one after another).
//
//	go run ./bench/clones -n 50 -clone 100ms
//
// It is a benchmark, not a test: it asserts nothing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/backoff"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/executor"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/guestq"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/plan"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/sim"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "clones:", err)
		os.Exit(1)
	}
}

// config is the benchmark's flags.
type config struct {
	n, singles, concurrency int
	clone, task             time.Duration
	poll, pollMax           time.Duration
	kinds                   []guest.Kind
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("clones", flag.ContinueOnError)
	var c config
	var kinds string
	fs.IntVar(&c.n, "n", 50, "clones of one template in one desired document")
	fs.IntVar(&c.singles, "singles", 3, "single-clone runs; their median times -n is the serial ideal")
	fs.IntVar(&c.concurrency, "concurrency", guestq.DefaultConcurrency, "the agent's queue concurrency (jobs at once across guests)")
	fs.DurationVar(&c.clone, "clone", 100*time.Millisecond, "how long the simulator's clone task runs")
	fs.DurationVar(&c.task, "task", 10*time.Millisecond, "how long the simulator's other tasks (start) run")
	fs.DurationVar(&c.poll, "poll", 5*time.Millisecond, "the agent's first task status poll interval (the agent's default 200ms is to a clone of minutes what this is to -clone)")
	fs.DurationVar(&c.pollMax, "poll-max", 20*time.Millisecond, "the agent's longest task status poll interval")
	fs.StringVar(&kinds, "kinds", "qemu,lxc", "template kinds to clone, comma-separated")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.n < 1 || c.singles < 1 || c.clone <= 0 || c.task <= 0 {
		return errors.New("-n and -singles must be at least 1, -clone and -task positive")
	}
	for _, k := range strings.Split(kinds, ",") {
		kind, err := guest.ParseKind(strings.TrimSpace(k))
		if err != nil {
			return fmt.Errorf("-kinds: %w", err)
		}
		c.kinds = append(c.kinds, kind)
	}
	fmt.Printf("clones: %d clones of one template on one node; clone task %s, other tasks %s, queue concurrency %d\n",
		c.n, c.clone, c.task, c.concurrency)
	for _, kind := range c.kinds {
		var singles []time.Duration
		for range c.singles {
			r, err := converge(ctx, c, kind, 1)
			if err != nil {
				return fmt.Errorf("%s single clone: %w", kind, err)
			}
			singles = append(singles, r.total)
		}
		slices.Sort(singles)
		single := singles[len(singles)/2]
		r, err := converge(ctx, c, kind, c.n)
		if err != nil {
			return fmt.Errorf("%s, %d clones: %w", kind, c.n, err)
		}
		ideal := time.Duration(c.n) * single
		var bound string
		switch {
		case kind == guest.LXC && r.maxAtOnce == 1:
			bound = "the template lock (pve-container locks the template for each whole clone: one at a time)"
		case r.maxAtOnce == c.concurrency:
			bound = fmt.Sprintf("the agent's queue concurrency (%d clones at once; qemu-server's shared template lock allows more)", c.concurrency)
		default:
			bound = fmt.Sprintf("neither (%d clones at once at most, queue concurrency %d)", r.maxAtOnce, c.concurrency)
		}
		fmt.Printf("%-4s single clone, desired to running: %v (median of %d: %v)\n", kind, round(single), c.singles, roundAll(singles))
		fmt.Printf("%-4s %d clones: total %v in %d ticks; per guest desired to running p50 %v p99 %v; clone tasks at once at most: %d\n",
			kind, c.n, round(r.total), r.ticks, round(percentile(r.perGuest, 50)), round(percentile(r.perGuest, 99)), r.maxAtOnce)
		fmt.Printf("%-4s %d clones / serial ideal (%d x single, %v): %.2fx; bounded by %s\n",
			kind, c.n, c.n, round(ideal), float64(r.total)/float64(ideal), bound)
	}
	return nil
}

// result is one convergence of n clones.
type result struct {
	total     time.Duration   // from the document to the last guest running
	perGuest  []time.Duration // each guest's time from the document to running
	ticks     int
	maxAtOnce int // clone tasks running at once, at most
}

// converge starts a simulator with the templates, an engine on a fresh
// journal, and ticks the desired document naming n clones of kind's
// template until every clone runs.
func converge(ctx context.Context, c config, kind guest.Kind, n int) (result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := sim.New(sim.Options{Templates: true, TaskDuration: c.task, CloneDuration: c.clone, LockTimeout: 10 * time.Second})
	if err != nil {
		return result{}, err
	}
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	served := make(chan error, 1)
	go func() { served <- sim.Serve(ctx, s, ln) }()
	defer func() { cancel(); <-served }()

	tok, err := pve.ParseToken(s.Token())
	if err != nil {
		return result{}, err
	}
	client, err := pve.New(pve.Options{URL: "https://" + ln.Addr().String(), Token: tok, Fingerprint: s.Fingerprint()})
	if err != nil {
		return result{}, err
	}
	dir, err := os.MkdirTemp("", "steward-bench-clones-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	j, err := journal.Open(dir, journal.Options{})
	if err != nil {
		return result{}, err
	}
	defer j.Close()
	q := guestq.New(guestq.Options{Concurrency: c.concurrency})
	defer q.Close(context.WithoutCancel(ctx))
	eng := &engine.Engine{
		Host: "pve", Node: s.Node(), PVE: client, Journal: j, Queue: q, TaskUser: tok.ID,
		Gate:    &gate.Gate{Host: "pve"},
		Exec:    &executor.Executor{Client: client, Node: s.Node(), Wait: pve.WaitOptions{Initial: c.poll, Max: c.pollMax}},
		Backoff: backoff.NewTracker(backoff.Policy{Initial: c.clone, Max: 10 * c.clone}, nil, nil),
		Plan:    plan.Options{ShutdownTimeout: time.Minute},
	}
	if err := eng.Recover(ctx); err != nil {
		return result{}, err
	}

	src, nameKey := sim.TemplateVMID, "name"
	if kind == guest.LXC {
		src, nameKey = sim.TemplateCTVMID, "hostname"
	}
	var b strings.Builder
	b.WriteString("apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve:\n    guests:\n")
	for i := range n {
		id := 1000 + i
		fmt.Fprintf(&b, "      %d:\n        kind: %s\n        state: running\n        create: {clone: %d}\n        config: {%s: clone-%d, cores: 2}\n",
			id, kind, src, nameKey, id)
	}
	doc, err := desired.Parse([]byte(b.String()))
	if err != nil {
		return result{}, fmt.Errorf("the benchmark's desired document: %w", err)
	}
	want := doc.ForHost("pve")

	t0 := time.Now()
	var r result
	for {
		if r.ticks++; r.ticks > 10+4*n {
			return result{}, fmt.Errorf("not converged after %d ticks", r.ticks-1)
		}
		rep, err := eng.Tick(ctx, want, nil)
		if err != nil {
			return result{}, err
		}
		for _, res := range rep.Results {
			if res.Err != nil {
				return result{}, fmt.Errorf("tick %d: %s: %w", r.ticks, res.Action, res.Err)
			}
		}
		if len(rep.Pending) > 0 {
			return result{}, fmt.Errorf("tick %d: %s held for a signature: %s", r.ticks, rep.Pending[0].Action, rep.Pending[0].Reason)
		}
		if running(s, n) {
			break
		}
	}
	started := map[int]time.Time{}
	var cloneEnds []time.Time
	for _, m := range s.Mutations() {
		switch m.Op {
		case "start":
			started[m.VMID] = m.Time
		case "clone":
			cloneEnds = append(cloneEnds, m.Time)
		}
	}
	for i := range n {
		at, ok := started[1000+i]
		if !ok {
			return result{}, fmt.Errorf("guest %d runs but no start of it was recorded", 1000+i)
		}
		r.perGuest = append(r.perGuest, at.Sub(t0))
	}
	r.total = slices.Max(r.perGuest)
	r.maxAtOnce = maxOverlap(cloneEnds, c.clone)
	return r, nil
}

// running reports whether the n clones all run.
func running(s *sim.Sim, n int) bool {
	for i := range n {
		if g, ok := s.Guest(1000 + i); !ok || g.Status != "running" {
			return false
		}
	}
	return true
}

// maxOverlap is the most intervals [end-d, end) that overlap.
func maxOverlap(ends []time.Time, d time.Duration) int {
	type ev struct {
		at    time.Time
		delta int
	}
	var evs []ev
	for _, e := range ends {
		evs = append(evs, ev{e.Add(-d), 1}, ev{e, -1})
	}
	slices.SortFunc(evs, func(a, b ev) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // an end before a start at the same instant
	})
	cur, most := 0, 0
	for _, e := range evs {
		cur += e.delta
		most = max(most, cur)
	}
	return most
}

// percentile is the p-th percentile (nearest rank) of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	i := (p*len(s)+99)/100 - 1
	return s[max(i, 0)]
}

func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = round(d)
	}
	return out
}
