// Package guestq is the per-guest serializer every mutation goes through:
// for one vmid strictly one job at a time, in submit order; different vmids
// in parallel, up to a global cap on concurrent jobs (PVE serves API calls
// with a small worker pool, 3 by default, so more parallelism only queues
// inside PVE and makes lock timeouts likelier).
//
// Submit never blocks. A job identical to one still pending for the same
// guest (same VMID and Key) is coalesced into it: reconcile is level-based,
// so running the same intent twice in a row adds nothing. Guests take turns:
// after each job a guest with more work goes to the back of the line, so one
// busy guest cannot starve the others.
//
// Every job runs in a goroutine owned by the Queue; Close drains or, when its
// context ends first, cancels running jobs and waits for them to return.
package guestq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
)

// DefaultConcurrency is the global cap used when Options.Concurrency ≤ 0:
// PVE's default API worker count.
const DefaultConcurrency = 3

// ErrClosed is returned by Submit once Close has begun, and is the error of
// every pending job that Close abandons because its context ended first.
var ErrClosed = errors.New("guestq: queue is closed")

// Job is one unit of work for one guest.
type Job struct {
	// VMID is the guest the job mutates; jobs with the same VMID never run
	// concurrently and run in submit order.
	VMID int
	// Key identifies the job's intent for coalescing: a Submit whose VMID and
	// Key equal those of a job still pending (not yet running) returns that
	// job's Ticket, and its own Run is dropped. An empty Key never coalesces.
	Key string
	// Run does the work. Its context is cancelled when Close gives up
	// waiting; Run should then return promptly. A panic in Run becomes a
	// *PanicError on the job's Ticket. Must not be nil.
	Run func(ctx context.Context) error
}

// Options configures a Queue. The zero value is usable.
type Options struct {
	// Concurrency caps jobs running at once across all vmids;
	// ≤ 0 means DefaultConcurrency.
	Concurrency int
	// Logger receives job failures and panics; nil means no logging.
	Logger *slog.Logger
}

// PanicError is the error of a job whose Run panicked.
type PanicError struct {
	VMID  int
	Key   string
	Value any    // the value passed to panic
	Stack []byte // the goroutine's stack at the panic
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("guestq: job %q for vmid %d panicked: %v", e.Key, e.VMID, e.Value)
}

// Ticket is the handle of a submitted job. Its methods are safe for
// concurrent use.
type Ticket struct {
	done chan struct{}
	err  error // written once before done is closed
}

// Done returns a channel closed when the job has finished (run to
// completion, panicked, or abandoned by Close).
func (t *Ticket) Done() <-chan struct{} { return t.done }

// Err returns the job's result: nil on success, Run's error, a *PanicError,
// or ErrClosed when the job was abandoned before it ran. It is valid only
// after Done is closed and returns nil before that.
func (t *Ticket) Err() error {
	select {
	case <-t.done:
		return t.err
	default:
		return nil
	}
}

