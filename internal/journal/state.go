package journal

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/steward-pve/steward/internal/action"
)

// Op is one mutation the agent performs, as recorded by Begin.
type Op struct {
	ID      string        `json:"id"`                 // unique op id (e.g. random 128-bit hex); required
	Time    time.Time     `json:"time"`               // when the op began; Begin fills it from Options.Now when zero
	Source  string        `json:"source,omitempty"`   // "reconcile" | "signed" | "recovery"
	Host    string        `json:"host,omitempty"`     // the PVE host the op runs on
	Action  action.Action `json:"action"`             // what is done, with its exact API parameters and digest
	IdemKey string        `json:"idem_key,omitempty"` // idempotency key; empty means the op is not deduplicated
	Signers []string      `json:"signers,omitempty"`  // fingerprints of authorizing signers (signed ops)
	UPID    string        `json:"upid,omitempty"`     // PVE task id, set by Task
	// Nonce is the nonce of the signed job this op runs; a begin record
	// that carries it commits the job (see the package doc). NonceExpires
	// is when the nonce stops mattering (the job's expiry plus skew).
	Nonce        string    `json:"nonce,omitempty"`
	NonceExpires time.Time `json:"nonce_expires,omitzero"`
}

// Result is how an op ended.
type Result struct {
	OK         bool   `json:"ok"`
	ExitStatus string `json:"exit_status,omitempty"` // the PVE task's exit status, e.g. "OK"
	Error      string `json:"error,omitempty"`
	Resolution string `json:"resolution,omitempty"` // set when recovery ended the op, e.g. "recovered: task OK"
	// RemainsDigest, on a failed create, is the config digest of what the
	// failed provision left behind, read by the agent right after the
	// failure ("" when it left nothing). Only a guest still in exactly that
	// state is the agent's own remains.
	RemainsDigest string `json:"remains_digest,omitempty"`
	// Retry is true when PVE proves the op did not run (pve.IsRetryable:
	// a 5xx before execution, 596, a request never sent, a lock timeout)
	// or recovery found it never started. Its idempotency key and nonce
	// are then not spent: the same intent may begin again.
	Retry bool `json:"retry,omitempty"`
}

// Decision is a gate decision: whether an action may run and why.
type Decision struct {
	Time    time.Time     `json:"time"` // Decision fills it from Options.Now when zero
	VMID    int           `json:"vmid"`
	Action  action.Action `json:"action"`
	Class   string        `json:"class,omitempty"`
	Verdict string        `json:"verdict,omitempty"`
	Reason  string        `json:"reason,omitempty"`
	Signers []string      `json:"signers,omitempty"`
}

// Provenance is what the journal proves about who created a guest.
type Provenance struct {
	// CreatedByAgent is true when this journal holds a create op for the
	// vmid (from any source) that is in flight or that PVE accepted (its
	// task was recorded), and no later destroy of it succeeded. A create
	// that ended failed without a task created nothing: PVE refused it.
	CreatedByAgent bool
	// CreateFailed is true when that create op ended failed (or recovery
	// resolved it as failed) and no op begun after it on the same vmid has
	// ended successfully: the guest, if it exists at all, is the remains of
	// the agent's own failed provision.
	CreateFailed bool
	// FailedAt is when the create op ended failed (zero unless
	// CreateFailed), so a caller can limit how long the failure vouches
	// for the guest.
	FailedAt time.Time
	// RemainsDigest is the config digest of what the failed create left
	// behind, as the agent saw it right after the failure ("" when nothing
	// was left, or unknown). A guest with another digest is not the
	// agent's remains: someone may have created or changed it since.
	RemainsDigest string
	// CreateOpID is the id of the latest create op for the vmid.
	CreateOpID string
	// At is when that create op began, or ended once it has.
	At time.Time
	// Created is true when that create op ended successfully (PVE made
	// the guest the agent asked for), or failed and a later op on the
	// guest succeeded.
	Created bool
	// Started is true when a start or reboot of the guest began (from any
	// source) after that create op: the guest may have run since it was
	// created, so it is no longer the untouched guest the create made.
	Started bool
}

type flight struct {
	op  Op
	seq uint64
}

type completion struct {
	opID   string
	upid   string
	nonce  string
	expiry time.Time // nonce expiry
	vmid   int
	result Result
	at     time.Time // when the op ended
	seq    uint64
}

type provenance struct {
	remains  string // Result.RemainsDigest of the failed create
	createOp string
	seq      uint64 // sequence of the create op's begin
	ended    bool   // the create op has ended (else it is in flight)
	failed   bool
	started  bool // a start or reboot began after the create
	at       time.Time
}

type decisionEntry struct {
	d   Decision
	seq uint64
}

