package guestq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// submit submits j and fails the test on error.
func submit(t *testing.T, q *Queue, j Job) *Ticket {
	t.Helper()
	tk, err := q.Submit(j)
	if err != nil {
		t.Fatalf("Submit(vmid %d, key %q): %v", j.VMID, j.Key, err)
	}
	return tk
}

// closeQueue drains q, failing the test if that does not succeed.
func closeQueue(t *testing.T, q *Queue) {
	t.Helper()
	if err := q.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func done(tk *Ticket) bool {
	select {
	case <-tk.Done():
		return true
	default:
		return false
	}
}

// inflight tracks how many jobs run at once, overall and per vmid.
type inflight struct {
	mu      sync.Mutex
	now     int
	max     int
	perVMID map[int]int
	maxVMID int // highest concurrency seen for any single vmid
}

func (f *inflight) enter(vmid int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.perVMID == nil {
		f.perVMID = make(map[int]int)
	}
	f.now++
	f.max = max(f.max, f.now)
	f.perVMID[vmid]++
	f.maxVMID = max(f.maxVMID, f.perVMID[vmid])
}

func (f *inflight) leave(vmid int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now--
	f.perVMID[vmid]--
}

func (f *inflight) current() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func TestPerVMIDOrderAndCap(t *testing.T) {
	for _, conc := range []int{1, 3, 8} {
		t.Run(fmt.Sprintf("concurrency=%d", conc), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const vmids, perVMID = 12, 40
				q := New(Options{Concurrency: conc})
				var fl inflight
				var mu sync.Mutex
				order := make(map[int][]int)
				var tickets []*Ticket
				for seq := range perVMID {
					for v := range vmids {
						vmid := 100 + v
						// Varying durations shuffle which guests finish first.
						d := time.Duration((seq*7+v*13)%5+1) * time.Millisecond
						tickets = append(tickets, submit(t, q, Job{VMID: vmid, Run: func(ctx context.Context) error {
							fl.enter(vmid)
							defer fl.leave(vmid)
							time.Sleep(d)
							mu.Lock()
							order[vmid] = append(order[vmid], seq)
							mu.Unlock()
							return nil
						}}))
					}
				}
				for _, tk := range tickets {
					if err := tk.Wait(t.Context()); err != nil {
						t.Fatalf("job: %v", err)
					}
				}
				closeQueue(t, q)
				if fl.max != conc {
					t.Errorf("max jobs in flight = %d; want %d (the cap, reached)", fl.max, conc)
				}
				if fl.maxVMID != 1 {
					t.Errorf("max jobs in flight for one vmid = %d; want 1", fl.maxVMID)
				}
				for v := range vmids {
					got := order[100+v]
					if len(got) != perVMID {
						t.Fatalf("vmid %d ran %d jobs; want %d", 100+v, len(got), perVMID)
					}
					for i, s := range got {
						if s != i {
							t.Fatalf("vmid %d run order %v; want 0..%d in submit order", 100+v, got, perVMID-1)
						}
					}
				}
			})
		})
	}
}

func TestDefaultConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New(Options{})
		gate := make(chan struct{})
		var fl inflight
		for v := range 10 {
			submit(t, q, Job{VMID: v + 1, Run: func(ctx context.Context) error {
				fl.enter(v + 1)
				defer fl.leave(v + 1)
				<-gate
				return nil
			}})
		}
		synctest.Wait()
		if got := fl.current(); got != DefaultConcurrency {
			t.Errorf("jobs running with 10 guests waiting = %d; want %d", got, DefaultConcurrency)
		}
		if got := q.Len(); got != 10 {
			t.Errorf("Len = %d; want 10", got)
		}
		close(gate)
		closeQueue(t, q)
		if got := q.Len(); got != 0 {
			t.Errorf("Len after drain = %d; want 0", got)
		}
	})
}

func TestOtherVMIDsProgressWhileOneBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New(Options{Concurrency: 2})
		release := make(chan struct{})
		blocked := submit(t, q, Job{VMID: 101, Run: func(ctx context.Context) error {
			<-release
			return nil
		}})
		secondRan := false
		second := submit(t, q, Job{VMID: 101, Run: func(ctx context.Context) error {
			secondRan = true
			return nil
		}})
		var others []*Ticket
		for v := 102; v < 120; v++ {
			others = append(others, submit(t, q, Job{VMID: v, Run: func(ctx context.Context) error {
				time.Sleep(time.Second)
				return nil
			}}))
		}
		for i, tk := range others {
			if err := tk.Wait(t.Context()); err != nil {
				t.Fatalf("vmid %d: %v", 102+i, err)
			}
		}
		synctest.Wait()
		if done(blocked) || done(second) || secondRan {
			t.Fatalf("vmid 101: first done %v, second done %v, second ran %v; want all false while the first blocks",
				done(blocked), done(second), secondRan)
		}
		close(release)
		if err := second.Wait(t.Context()); err != nil {
			t.Fatalf("second job of 101: %v", err)
		}
		if !secondRan {
			t.Errorf("second job of 101 did not run")
		}
		closeQueue(t, q)
	})
}

func TestGuestsTakeTurns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New(Options{Concurrency: 1})
		gate := make(chan struct{})
		var mu sync.Mutex
		var order []string
		rec := func(name string, wait bool) func(context.Context) error {
			return func(context.Context) error {
				if wait {
					<-gate
				}
				mu.Lock()
				order = append(order, name)
				mu.Unlock()
				return nil
			}
		}
		submit(t, q, Job{VMID: 1, Run: rec("1a", true)})
		synctest.Wait()
		submit(t, q, Job{VMID: 1, Run: rec("1b", false)})
		submit(t, q, Job{VMID: 1, Run: rec("1c", false)})
		submit(t, q, Job{VMID: 2, Run: rec("2a", false)})
		submit(t, q, Job{VMID: 3, Run: rec("3a", false)})
		close(gate)
		closeQueue(t, q)
		got := strings.Join(order, " ")
		if want := "1a 2a 3a 1b 1c"; got != want {
			t.Errorf("run order %q; want %q (a guest with more work goes to the back)", got, want)
		}
	})
}

func TestCoalesce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New(Options{Concurrency: 1})
		var mu sync.Mutex
		runs := map[string]int{}
		count := func(name string, gate chan struct{}) func(context.Context) error {
			return func(context.Context) error {
				if gate != nil {
					<-gate
				}
				mu.Lock()
				runs[name]++
				mu.Unlock()
				return nil
			}
		}

		// A running job of 101 with key "cfg".
		gate := make(chan struct{})
		running := submit(t, q, Job{VMID: 101, Key: "cfg", Run: count("running", gate)})
		synctest.Wait()

		// A running job is not coalesced with a new submit.
		p1 := submit(t, q, Job{VMID: 101, Key: "cfg", Run: count("p1", nil)})
		if p1 == running {
			t.Fatalf("Submit with the key of a running job returned the running job's ticket; want a new one")
		}
		// A pending identical job is.
		p2 := submit(t, q, Job{VMID: 101, Key: "cfg", Run: count("p2", nil)})
		if p2 != p1 {
			t.Errorf("Submit of a job identical to a pending one returned a new ticket; want the pending job's")
		}
		other := []struct {
			name string
			job  Job
		}{
			{"different key", Job{VMID: 101, Key: "start", Run: count("start", nil)}},
			{"different vmid", Job{VMID: 102, Key: "cfg", Run: count("cfg102", nil)}},
			{"empty key 1", Job{VMID: 101, Run: count("empty1", nil)}},
			{"empty key 2", Job{VMID: 101, Run: count("empty2", nil)}},
		}
		seen := map[*Ticket]string{running: "running", p1: "p1"}
		for _, o := range other {
			tk := submit(t, q, o.job)
			if prev, dup := seen[tk]; dup {
				t.Errorf("%s: got the ticket of %s; want a new ticket", o.name, prev)
			}
			seen[tk] = o.name
		}
		if got := q.Len(); got != 6 {
			t.Errorf("Len = %d; want 6 (1 running + 5 pending, the coalesced submit not counted)", got)
		}
		close(gate)
		closeQueue(t, q)
		want := map[string]int{"running": 1, "p1": 1, "start": 1, "cfg102": 1, "empty1": 1, "empty2": 1}
		if fmt.Sprint(runs) != fmt.Sprint(want) {
			t.Errorf("runs %v; want %v (p2 coalesced into p1, never run)", runs, want)
		}
		if !done(p2) || p2.Err() != nil {
			t.Errorf("coalesced ticket done %v err %v; want done, nil", done(p2), p2.Err())
		}

		// After a keyed job has started, its key is free again.
		q2 := New(Options{Concurrency: 1})
		g2 := make(chan struct{})
		a := submit(t, q2, Job{VMID: 5, Key: "k", Run: count("a", g2)})
		synctest.Wait()
		b := submit(t, q2, Job{VMID: 5, Key: "k", Run: count("b", g2)})
		g2 <- struct{}{} // a finishes, b starts
		synctest.Wait()
		c := submit(t, q2, Job{VMID: 5, Key: "k", Run: count("c", nil)})
		if c == b || c == a {
			t.Errorf("Submit after the pending job started got an old ticket; want a new one")
		}
		close(g2)
		closeQueue(t, q2)
	})
}

