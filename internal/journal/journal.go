package journal

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/steward-pve/steward/internal/atomicfile"
)

// Errors returned by the Journal. Callers test them with errors.Is.
var (
	// ErrCorrupt is wrapped by the *CorruptError Open returns for damage
	// that is not a torn tail.
	ErrCorrupt = errors.New("journal: corrupt")
	// ErrDone is returned by Begin when the op's idempotency key has
	// already completed: the op must not run again.
	ErrDone = errors.New("journal: idempotency key already completed")
	// ErrInFlight is returned by Begin when the op id, or another op with
	// the same idempotency key, is in flight.
	ErrInFlight = errors.New("journal: op already in flight")
	// ErrUnknownOp is returned by Task and End for an op id that is not in
	// flight.
	ErrUnknownOp = errors.New("journal: op not in flight")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("journal: closed")
	// ErrNonceSpent is returned by Begin for an op whose nonce belongs to
	// another op in flight or ended without Retry: the signed job it
	// carries has committed already and must not run again.
	ErrNonceSpent = errors.New("journal: nonce already committed")
)

// Defaults for Options.
const (
	DefaultRetention = 7 * 24 * time.Hour
	DefaultMaxBytes  = 8 << 20
)

// FileName is the journal's file name inside the directory given to Open.
const FileName = "journal"

// Options configures a Journal. The zero value is usable.
type Options struct {
	// Retention is how long completed idempotency keys (and gate
	// decisions) are kept; DefaultRetention when zero.
	Retention time.Duration
	// MaxBytes is the file size that triggers compaction;
	// DefaultMaxBytes when zero. When live content alone exceeds it,
	// compaction runs again only after the file has doubled, so appends
	// never compact on every call.
	MaxBytes int64
	// Logger receives repairs and compaction warnings; nil means no
	// logging.
	Logger *slog.Logger
	// Now is the clock used for record times and retention; time.Now when
	// nil.
	Now func() time.Time
	// OnRecord, when set, is called with every begin, task, end and
	// decision record once it is durable, before the call that appended it
	// returns (the agent ships them to the hub as receipts). Records arrive
	// in the order they were appended (Event.Seq, even when concurrent
	// appends share an fsync), each once. It runs with the journal's lock
	// held, so two calls never overlap; it must not call the Journal.
	// Records read back at Open and rewritten by compaction are not passed
	// again (Since gives them).
	OnRecord func(Event)
	// OnSync, when set, is called after every fsync of the journal file
	// that succeeded, with how long it took (for metrics). It runs with no
	// lock held and must be quick and safe for concurrent use.
	OnSync func(time.Duration)
}

// Event is one record as Options.OnRecord sees it: Type is "begin",
// "task", "end" or "decision", and the matching fields are set (Op for
// begin, OpID and UPID for task, OpID and Result for end, Decision for
// decision).
type Event struct {
	// Seq numbers the journal's begin, task, end and decision records in
	// the order they were appended, from 1, over the journal's whole life:
	// compaction keeps the count (see the mark record in the package
	// doc), so a consumer that remembers the Seq it has seen can ask
	// Since for the records it missed.
	Seq      uint64
	Type     string
	Time     time.Time
	OpID     string
	Op       *Op
	UPID     string
	Result   *Result
	Decision *Decision
}

// isEvent reports whether r is a record OnRecord sees (and Event.Seq
// counts).
func (r record) isEvent() bool {
	switch r.Type {
	case typeBegin, typeTask, typeEnd, typeDecision:
		return true
	}
	return false
}

// event returns r as an Event (without its Seq); ok is false for record
// types OnRecord does not see.
func (r record) event() (Event, bool) {
	switch r.Type {
	case typeBegin:
		op := cloneOp(*r.Begin)
		return Event{Type: "begin", Time: op.Time, OpID: op.ID, Op: &op}, true
	case typeTask:
		return Event{Type: "task", Time: r.Task.Time, OpID: r.Task.ID, UPID: r.Task.UPID}, true
	case typeEnd:
		res := r.End.Result
		return Event{Type: "end", Time: r.End.Time, OpID: r.End.ID, Result: &res}, true
	case typeDecision:
		d := *r.Decision
		d.Action = cloneAction(d.Action)
		d.Signers = slices.Clone(d.Signers)
		return Event{Type: "decision", Time: d.Time, Decision: &d}, true
	}
	return Event{}, false
}