// state is the journal's content folded into indexes. The same apply runs
// when records are replayed by Open and when they are appended, so the
// in-memory view is always what a reopen would see.
type state struct {
	seq uint64 // sequence of the last applied record
	// events is the number (Event.Seq) of the last begin, task, end or
	// decision record: counted on from the last mark record.
	events    uint64
	inflight  map[string]*flight    // op id → begun, not ended
	inflightK map[string]string     // idempotency key → in-flight op id
	completed map[string]completion // idempotency key → ended op
	prov      map[int]*provenance   // vmid → create provenance
	// nonces maps the nonce of every signed op in flight, or ended without
	// Retry, to that op: the nonces the journal proves spent or committed.
	nonces    map[string]nonceEntry
	upids     map[string]string // UPID → id of the op it was recorded for
	decisions []decisionEntry
	snaps     map[int]map[string]snapEntry // vmid → name → the agent's own scheduled snapshot
	// lastEnded is, by vmid, the completion in completed with the highest
	// seq: the op with an idempotency key that ended last on the guest.
	lastEnded map[int]lastEnd
}

type lastEnd struct {
	opID string
	seq  uint64
	at   time.Time // when it ended
}

type nonceEntry struct {
	opID    string
	expires time.Time
}

func newState() *state {
	return &state{
		inflight:  make(map[string]*flight),
		inflightK: make(map[string]string),
		completed: make(map[string]completion),
		lastEnded: make(map[int]lastEnd),
		prov:      make(map[int]*provenance),
		nonces:    make(map[string]nonceEntry),
		upids:     make(map[string]string),
	}
}

// apply folds r into s. It fails only for records inconsistent with what
// came before; appends are validated first, so at run time it never fails.
func (s *state) apply(r record) error {
	s.seq++
	switch r.Type {
	case typeBegin:
		op := cloneOp(*r.Begin)
		if _, dup := s.inflight[op.ID]; dup {
			return fmt.Errorf("begin for op %s, which is already in flight", op.ID)
		}
		s.inflight[op.ID] = &flight{op: op, seq: s.seq}
		if op.IdemKey != "" {
			s.inflightK[op.IdemKey] = op.ID
		}
		if op.Nonce != "" {
			s.nonces[op.Nonce] = nonceEntry{opID: op.ID, expires: op.NonceExpires}
		}
		if op.UPID != "" {
			s.upids[op.UPID] = op.ID
		}
		if isCreate(op.Action.Op) {
			s.prov[op.Action.VMID] = &provenance{createOp: op.ID, seq: s.seq, at: op.Time}
		} else if p, ok := s.prov[op.Action.VMID]; ok && (op.Action.Op == action.Start || op.Action.Op == action.Reboot) {
			p.started = true
		}
	case typeTask:
		f, ok := s.inflight[r.Task.ID]
		if !ok {
			return fmt.Errorf("task record for op %s, which is not in flight", r.Task.ID)
		}
		f.op.UPID = r.Task.UPID
		s.upids[r.Task.UPID] = f.op.ID
	case typeEnd:
		f, ok := s.inflight[r.End.ID]
		if !ok {
			return fmt.Errorf("end record for op %s, which is not in flight", r.End.ID)
		}
		delete(s.inflight, r.End.ID)
		op := f.op
		if op.IdemKey != "" {
			delete(s.inflightK, op.IdemKey)
			c := completion{opID: op.ID, upid: op.UPID, vmid: op.Action.VMID, result: r.End.Result, at: r.End.Time, seq: s.seq}
			if !r.End.Result.Retry {
				c.nonce, c.expiry = op.Nonce, op.NonceExpires
			}
			s.completed[op.IdemKey] = c
			s.lastEnded[c.vmid] = lastEnd{opID: c.opID, seq: c.seq, at: c.at}
		}
		if op.Nonce != "" && r.End.Result.Retry {
			delete(s.nonces, op.Nonce) // PVE proves it did not run: not spent
		}
		s.endProvenance(op, f.seq, r.End.Result, r.End.Time)
	case typeDecision:
		d := *r.Decision
		d.Action = cloneAction(d.Action)
		d.Signers = slices.Clone(d.Signers)
		s.decisions = append(s.decisions, decisionEntry{d: d, seq: s.seq})
	case typeCompleted:
		c := r.Completed
		s.completed[c.IdemKey] = completion{opID: c.ID, upid: c.UPID, vmid: c.VMID, result: c.Result, at: c.Time, seq: s.seq, nonce: c.Nonce, expiry: c.NonceExpires}
		s.lastEnded[c.VMID] = lastEnd{opID: c.ID, seq: s.seq, at: c.Time}
		if c.Nonce != "" {
			s.nonces[c.Nonce] = nonceEntry{opID: c.ID, expires: c.NonceExpires}
		}
		if c.UPID != "" {
			s.upids[c.UPID] = c.ID
		}
	case typeProvenance:
		p := r.Provenance
		s.prov[p.VMID] = &provenance{createOp: p.CreateOp, seq: s.seq, ended: true, failed: p.Failed, at: p.Time, remains: p.Remains, started: p.Started}
	case typeSnapshot:
		s.applySnapshot(r.Snapshot)
	case typeMark:
		s.events = r.Mark.Seq
	default:
		return fmt.Errorf("unknown record type %d", byte(r.Type))
	}
	if r.isEvent() {
		s.events++
	}
	return nil
}