func TestCloseDrains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New(Options{Concurrency: 2})
		var mu sync.Mutex
		ran := 0
		var tickets []*Ticket
		for i := range 20 {
			tickets = append(tickets, submit(t, q, Job{VMID: i % 4, Run: func(ctx context.Context) error {
				time.Sleep(time.Duration(i+1) * time.Second)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				mu.Lock()
				ran++
				mu.Unlock()
				return nil
			}}))
		}
		if err := q.Close(t.Context()); err != nil {
			t.Fatalf("Close = %v; want nil after draining", err)
		}
		if ran != 20 {
			t.Errorf("jobs run before Close returned = %d; want 20", ran)
		}
		for i, tk := range tickets {
			if !done(tk) || tk.Err() != nil {
				t.Errorf("ticket %d: done %v err %v; want done, nil", i, done(tk), tk.Err())
			}
		}
		if _, err := q.Submit(Job{VMID: 1, Run: func(context.Context) error { return nil }}); !errors.Is(err, ErrClosed) {
			t.Errorf("Submit after Close = %v; want ErrClosed", err)
		}
		if err := q.Close(t.Context()); err != nil {
			t.Errorf("second Close = %v; want nil", err)
		}
	})
}

func TestSubmitDuringDrainFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New(Options{})
		gate := make(chan struct{})
		submit(t, q, Job{VMID: 1, Run: func(context.Context) error { <-gate; return nil }})
		closed := make(chan error)
		go func() { closed <- q.Close(context.Background()) }()
		synctest.Wait()
		if _, err := q.Submit(Job{VMID: 2, Run: func(context.Context) error { return nil }}); !errors.Is(err, ErrClosed) {
			t.Errorf("Submit while Close drains = %v; want ErrClosed", err)
		}
		select {
		case err := <-closed:
			t.Fatalf("Close returned %v while a job was still running", err)
		default:
		}
		close(gate)
		if err := <-closed; err != nil {
			t.Errorf("Close = %v; want nil", err)
		}
	})
}

func TestCloseCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New(Options{Concurrency: 2})
		started := 0
		var mu sync.Mutex
		slowReturned := false
		// Two running jobs: one honours cancellation at once, one takes 10s
		// more after it; Close must wait for both.
		prompt := submit(t, q, Job{VMID: 1, Run: func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		}})
		slow := submit(t, q, Job{VMID: 2, Run: func(ctx context.Context) error {
			<-ctx.Done()
			time.Sleep(10 * time.Second)
			mu.Lock()
			slowReturned = true
			mu.Unlock()
			return errors.New("slow job gave up")
		}})
		var pending []*Ticket
		for _, vmid := range []int{1, 2, 3, 4} {
			pending = append(pending, submit(t, q, Job{VMID: vmid, Run: func(context.Context) error {
				mu.Lock()
				started++
				mu.Unlock()
				return nil
			}}))
		}
		synctest.Wait()

		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		t0 := time.Now()
		err := q.Close(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "guestq: ") {
			t.Errorf("Close = %v; want a guestq error wrapping context.DeadlineExceeded", err)
		}
		if got, want := time.Since(t0), time.Minute+10*time.Second; got != want {
			t.Errorf("Close took %v (fake time); want %v (deadline, then waiting for the slow job)", got, want)
		}
		if !slowReturned {
			t.Errorf("Close returned before the slow running job returned")
		}
		if err := prompt.Err(); !errors.Is(err, context.Canceled) {
			t.Errorf("running job's result = %v; want context.Canceled", err)
		}
		if err := slow.Err(); err == nil || err.Error() != "slow job gave up" {
			t.Errorf("slow job's result = %v; want its own error", err)
		}
		for i, tk := range pending {
			if !done(tk) || !errors.Is(tk.Err(), ErrClosed) {
				t.Errorf("pending ticket %d: done %v err %v; want done, ErrClosed", i, done(tk), tk.Err())
			}
		}
		if started != 0 {
			t.Errorf("%d pending jobs ran after Close gave up; want 0", started)
		}
		if got := q.Len(); got != 0 {
			t.Errorf("Len after Close = %d; want 0", got)
		}
		if _, err := q.Submit(Job{VMID: 9, Run: func(context.Context) error { return nil }}); !errors.Is(err, ErrClosed) {
			t.Errorf("Submit after Close = %v; want ErrClosed", err)
		}
	})
}

func TestCloseAlreadyCancelledCtx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New(Options{Concurrency: 1})
		run := submit(t, q, Job{VMID: 1, Run: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }})
		pend := submit(t, q, Job{VMID: 1, Run: func(context.Context) error { return nil }})
		synctest.Wait()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := q.Close(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Close = %v; want context.Canceled", err)
		}
		if !errors.Is(run.Err(), context.Canceled) || !errors.Is(pend.Err(), ErrClosed) {
			t.Errorf("results running %v, pending %v; want context.Canceled, ErrClosed", run.Err(), pend.Err())
		}
	})
}

func TestCloseEmptyQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New(Options{})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		// Nothing to drain: even an already cancelled context closes cleanly.
		if err := q.Close(ctx); err != nil {
			t.Errorf("Close of an empty queue = %v; want nil", err)
		}
	})
}

func TestPanicBecomesError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		q := New(Options{Concurrency: 1, Logger: log})
		boom := submit(t, q, Job{VMID: 7, Key: "cfg", Run: func(context.Context) error { panic("boom") }})
		after := submit(t, q, Job{VMID: 7, Run: func(context.Context) error { return nil }})
		err := boom.Wait(t.Context())
		var pe *PanicError
		if !errors.As(err, &pe) {
			t.Fatalf("panicking job's result = %v; want *PanicError", err)
		}
		if pe.VMID != 7 || pe.Key != "cfg" || pe.Value != "boom" || len(pe.Stack) == 0 {
			t.Errorf("PanicError = {VMID:%d Key:%q Value:%v stack %d bytes}; want {7 cfg boom non-empty}", pe.VMID, pe.Key, pe.Value, len(pe.Stack))
		}
		if want := `guestq: job "cfg" for vmid 7 panicked: boom`; err.Error() != want {
			t.Errorf("error text %q; want %q", err.Error(), want)
		}
		if err := after.Wait(t.Context()); err != nil {
			t.Errorf("job after the panic: %v; want nil (the queue survives)", err)
		}
		if !strings.Contains(buf.String(), "panicked") || !strings.Contains(buf.String(), "vmid=7") {
			t.Errorf("log %q; want the panic logged with its vmid", buf.String())
		}
		closeQueue(t, q)
	})
}