// pendingEvent is a record for OnRecord: ev, written as record number n
// of this process (Journal.written).
type pendingEvent struct {
	n  uint64
	ev Event
}

// Journal is an open journal file. All methods are safe for concurrent use.
// Begin, Task, End and Decision block until their record is durable.
type Journal struct {
	path      string
	retention time.Duration
	maxBytes  int64
	log       *slog.Logger
	now       func() time.Time
	onRecord  func(Event)
	onSync    func(time.Duration)

	mu   sync.Mutex
	cond *sync.Cond // signals changes of syncing, synced and err; uses mu
	f    *os.File
	st   *state
	size int64 // bytes in the file
	// compactAt is the size that triggers the next automatic compaction.
	compactAt int64
	written   uint64 // records written to f
	synced    uint64 // records covered by a completed fsync
	syncing   bool   // an fsync is in progress (mu not held by its caller)
	err       error  // the journal is closed, or failed (see failed)
	// failed is true when err is an I/O failure rather than Close: the
	// next append first tries to repair the file (repairLocked).
	failed      bool
	lastFailLog time.Time // when a failed repair was last logged
	failedTries int       // repairs failed since then
	// undelivered are the records OnRecord has not seen yet, in the order
	// they were written (deliverLocked).
	undelivered []pendingEvent
	// fault, set only by tests, fails writes and fsyncs it returns an
	// error for ("write", "sync"), as a full disk would.
	fault func(op string) error
}

// Open opens the journal in dir, creating dir (mode 0700) and the file when
// missing. It reads and checks every record, repairs a torn tail (truncating
// after the last whole record and logging how many bytes were dropped), and
// fails with a *CorruptError wrapping ErrCorrupt, naming the offset, for any
// other damage. The caller must Close the Journal.
func Open(dir string, opts Options) (*Journal, error) {
	j := &Journal{
		path:      filepath.Join(dir, FileName),
		retention: opts.Retention,
		maxBytes:  opts.MaxBytes,
		log:       opts.Logger,
		now:       opts.Now,
		onRecord:  opts.OnRecord,
		onSync:    opts.OnSync,
	}
	if j.retention <= 0 {
		j.retention = DefaultRetention
	}
	if j.maxBytes <= 0 {
		j.maxBytes = DefaultMaxBytes
	}
	if j.log == nil {
		j.log = slog.New(slog.DiscardHandler)
	}
	if j.now == nil {
		j.now = time.Now
	}
	j.cond = sync.NewCond(&j.mu)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal: create state directory: %w", err)
	}
	j.removeStaleTemps(dir)

	data, err := os.ReadFile(j.path)
	if errors.Is(err, os.ErrNotExist) {
		data = nil
	} else if err != nil {
		return nil, fmt.Errorf("journal: read %s: %w", j.path, err)
	}
	d, err := decodeFile(data)
	if err != nil {
		var ce *CorruptError
		if errors.As(err, &ce) {
			ce.Path = j.path
		}
		return nil, err
	}
	j.st = newState()
	for i, r := range d.records {
		if err := j.st.apply(r); err != nil {
			return nil, &CorruptError{Path: j.path, Offset: int64(d.offsets[i]), Reason: err.Error()}
		}
	}
	if d.tornHeader {
		// Missing, or a crash while it was being created: nothing in it
		// was ever acknowledged.
		if len(data) > 0 {
			j.log.Warn("journal: repaired a torn header", "path", j.path, "bytes_dropped", len(data))
		}
		if err := atomicfile.Write(j.path, fileHeader(), 0o600); err != nil {
			return nil, fmt.Errorf("journal: create %s: %w", j.path, err)
		}
		d.end = headerSize
	}
	f, err := os.OpenFile(j.path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("journal: open %s: %w", j.path, err)
	}
	if !d.tornHeader && d.end < len(data) {
		dropped := len(data) - d.end
		if err := f.Truncate(int64(d.end)); err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("journal: truncate torn tail of %s at offset %d: %w", j.path, d.end, err)
		}
		j.log.Warn("journal: repaired a torn tail", "path", j.path, "offset", d.end, "bytes_dropped", dropped)
	}
	j.f = f
	j.size = int64(d.end)
	j.compactAt = max(j.maxBytes, 2*j.size)
	return j, nil
}