// Wait blocks until the job finishes or ctx ends. It returns the job's
// result, or ctx's error if ctx ended first (the job is not affected).
func (t *Ticket) Wait(ctx context.Context) error {
	select {
	case <-t.done:
		return t.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// entry is a queued job with its ticket.
type entry struct {
	job    Job
	ticket *Ticket
}

// lane holds one vmid's jobs that are not yet running.
type lane struct {
	pending []*entry
	keyed   map[string]*entry // pending entries with a non-empty Key; nil until needed
	running bool              // a job of this vmid is running
	queued  bool              // the vmid is in Queue.ready
}

// Queue serializes jobs per vmid. Its methods are safe for concurrent use.
// A Queue must be created with New and should be closed with Close, which
// owns the goroutines running jobs.
type Queue struct {
	limit  int
	log    *slog.Logger
	ctx    context.Context // parent of every job context
	cancel context.CancelFunc
	wg     sync.WaitGroup // one per runner goroutine

	mu       sync.Mutex
	lanes    map[int]*lane // guarded by mu; vmids with pending or running jobs
	ready    []int         // guarded by mu; FIFO of vmids with pending jobs and none running
	inflight int           // guarded by mu; runner goroutines
	n        int           // guarded by mu; pending + running jobs
	closing  bool          // guarded by mu; Close has begun
	aborted  bool          // guarded by mu; Close's context ended: nothing more starts
	idle     chan struct{} // guarded by mu; closed when closing and n == 0
}

// New returns a running Queue.
func New(opts Options) *Queue {
	limit := opts.Concurrency
	if limit <= 0 {
		limit = DefaultConcurrency
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Queue{
		limit:  limit,
		log:    log,
		ctx:    ctx,
		cancel: cancel,
		lanes:  make(map[int]*lane),
		idle:   make(chan struct{}),
	}
}

// Submit enqueues j and returns its Ticket without blocking. When a job with
// the same VMID and non-empty Key is pending, Submit returns that job's
// Ticket instead (j.Run is dropped). It returns ErrClosed once Close has
// begun, and an error when j.Run is nil.
func (q *Queue) Submit(j Job) (*Ticket, error) {
	if j.Run == nil {
		return nil, fmt.Errorf("guestq: job %q for vmid %d has a nil Run function", j.Key, j.VMID)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closing {
		return nil, ErrClosed
	}
	l := q.lanes[j.VMID]
	if l == nil {
		l = &lane{}
		q.lanes[j.VMID] = l
	}
	if e := l.keyed[j.Key]; e != nil {
		return e.ticket, nil
	}
	e := &entry{job: j, ticket: &Ticket{done: make(chan struct{})}}
	l.pending = append(l.pending, e)
	if j.Key != "" {
		if l.keyed == nil {
			l.keyed = make(map[string]*entry)
		}
		l.keyed[j.Key] = e
	}
	q.n++
	if !l.running && !l.queued {
		l.queued = true
		q.ready = append(q.ready, j.VMID)
	}
	if q.inflight < q.limit {
		if next := q.nextLocked(); next != nil {
			q.inflight++
			q.wg.Add(1)
			go q.runner(next)
		}
	}
	return e.ticket, nil
}

// nextLocked takes the first pending job of the first ready vmid and marks
// its lane running, or returns nil when nothing can start.
func (q *Queue) nextLocked() *entry {
	if q.aborted || len(q.ready) == 0 {
		return nil
	}
	vmid := q.ready[0]
	q.ready[0] = 0
	q.ready = q.ready[1:]
	l := q.lanes[vmid]
	l.queued = false
	e := l.pending[0]
	l.pending[0] = nil
	l.pending = l.pending[1:]
	if e.job.Key != "" {
		delete(l.keyed, e.job.Key)
	}
	l.running = true
	return e
}

// runner runs e, then keeps taking ready jobs until none is left, so a busy
// queue reuses its goroutines. It holds one of the q.limit slots throughout.
func (q *Queue) runner(e *entry) {
	defer q.wg.Done()
	for e != nil {
		e = q.runOne(e)
	}
}

// runOne runs e, records its result and returns the next job this runner
// should take, or nil after giving up its slot. If Run calls
// runtime.Goexit (t.FailNow in a test, say), which cannot be stopped, the
// job fails with an error and any remaining work moves to a new runner
// before this goroutine unwinds.
func (q *Queue) runOne(e *entry) (next *entry) {
	returned := false
	defer func() {
		if !returned {
			err := fmt.Errorf("guestq: job %q for vmid %d called runtime.Goexit", e.job.Key, e.job.VMID)
			if n := q.finish(e, err); n != nil {
				q.wg.Add(1)
				go q.runner(n)
			}
		}
	}()
	err := q.run(e)
	returned = true
	return q.finish(e, err)
}

// finish completes e's ticket with err and returns the next job for the
// calling runner, or nil after releasing its slot.
func (q *Queue) finish(e *entry, err error) *entry {
	e.ticket.err = err
	close(e.ticket.done)

	q.mu.Lock()
	defer q.mu.Unlock()
	q.n--
	vmid := e.job.VMID
	l := q.lanes[vmid]
	l.running = false
	if len(l.pending) > 0 {
		// Back of the line: other guests get their turn first.
		l.queued = true
		q.ready = append(q.ready, vmid)
	} else {
		delete(q.lanes, vmid)
	}
	next := q.nextLocked()
	if next == nil {
		q.inflight--
	}
	q.signalIdleLocked()
	return next
}

// run calls e's Run, turning a panic into a *PanicError.
func (q *Queue) run(e *entry) (err error) {
	defer func() {
		if v := recover(); v != nil {
			pe := &PanicError{VMID: e.job.VMID, Key: e.job.Key, Value: v, Stack: debug.Stack()}
			q.log.Error("guestq: job panicked", "vmid", e.job.VMID, "key", e.job.Key,
				"panic", fmt.Sprint(v), "stack", string(pe.Stack))
			err = pe
		}
	}()
	err = e.job.Run(q.ctx)
	if err != nil && q.ctx.Err() == nil {
		q.log.Debug("guestq: job failed", "vmid", e.job.VMID, "key", e.job.Key, "err", err)
	}
	return err
}

// signalIdleLocked closes q.idle once Close has begun and no job remains.
func (q *Queue) signalIdleLocked() {
	if q.closing && q.n == 0 {
		select {
		case <-q.idle:
		default:
			close(q.idle)
		}
	}
}

// Close stops accepting jobs and waits until every pending and running job
// has finished. If ctx ends first, Close cancels the running jobs' contexts,
// finishes every pending job with ErrClosed, waits for the running jobs to
// return, and returns an error wrapping ctx's error. A job that ignores
// cancellation therefore blocks Close. Close may be called more than once
// and concurrently; each call waits as described. It returns nil when the
// queue drained. Close must not be called from inside a job (it would wait
// for itself).
func (q *Queue) Close(ctx context.Context) error {
	q.mu.Lock()
	q.closing = true
	q.signalIdleLocked()
	q.mu.Unlock()

	var err error
	select {
	case <-q.idle:
	case <-ctx.Done():
		select {
		case <-q.idle: // drained by the time ctx ended: that is success
		default:
			err = fmt.Errorf("guestq: close gave up draining, running jobs cancelled, pending jobs failed: %w", ctx.Err())
			q.abort()
		}
	}
	q.cancel()
	q.wg.Wait()
	return err
}

// abort stops all dispatch and fails every pending job with ErrClosed.
func (q *Queue) abort() {
	q.mu.Lock()
	q.aborted = true
	var dropped []*entry
	for vmid, l := range q.lanes {
		dropped = append(dropped, l.pending...)
		l.pending = nil
		l.keyed = nil
		l.queued = false
		if !l.running {
			delete(q.lanes, vmid)
		}
	}
	q.ready = nil
	q.n -= len(dropped)
	q.signalIdleLocked()
	q.mu.Unlock()

	q.cancel()
	for _, e := range dropped {
		e.ticket.err = ErrClosed
		close(e.ticket.done)
	}
}

// Len returns the number of jobs pending or running, for metrics.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}