func TestGoexitBecomesError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New(Options{Concurrency: 1})
		exit := submit(t, q, Job{VMID: 7, Run: func(context.Context) error { runtime.Goexit(); return nil }})
		ran := make([]bool, 3)
		var after []*Ticket
		for i := range ran {
			after = append(after, submit(t, q, Job{VMID: 7 + i%2, Run: func(context.Context) error { ran[i] = true; return nil }}))
		}
		if err := exit.Wait(t.Context()); err == nil || !strings.Contains(err.Error(), "Goexit") {
			t.Errorf("Goexit job's result = %v; want an error naming Goexit", err)
		}
		for i, tk := range after {
			if err := tk.Wait(t.Context()); err != nil || !ran[i] {
				t.Errorf("job %d after Goexit: err %v ran %v; want nil, true", i, err, ran[i])
			}
		}
		closeQueue(t, q)
	})
}

func TestJobErrorAndTicket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New(Options{})
		gate := make(chan struct{})
		want := errors.New("pve: can't lock file")
		tk := submit(t, q, Job{VMID: 1, Run: func(context.Context) error { <-gate; return want }})
		if tk.Err() != nil {
			t.Errorf("Err before Done = %v; want nil", tk.Err())
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if err := tk.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Wait with expiring ctx = %v; want context.DeadlineExceeded", err)
		}
		if done(tk) {
			t.Errorf("ticket done after Wait gave up; want the job unaffected")
		}
		close(gate)
		if err := tk.Wait(t.Context()); err != want {
			t.Errorf("Wait = %v; want %v", err, want)
		}
		if err := tk.Err(); err != want {
			t.Errorf("Err = %v; want %v", err, want)
		}
		closeQueue(t, q)
	})
}

func TestSubmitNilRun(t *testing.T) {
	q := New(Options{})
	defer closeQueue(t, q)
	tk, err := q.Submit(Job{VMID: 101, Key: "x"})
	if err == nil || tk != nil || !strings.Contains(err.Error(), "vmid 101") {
		t.Errorf("Submit with nil Run = %v, %v; want nil ticket and an error naming the vmid", tk, err)
	}
	if q.Len() != 0 {
		t.Errorf("Len = %d; want 0", q.Len())
	}
}

func TestJobSubmitsFollowUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New(Options{Concurrency: 1})
		follow := make(chan *Ticket, 1)
		first := submit(t, q, Job{VMID: 1, Run: func(context.Context) error {
			tk, err := q.Submit(Job{VMID: 1, Run: func(context.Context) error { return nil }})
			follow <- tk
			return err
		}})
		if err := first.Wait(t.Context()); err != nil {
			t.Fatalf("job submitting from inside a job: %v", err)
		}
		if err := (<-follow).Wait(t.Context()); err != nil {
			t.Errorf("follow-up job: %v", err)
		}
		closeQueue(t, q)
	})
}

// TestConcurrentSubmitters hammers Submit from many goroutines (for -race)
// and checks every job ran exactly once, one at a time per vmid.
func TestConcurrentSubmitters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := New(Options{Concurrency: 4})
		var fl inflight
		var mu sync.Mutex
		ran := map[[2]int]int{}
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 50 {
					vmid := (g*50 + i) % 6
					key := [2]int{g, i}
					submit(t, q, Job{VMID: vmid, Run: func(context.Context) error {
						fl.enter(vmid)
						defer fl.leave(vmid)
						time.Sleep(time.Millisecond)
						mu.Lock()
						ran[key]++
						mu.Unlock()
						return nil
					}})
				}
			})
		}
		wg.Wait()
		closeQueue(t, q)
		if len(ran) != 400 {
			t.Errorf("distinct jobs run = %d; want 400", len(ran))
		}
		for k, n := range ran {
			if n != 1 {
				t.Errorf("job %v ran %d times; want 1", k, n)
			}
		}
		if fl.max > 4 || fl.maxVMID != 1 {
			t.Errorf("max in flight %d (per vmid %d); want ≤ 4 (1)", fl.max, fl.maxVMID)
		}
	})
}