// removeStaleTemps removes compaction temporaries left by a crash.
func (j *Journal) removeStaleTemps(dir string) {
	stale, _ := filepath.Glob(filepath.Join(dir, "."+FileName+".tmp*"))
	for _, p := range stale {
		if err := os.Remove(p); err != nil {
			j.log.Warn("journal: cannot remove stale compaction file", "path", p, "err", err)
		}
	}
}

// Begin records that op is about to run. It returns once the record is
// durable; for an op with a Nonce that record is the commitment of its
// signed job. It fails with ErrDone when op.IdemKey completed (without
// Retry) within the retention window, with ErrNonceSpent when op.Nonce is
// committed by another op, and with ErrInFlight when op.ID, or another op with the
// same IdemKey, is in flight. A zero op.Time is set from Options.Now; times
// are stored in UTC. Begin keeps a copy of op.
func (j *Journal) Begin(op Op) error {
	if op.ID == "" {
		return errors.New("journal: begin: op has no id; give every op a unique id")
	}
	if op.Time.IsZero() {
		op.Time = j.now()
	}
	op = cloneOp(op)
	op.Time = op.Time.UTC()
	return j.append(record{Type: typeBegin, Begin: &op}, func() error {
		if _, ok := j.st.inflight[op.ID]; ok {
			return fmt.Errorf("%w: op %s", ErrInFlight, op.ID)
		}
		if op.Nonce != "" {
			if n, ok := j.st.nonces[op.Nonce]; ok {
				return fmt.Errorf("%w: nonce %s was committed by op %s", ErrNonceSpent, op.Nonce, n.opID)
			}
		}
		if op.IdemKey == "" {
			return nil
		}
		if other, ok := j.st.inflightK[op.IdemKey]; ok {
			return fmt.Errorf("%w: idempotency key %q is held by op %s", ErrInFlight, op.IdemKey, other)
		}
		if c, ok := j.completedLocked(op.IdemKey); ok && !c.result.Retry {
			return fmt.Errorf("%w: key %q ended with op %s at %s", ErrDone, op.IdemKey, c.opID, c.at.Format(time.RFC3339))
		}
		return nil
	})
}

// Task records the PVE task id (UPID) of the in-flight op opID. It returns
// once the record is durable; ErrUnknownOp if opID is not in flight.
func (j *Journal) Task(opID, upid string) error {
	if upid == "" {
		return fmt.Errorf("journal: task for op %s: empty UPID", opID)
	}
	rec := &taskRecord{ID: opID, UPID: upid, Time: j.now().UTC()}
	return j.append(record{Type: typeTask, Task: rec}, func() error {
		if _, ok := j.st.inflight[opID]; !ok {
			return fmt.Errorf("%w: task for op %s", ErrUnknownOp, opID)
		}
		return nil
	})
}

// End records the result of the in-flight op opID, completing its
// idempotency key whatever the result. It returns once the record is
// durable; ErrUnknownOp if opID is not in flight.
func (j *Journal) End(opID string, r Result) error {
	rec := &endRecord{ID: opID, Time: j.now().UTC(), Result: r}
	return j.append(record{Type: typeEnd, End: rec}, func() error {
		if _, ok := j.st.inflight[opID]; !ok {
			return fmt.Errorf("%w: end for op %s", ErrUnknownOp, opID)
		}
		return nil
	})
}

// Decision records a gate decision. It returns once the record is durable.
// A zero d.Time is set from Options.Now. Decisions are kept for the
// retention window.
func (j *Journal) Decision(d Decision) error {
	if d.Time.IsZero() {
		d.Time = j.now()
	}
	d.Time = d.Time.UTC()
	d.Action = cloneAction(d.Action)
	d.Signers = slices.Clone(d.Signers)
	return j.append(record{Type: typeDecision, Decision: &d}, func() error { return nil })
}

// Completed reports how the op with idempotency key idemKey ended, if it
// ended within the retention window. It does not block on I/O.
func (j *Journal) Completed(idemKey string) (Result, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	c, ok := j.completedLocked(idemKey)
	return c.result, ok
}

func (j *Journal) completedLocked(idemKey string) (completion, bool) {
	c, ok := j.st.completed[idemKey]
	if !ok || c.at.Before(j.now().Add(-j.retention)) {
		return completion{}, false
	}
	return c, true
}