// endProvenance updates create provenance when op (begun at seq) ends.
func (s *state) endProvenance(op Op, seq uint64, r Result, at time.Time) {
	p, ok := s.prov[op.Action.VMID]
	if !ok {
		return
	}
	switch {
	case isCreate(op.Action.Op) && p.createOp == op.ID && op.UPID == "" && !r.OK:
		// PVE never started a create task for this op (the request was
		// refused, for example because the vmid was taken meanwhile, or
		// never sent): whatever guest has this vmid is not the agent's.
		delete(s.prov, op.Action.VMID)
	case isCreate(op.Action.Op) && p.createOp == op.ID:
		p.ended, p.failed, p.at = true, !r.OK, at
		if !r.OK {
			p.remains = r.RemainsDigest
		}
	case r.OK && seq > p.seq && op.Action.Op == action.Destroy:
		// The guest the agent created is gone; a guest that later takes
		// the vmid is not the agent's.
		delete(s.prov, op.Action.VMID)
	case r.OK && seq > p.seq:
		p.failed = false
	}
}

// isCreate reports whether op makes a new guest (create or clone): both
// give the agent provenance over it.
func isCreate(op action.Op) bool { return op == action.Create || op == action.Clone }

// prune drops completed idempotency keys and decisions older than cutoff,
// except a completion whose spent nonce has not expired at now: it is kept
// until the signature could no longer be presented.
func (s *state) prune(cutoff, now time.Time) {
	maps.DeleteFunc(s.completed, func(_ string, c completion) bool {
		return c.at.Before(cutoff) && (c.nonce == "" || !now.Before(c.expiry))
	})
	// What a reopen of the compacted file would rebuild: the latest
	// completion kept, per guest.
	clear(s.lastEnded)
	for _, c := range s.completed {
		if l, ok := s.lastEnded[c.vmid]; !ok || c.seq > l.seq {
			s.lastEnded[c.vmid] = lastEnd{opID: c.opID, seq: c.seq, at: c.at}
		}
	}
	maps.DeleteFunc(s.nonces, func(_ string, n nonceEntry) bool {
		_, live := s.inflight[n.opID]
		return !live && !now.Before(n.expires)
	})
	live := make(map[string]bool, len(s.completed)+len(s.inflight))
	for _, c := range s.completed {
		live[c.opID] = true
	}
	for id := range s.inflight {
		live[id] = true
	}
	maps.DeleteFunc(s.upids, func(_ string, id string) bool { return !live[id] })
	s.decisions = slices.DeleteFunc(s.decisions, func(e decisionEntry) bool { return e.d.Time.Before(cutoff) })
	s.decisions = slices.Clip(s.decisions)
}

// snapshot returns the records that rebuild s, in the order of the records
// they summarize, so that "begun after" relations between ops are kept.
func (s *state) snapshot() []record {
	type item struct {
		seq uint64
		r   record
	}
	var items []item
	for _, f := range s.inflight {
		op := cloneOp(f.op)
		items = append(items, item{f.seq, record{Type: typeBegin, Begin: &op}})
	}
	for key, c := range s.completed {
		items = append(items, item{c.seq, record{Type: typeCompleted, Completed: &completedRecord{ID: c.opID, IdemKey: key, VMID: c.vmid, Time: c.at, Result: c.result,
			UPID: c.upid, Nonce: c.nonce, NonceExpires: c.expiry}}})
	}
	for vmid, p := range s.prov {
		if !p.ended {
			continue // rebuilt by the in-flight create's begin record
		}
		items = append(items, item{p.seq, record{Type: typeProvenance, Provenance: &provenanceRecord{VMID: vmid, CreateOp: p.createOp, Failed: p.failed, Time: p.at, Remains: p.remains, Started: p.started}}})
	}
	for _, e := range s.decisions {
		d := e.d
		items = append(items, item{e.seq, record{Type: typeDecision, Decision: &d}})
	}
	for _, e := range s.snapshotRecords() {
		items = append(items, item{e.seq, e.r})
	}
	// Every item comes from a distinct record, so sequences are unique.
	slices.SortFunc(items, func(a, b item) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]record, len(items))
	for i, it := range items {
		out[i] = it.r
	}
	return out
}

func cloneAction(a action.Action) action.Action {
	a.Params = maps.Clone(a.Params)
	return a
}

func cloneOp(op Op) Op {
	op.Action = cloneAction(op.Action)
	op.Signers = slices.Clone(op.Signers)
	return op
}