// LastEnded returns, by vmid, the id of the op with an idempotency key
// that ended last on that guest, within the retention window (ops in
// flight do not count; a guest with none is absent). The value changes
// whenever such an op ends on the guest and stays the same otherwise, so
// it marks how far the journal's history of the guest went when it was
// read: a caller that reads it before it observes a guest can tell the ops
// that ended after its observation (see engine.reconcileKey). Compaction
// and reopening do not change the answer. It does not block on I/O.
func (j *Journal) LastEnded() map[int]string {
	j.mu.Lock()
	defer j.mu.Unlock()
	cutoff := j.now().Add(-j.retention)
	out := make(map[int]string, len(j.st.lastEnded))
	for vmid, l := range j.st.lastEnded {
		if !l.at.Before(cutoff) {
			out[vmid] = l.opID
		}
	}
	return out
}

// NonceSpent reports whether nonce is committed: an op carrying it is in
// flight, or ended without Retry and the nonce has not expired. opID is
// that op. It does not block on I/O.
func (j *Journal) NonceSpent(nonce string) (opID string, spent bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	n, ok := j.st.nonces[nonce]
	if !ok {
		return "", false
	}
	if _, live := j.st.inflight[n.opID]; !live && !j.now().Before(n.expires) {
		return "", false
	}
	return n.opID, true
}

// SpentNonces returns every unexpired nonce whose op ended without Retry
// (ran or failed conclusively), with its expiry; not those of ops still in
// flight, whose fate is open. It does not block on I/O.
func (j *Journal) SpentNonces() map[string]time.Time {
	j.mu.Lock()
	defer j.mu.Unlock()
	now := j.now()
	out := make(map[string]time.Time, len(j.st.nonces))
	for n, e := range j.st.nonces {
		if _, live := j.st.inflight[e.opID]; !live && now.Before(e.expires) {
			out[n] = e.expires
		}
	}
	return out
}

// TaskOwner returns the id of the op whose task upid is, when the journal
// recorded it for one (in flight, or ended within retention). It does not
// block on I/O.
func (j *Journal) TaskOwner(upid string) (opID string, ok bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	opID, ok = j.st.upids[upid]
	return opID, ok
}

// InFlight returns copies of the ops begun and not ended, in begin order,
// each with its UPID if one was recorded. It does not block on I/O.
func (j *Journal) InFlight() []Op {
	j.mu.Lock()
	defer j.mu.Unlock()
	fs := make([]*flight, 0, len(j.st.inflight))
	for _, f := range j.st.inflight {
		fs = append(fs, f)
	}
	slices.SortFunc(fs, func(a, b *flight) int { return cmp.Compare(a.seq, b.seq) })
	ops := make([]Op, len(fs))
	for i, f := range fs {
		ops[i] = cloneOp(f.op)
	}
	return ops
}

// Provenance reports what the journal proves about the creation of vmid;
// the zero Provenance when it holds no create op for it. It does not block
// on I/O.
func (j *Journal) Provenance(vmid int) Provenance {
	j.mu.Lock()
	defer j.mu.Unlock()
	p, ok := j.st.prov[vmid]
	if !ok {
		return Provenance{}
	}
	out := Provenance{CreatedByAgent: true, CreateFailed: p.ended && p.failed, CreateOpID: p.createOp,
		Created: p.ended && !p.failed, Started: p.started, At: p.at}
	if out.CreateFailed {
		out.FailedAt, out.RemainsDigest = p.at, p.remains
	}
	return out
}

// Seq returns the number (Event.Seq) of the last begin, task, end or
// decision record appended; 0 when there was none. It does not block on
// I/O.
func (j *Journal) Seq() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.st.events
}

// Since returns, in order, the begin, task, end and decision records
// numbered after seq that the journal file still holds as they were
// appended, each with its Seq, and first, the number of the oldest record
// it holds that way (Seq()+1 when it holds none): records numbered seq+1
// to first-1 were compacted away and cannot be given. It reads and decodes
// the whole file, so it is meant for start-up: a consumer of OnRecord
// catching up, before anything else is appended, on the records a crash
// kept from it.
func (j *Journal) Since(seq uint64) (evs []Event, first uint64, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil && !j.failed {
		return nil, 0, j.err
	}
	data, err := os.ReadFile(j.path)
	if err != nil {
		return nil, 0, fmt.Errorf("journal: read %s: %w", j.path, err)
	}
	d, err := decodeFile(data)
	if err != nil {
		var ce *CorruptError
		if errors.As(err, &ce) {
			ce.Path = j.path
		}
		return nil, 0, err
	}
	var n uint64
	first = 1
	for _, r := range d.records {
		if r.Type == typeMark {
			n, first, evs = r.Mark.Seq, r.Mark.Seq+1, evs[:0]
			continue
		}
		if !r.isEvent() {
			continue
		}
		n++
		if n > seq {
			ev, _ := r.event()
			ev.Seq = n
			evs = append(evs, ev)
		}
	}
	return evs, min(first, n+1), nil
}

// Compact rewrites the journal keeping every in-flight op (with its UPID),
// idempotency keys and gate decisions within the retention window, and the
// create provenance of every guest not since destroyed by the agent. The
// replacement is written to a temporary file, fsynced, renamed over the
// journal and the directory fsynced. Compaction also runs automatically
// when the file grows past Options.MaxBytes. It blocks appends while it
// runs.
func (j *Journal) Compact() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usableLocked(); err != nil {
		return err
	}
	return j.compactLocked()
}

// Close waits for pending fsyncs and closes the file. Later calls return
// ErrClosed. Close is idempotent.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for j.err == nil && (j.syncing || j.synced < j.written) {
		j.cond.Wait()
	}
	for j.syncing {
		j.cond.Wait()
	}
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	if j.err == nil || j.failed {
		j.err, j.failed = ErrClosed, false // no repair of a closed journal
	}
	j.cond.Broadcast()
	if err != nil {
		return fmt.Errorf("journal: close %s: %w", j.path, err)
	}
	return nil
}

// append writes r if check (run with mu held) allows it, and returns once r
// is durable.
func (j *Journal) append(r record, check func() error) error {
	frame, err := encodeFrame(r)
	if err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.usableLocked(); err != nil {
		return err
	}
	if err := check(); err != nil {
		return err
	}
	n, err := j.writeLocked(frame)
	if err != nil || n != len(frame) {
		if err == nil {
			err = io.ErrShortWrite
		}
		return j.failLocked(fmt.Errorf("journal: append to %s: %w; appends fail until the journal can be rewritten", j.path, err))
	}
	j.size += int64(n)
	if err := j.st.apply(r); err != nil {
		// check() validated r against the same state, so this is a bug.
		return j.failLocked(fmt.Errorf("journal: internal error applying %v record: %w", r.Type, err))
	}
	j.written++
	if j.onRecord != nil {
		if ev, ok := r.event(); ok {
			ev.Seq = j.st.events
			j.undelivered = append(j.undelivered, pendingEvent{n: j.written, ev: ev})
		}
	}
	if err := j.waitSyncedLocked(j.written); err != nil {
		return err
	}
	j.deliverLocked()
	if j.size > j.compactAt {
		if err := j.compactLocked(); err != nil {
			// The record is durable; compaction is retried on the next
			// append past the threshold.
			j.log.Warn("journal: automatic compaction failed", "path", j.path, "err", err)
		}
	}
	return nil
}

// deliverLocked passes OnRecord every durable record not yet passed, in
// the order they were written. Appenders that share an fsync wake in any
// order; whichever comes first delivers for all of them, so OnRecord sees
// records in Event.Seq order, each once, before the append that wrote it
// returns.
func (j *Journal) deliverLocked() {
	for len(j.undelivered) > 0 && j.undelivered[0].n <= j.synced {
		ev := j.undelivered[0].ev
		j.undelivered[0] = pendingEvent{}
		j.undelivered = j.undelivered[1:]
		j.onRecord(ev)
	}
}

// waitSyncedLocked returns once record number seq is covered by an fsync.
// The first waiter to find no fsync in progress runs one for everything
// written so far, with mu released; the others wait for it (group commit).
func (j *Journal) waitSyncedLocked(seq uint64) error {
	for j.synced < seq {
		if j.err != nil {
			return j.err
		}
		if j.syncing {
			j.cond.Wait()
			continue
		}
		j.syncing = true
		target, f := j.written, j.f
		j.mu.Unlock()
		start := time.Now()
		err := j.syncFile(f)
		if err == nil && j.onSync != nil {
			j.onSync(time.Since(start))
		}
		j.mu.Lock()
		j.syncing = false
		if err != nil {
			j.failLocked(fmt.Errorf("journal: fsync %s: %w; appends fail until the journal can be rewritten", j.path, err))
		} else if target > j.synced {
			j.synced = target
		}
		j.cond.Broadcast()
	}
	return nil
}

// failLocked records the I/O failure err and returns it. Appends fail
// until a repair succeeds (see usableLocked): after a failed write or
// fsync the kernel's view of the file can no longer be trusted, so the
// file is rewritten, not appended to.
func (j *Journal) failLocked(err error) error {
	if j.err == nil {
		j.err, j.failed = err, true
		j.lastFailLog = j.now()
		j.log.Error("journal: failed; will rewrite the journal from memory once writes succeed", "path", j.path, "err", err)
	}
	j.cond.Broadcast()
	return j.err
}

// usableLocked returns nil when appends may proceed. After an I/O failure
// it rewrites the whole journal from the in-memory state (what every
// acknowledged record and every op since says) through a temporary file,
// fsync and rename, and reopens it: once the disk has room again the
// journal works again without a restart. A repair that fails is logged at
// most once a minute.
func (j *Journal) usableLocked() error {
	if j.err == nil {
		return nil
	}
	if !j.failed {
		return j.err
	}
	for j.syncing {
		j.cond.Wait()
	}
	prev := j.err
	j.err, j.failed = nil, false
	if err := j.rewriteLocked(); err != nil {
		j.err, j.failed = prev, true
		j.failedTries++
		if now := j.now(); now.Sub(j.lastFailLog) >= time.Minute {
			j.log.Error("journal: still failing", "path", j.path, "err", err, "failed_repairs", j.failedTries)
			j.lastFailLog, j.failedTries = now, 0
		}
		return fmt.Errorf("%w (repair failed: %v)", prev, err)
	}
	j.log.Warn("journal: writable again; rewrote it from memory", "path", j.path, "bytes", j.size)
	j.failedTries = 0
	return nil
}

func (j *Journal) writeLocked(b []byte) (int, error) {
	if j.fault != nil {
		if err := j.fault("write"); err != nil {
			return 0, err
		}
	}
	return j.f.Write(b)
}

func (j *Journal) syncFile(f *os.File) error {
	if j.fault != nil {
		if err := j.fault("sync"); err != nil {
			return err
		}
	}
	return f.Sync()
}

func (j *Journal) compactLocked() error {
	for j.syncing {
		j.cond.Wait()
	}
	if j.err != nil {
		return j.err
	}
	now := j.now()
	j.st.prune(now.Add(-j.retention), now)
	if err := j.rewriteLocked(); err != nil {
		return err
	}
	j.log.Info("journal: compacted", "path", j.path, "bytes", j.size)
	if j.size > j.maxBytes {
		j.log.Warn("journal: live content exceeds MaxBytes after compaction", "path", j.path, "bytes", j.size, "max_bytes", j.maxBytes)
	}
	return nil
}

// rewriteLocked replaces the file with the records that rebuild the
// in-memory state and switches appends to it.
func (j *Journal) rewriteLocked() error {
	data := fileHeader()
	recs := j.st.snapshot()
	if j.st.events > 0 {
		recs = append(recs, record{Type: typeMark, Mark: &markRecord{Seq: j.st.events}})
	}
	for _, r := range recs {
		frame, err := encodeFrame(r)
		if err != nil {
			return fmt.Errorf("journal: compact: %w", err)
		}
		data = append(data, frame...)
	}
	if j.fault != nil {
		if err := j.fault("write"); err != nil {
			return fmt.Errorf("journal: rewrite: %w", err)
		}
	}
	if err := atomicfile.Write(j.path, data, 0o600); err != nil {
		// Make sure appends still go to the file at j.path: if the
		// rename happened (only the directory sync failed) the old
		// descriptor points at an unlinked file.
		if !j.sameFileLocked() {
			if rerr := j.reopenLocked(int64(len(data))); rerr != nil {
				return rerr
			}
		}
		return fmt.Errorf("journal: compact: %w", err)
	}
	return j.reopenLocked(int64(len(data)))
}

// sameFileLocked reports whether j.f is still the file at j.path.
func (j *Journal) sameFileLocked() bool {
	a, err1 := j.f.Stat()
	b, err2 := os.Stat(j.path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// reopenLocked switches appends to the (replaced) file at j.path, whose
// size is size and whose content covers every record written so far.
func (j *Journal) reopenLocked(size int64) error {
	nf, err := os.OpenFile(j.path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return j.failLocked(fmt.Errorf("journal: reopen %s after compaction: %w; appends fail until the journal can be rewritten", j.path, err))
	}
	j.f.Close()
	j.f = nf
	j.size = size
	j.compactAt = max(j.maxBytes, 2*size)
	j.synced = j.written
	j.cond.Broadcast()
	return nil
}
