package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/atomicfile"
	"github.com/steward-pve/steward/internal/crashpoint"
	"github.com/steward-pve/steward/internal/frame"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/safefile"
	"github.com/steward-pve/steward/internal/wire"
)

// Receipt files under the state directory (agents with a hub).
//
// ReceiptsFile is the receipt log: every journal record (begin, task,
// end, decision) as a wire.Receipt, hash-chained, one frame each (package
// frame: length, CRC-32C, JSON), appended and fsynced right after the
// journal record is durable. Each frame also holds "jseq", the number of
// the journal record it was made from (journal.Event.Seq), and a frame
// {"mark":true,"jseq":N} says the log covers the journal up to record N
// without a receipt for it (written when a log is started next to a
// journal with history, and when the log is rewritten). The last frame
// that names a journal record says how far the log covers the journal: at
// start the agent makes, in order, the receipts of the records after it
// that the journal still holds (a crash between the journal's fsync and
// the receipt's lost them), and starts a new segment of the chain with a
// break receipt when the journal was compacted past records that have
// none.
//
// ReceiptsAckFile holds the sequence number, hash and journal record of
// the last receipt the hub acknowledged. Receipts are shipped from the one
// after it; acknowledged ones are pruned, keeping the last keepAcked so a
// hub that lost some can be sent them again.
//
// A receipt log that cannot be read (damaged in the middle, a broken
// chain, a symlink, a directory, larger than maxReceiptsOnDisk) or an
// acknowledgement file that cannot be parsed is set aside: renamed to
// NAME.damaged-TIME next to it (the directory fsynced) and logged at
// error level. Receipts are audit, not safety, so the agent goes on: a new
// log starts with a break receipt saying what happened, followed by the
// receipts of the journal records after the last receipt the hub
// acknowledged, where the journal still holds them; the hub reports the
// break.
const (
	ReceiptsFile    = "receipts"
	ReceiptsAckFile = "receipts-ack.json"
)

const (
	keepAcked         = 1000
	maxReceiptFrame   = 256 << 10
	maxReceiptBatch   = 500
	maxReceiptsOnDisk = 1 << 30
	// breakVersion is the wire version that carries break receipts.
	breakVersion = 5
)

var receiptFormat = frame.Format{Min: 2, Max: maxReceiptFrame, Plausible: func(p []byte) bool { return p[0] == '{' }}

// receiptHead is a point of the chain: a sequence number and its hash,
// and the journal record that receipt was made from (0: unknown).
type receiptHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
	JSeq uint64 `json:"jseq,omitempty"`
}

// logEntry is one frame of the receipt log: a receipt made from journal
// record JSeq (0 in a log from an agent before journal numbers), or, with
// Mark, only the journal record the log covers up to.
type logEntry struct {
	wire.Receipt
	JSeq uint64 `json:"jseq,omitempty"`
	Mark bool   `json:"mark,omitempty"`
}

// markEntry is how a mark is written.
type markEntry struct {
	Mark bool   `json:"mark"`
	JSeq uint64 `json:"jseq"`
}

// covers reports whether e says how far the log covers the journal: a
// mark, a break, or a receipt made from a numbered journal record.
func (e logEntry) covers() bool { return e.Mark || e.Type == wire.ReceiptBreak || e.JSeq > 0 }

func (e logEntry) encode() ([]byte, error) {
	if e.Mark {
		return json.Marshal(markEntry{Mark: true, JSeq: e.JSeq})
	}
	return json.Marshal(e)
}

// parseReceiptLog reads the frames of a receipt log: the entries, and end,
// the offset after the last whole frame (bytes after it are a torn tail: a
// crash mid-append). A bad frame that a good one follows, a frame that is
// not an entry, or receipts that do not chain (wire.VerifyChain, breaks
// included) are an error naming the offset or the receipt.
func parseReceiptLog(data []byte) (entries []logEntry, end int, err error) {
	end, err = receiptFormat.Scan(data, 0, func(off int, p []byte) error {
		var e logEntry
		dec := json.NewDecoder(bytes.NewReader(p))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return fmt.Errorf("the frame at offset %d is not a receipt (%v)", off, err)
		}
		if dec.More() {
			return fmt.Errorf("the frame at offset %d has data after its receipt", off)
		}
		if !e.Mark && e.Type == "" {
			return fmt.Errorf("the frame at offset %d is neither a receipt nor a mark", off)
		}
		entries = append(entries, e)
		return nil
	}, nil)
	var de *frame.DamageError
	if errors.As(err, &de) {
		return nil, 0, fmt.Errorf("a bad frame at offset %d with a good one after it at offset %d", de.Offset, de.Next)
	}
	if err != nil {
		return nil, 0, err
	}
	rs := receiptsOf(entries)
	if len(rs) > 0 {
		if rs[0].Seq == 0 {
			return nil, 0, errors.New("the first receipt has sequence number 0")
		}
		if _, _, err := wire.VerifyChain(rs[0].Seq-1, rs[0].Prev, rs); err != nil {
			return nil, 0, err
		}
	}
	return entries, end, nil
}

func receiptsOf(es []logEntry) []wire.Receipt {
	var rs []wire.Receipt
	for _, e := range es {
		if !e.Mark {
			rs = append(rs, e.Receipt)
		}
	}
	return rs
}

// receipts is the receipt log and what the hub acknowledged. record is
// the journal's OnRecord hook; catchUp runs once at start, after the
// journal is open and before anything is appended to it; ship runs on the
// tick loop. Safe for concurrent use.
type receipts struct {
	path, ackPath string
	host          string
	log           *slog.Logger
	now           func() time.Time

	mu    sync.Mutex
	f     *os.File
	kept  []logEntry  // receipts (no marks), contiguous, ending at head
	head  receiptHead // the last receipt appended
	acked receiptHead // the last receipt the hub acknowledged
	// jseq is how far the log covers the journal: every journal record
	// numbered up to it has a receipt or is accounted for by a break.
	// known is false until the log or catchUp says so.
	jseq  uint64
	known bool
	// broken says why the log was set aside at open; catchUp starts the
	// new segment with a break saying so.
	broken string
	// heldBack is set once the agent logged that the hub is too old for
	// a break and the receipts from it wait.
	heldBack bool
	err      error // appending failed: no more receipts are made
}

// openReceipts opens the receipt log of stateDir, cutting off a torn tail
// and setting aside a log or acknowledgement file that cannot be read (see
// ReceiptsFile). It fails only when a damaged file cannot be set aside or
// the log cannot be opened for appending. now nil means time.Now.
func openReceipts(stateDir, host string, log *slog.Logger, now func() time.Time) (*receipts, error) {
	if now == nil {
		now = time.Now
	}
	r := &receipts{path: filepath.Join(stateDir, ReceiptsFile), ackPath: filepath.Join(stateDir, ReceiptsAckFile), host: host, log: log, now: now}
	r.acked = receiptHead{Hash: wire.ZeroHash}
	// A damaged acknowledgement loses no receipt (the hub's answer says
	// where its chain ends), so it is set aside without a break.
	hasAck := false
	if b, err := safefile.ReadFileNoFollow(r.ackPath, 4<<10); err == nil {
		err = json.Unmarshal(b, &r.acked)
		if err == nil && len(r.acked.Hash) != len(wire.ZeroHash) {
			err = fmt.Errorf("hash %q is not a SHA-256", r.acked.Hash)
		}
		if err != nil {
			r.acked = receiptHead{Hash: wire.ZeroHash}
			if _, err := r.setAside(r.ackPath, fmt.Sprintf("unreadable (%v)", err)); err != nil {
				return nil, err
			}
		} else {
			hasAck = true
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		if _, err := r.setAside(r.ackPath, err.Error()); err != nil {
			return nil, err
		}
	}
	var broken []string
	data, err := safefile.ReadFileNoFollow(r.path, maxReceiptsOnDisk)
	exists := err == nil
	var entries []logEntry
	end := 0
	switch {
	case errors.Is(err, os.ErrNotExist):
		if hasAck && r.acked.Seq > 0 {
			broken = append(broken, "the receipt log is missing")
		}
	case err != nil:
		aside, serr := r.setAside(r.path, err.Error())
		if serr != nil {
			return nil, serr
		}
		broken = append(broken, fmt.Sprintf("the receipt log could not be read (%v) and was set aside as %s", err, filepath.Base(aside)))
	default:
		if entries, end, err = parseReceiptLog(data); err != nil {
			aside, serr := r.setAside(r.path, fmt.Sprintf("damaged: %v", err))
			if serr != nil {
				return nil, serr
			}
			broken = append(broken, fmt.Sprintf("the receipt log was damaged (%v) and was set aside as %s", err, filepath.Base(aside)))
			entries, end, exists = nil, 0, false
		}
	}
	r.head = r.acked
	for _, e := range entries {
		if e.covers() {
			r.jseq, r.known = e.JSeq, true
		}
		if !e.Mark {
			r.kept = append(r.kept, e)
		}
	}
	if n := len(r.kept); n > 0 {
		last := r.kept[n-1]
		r.head = receiptHead{Seq: last.Seq, Hash: last.Hash, JSeq: last.JSeq}
	}
	if len(broken) > 0 {
		r.broken = strings.Join(broken, "; ")
		if r.acked.Seq > 0 {
			r.broken += fmt.Sprintf("; receipts after seq %d, the last the hub acknowledged, may be missing", r.acked.Seq)
		}
		if r.acked.JSeq > 0 {
			// Made again from the journal after what the hub
			// acknowledged.
			r.jseq, r.known = r.acked.JSeq, true
		}
	}
	if r.f, err = os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600); err != nil {
		return nil, fmt.Errorf("agent: opening the receipt log: %w", err)
	}
	if !exists {
		if err := syncDir(stateDir); err != nil {
			r.f.Close()
			return nil, fmt.Errorf("agent: creating the receipt log: %w", err)
		}
	}
	if exists && end < len(data) {
		log.Warn("receipt log: cutting off a torn tail", "path", r.path, "bytes", len(data)-end)
	}
	if err := r.f.Truncate(int64(end)); err != nil {
		r.f.Close()
		return nil, fmt.Errorf("agent: repairing the receipt log: %w", err)
	}
	if _, err := r.f.Seek(int64(end), 0); err != nil {
		r.f.Close()
		return nil, err
	}
	return r, nil
}

// setAside renames the damaged file at path to path.damaged-TIME (a
// symlink or directory is renamed, never followed), fsyncs the directory
// and logs it at error level.
func (r *receipts) setAside(path, why string) (string, error) {
	stamp := r.now().UTC().Format("20060102T150405Z")
	aside := path + ".damaged-" + stamp
	for i := 1; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, os.ErrNotExist) {
			break
		}
		aside = fmt.Sprintf("%s.damaged-%s-%d", path, stamp, i)
	}
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("agent: %s is %s and cannot be set aside (%w); move it away by hand", path, why, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return "", fmt.Errorf("agent: setting aside %s: %w", path, err)
	}
	r.log.Error("receipts: set aside a damaged file and started afresh; the hub is told of the break in the receipt chain",
		"path", path, "problem", why, "set_aside_as", aside)
	return aside, nil
}

// syncDir makes a rename or create in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func (r *receipts) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

func wireActionOf(a action.Action) *wire.Action {
	w := &wire.Action{Op: string(a.Op), VMID: a.VMID, Kind: string(a.Kind), Digest: a.Digest}
	if len(a.Params) > 0 {
		w.Params = maps.Clone(a.Params)
	}
	return w
}

func clip(s string) string {
	if len(s) > wire.MaxTextLen {
		return s[:wire.MaxTextLen]
	}
	return s
}

// receiptOf is a journal record as a receipt (not yet chained).
func receiptOf(ev journal.Event) wire.Receipt {
	rc := wire.Receipt{Time: ev.Time.UTC().Round(0), Type: ev.Type, Op: ev.OpID}
	switch {
	case ev.Op != nil:
		rc.Source, rc.Action, rc.Signers, rc.Nonce = ev.Op.Source, wireActionOf(ev.Op.Action), ev.Op.Signers, ev.Op.Nonce
	case ev.Result != nil:
		rc.Result = &wire.OpResult{OK: ev.Result.OK, ExitStatus: clip(ev.Result.ExitStatus), Error: clip(ev.Result.Error),
			Resolution: clip(ev.Result.Resolution), Retry: ev.Result.Retry}
	case ev.Decision != nil:
		d := ev.Decision
		rc.Action, rc.Class, rc.Verdict, rc.Reason, rc.Signers = wireActionOf(d.Action), d.Class, d.Verdict, clip(d.Reason), d.Signers
	}
	rc.UPID = ev.UPID
	return rc
}

// breakEntry is a break receipt (not yet chained) saying why, covering the
// journal up to jseq.
func (r *receipts) breakEntry(why string, jseq uint64) logEntry {
	return logEntry{Receipt: wire.Receipt{Time: r.now().UTC().Round(0), Type: wire.ReceiptBreak, Reason: clip(why)}, JSeq: jseq}
}

// chainEntries numbers the receipts of es on from seq and links each to
// the one before (a break to nothing: its Prev is the zero hash).
func chainEntries(seq uint64, prev string, es []logEntry) {
	for i := range es {
		if es[i].Mark {
			continue
		}
		one := []wire.Receipt{es[i].Receipt}
		if es[i].Type == wire.ReceiptBreak {
			prev = wire.ZeroHash
		}
		wire.Chain(seq, prev, one)
		es[i].Receipt = one[0]
		seq, prev = one[0].Seq, one[0].Hash
	}
}

// catchUp makes the log cover the journal j, which is open and to which
// nothing was appended yet: the receipts of the records after the last one
// the log covers, in order, as the journal still holds them (a crash
// between the journal's fsync and the receipt's lost them), after a break
// when the log was set aside or the journal was compacted past records
// that have no receipt. A log that does not say how far it covers (a new
// one, or one from an agent before journal numbers) covers the journal as
// it is from now on: records from before it are not made receipts.
func (r *receipts) catchUp(j *journal.Journal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil || r.f == nil {
		return
	}
	head := j.Seq()
	var es []logEntry
	var why []string
	if r.broken != "" {
		why = append(why, r.broken)
	}
	switch {
	case !r.known:
		if r.broken != "" {
			why = append(why, "the journal's records up to then cannot be matched to receipts (the acknowledgement predates journal numbers)")
			es = append(es, r.breakEntry(strings.Join(why, "; "), head))
		} else {
			es = append(es, logEntry{Mark: true, JSeq: head})
		}
	case r.jseq > head:
		// The journal holds fewer records than the log covers: it was
		// replaced. Its records are numbered on from its own count.
		r.log.Warn("receipts: the journal holds fewer records than the receipt log covers; it was replaced or restored from a backup",
			"receipt_log_jseq", r.jseq, "journal_seq", head)
		if len(why) > 0 {
			es = append(es, r.breakEntry(strings.Join(why, "; "), head))
		} else {
			es = append(es, logEntry{Mark: true, JSeq: head})
		}
	default:
		evs, first, err := j.Since(r.jseq)
		if err != nil {
			why = append(why, fmt.Sprintf("journal records %d to %d could not be read to make their receipts (%v)", r.jseq+1, head, err))
			es = append(es, r.breakEntry(strings.Join(why, "; "), head))
			break
		}
		if first > r.jseq+1 {
			why = append(why, fmt.Sprintf("journal records %d to %d were compacted before their receipts were made", r.jseq+1, first-1))
		}
		if len(why) > 0 {
			es = append(es, r.breakEntry(strings.Join(why, "; "), max(r.jseq, first-1)))
		}
		for _, ev := range evs {
			es = append(es, logEntry{Receipt: receiptOf(ev), JSeq: ev.Seq})
		}
		if len(evs) > 0 {
			r.log.Warn("receipts: made the receipts of journal records a restart kept from the receipt log", "from_jseq", evs[0].Seq, "to_jseq", evs[len(evs)-1].Seq)
		}
	}
	r.broken = ""
	if len(es) > 0 && !r.appendLocked(es) {
		return
	}
	if len(why) > 0 {
		r.log.Error("receipts: the receipt chain breaks here; the hub reports the break", "reason", strings.Join(why, "; "))
	}
}

// record appends a journal record to the receipt log, chained to the
// receipt before it, and fsyncs it. It is the journal's OnRecord hook. A
// failed write stops the receipts (logged once) until the agent restarts,
// when catchUp makes the missing ones from the journal.
func (r *receipts) record(ev journal.Event) {
	crashpoint.Hit(crashpoint.BeforeReceipt)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil || r.f == nil {
		return
	}
	if r.known && ev.Seq != 0 && ev.Seq <= r.jseq {
		return // made already
	}
	if r.appendLocked([]logEntry{{Receipt: receiptOf(ev), JSeq: ev.Seq}}) {
		crashpoint.Hit(crashpoint.AfterReceipt)
	}
}

// appendLocked chains es on from the head, appends them in one write and
// fsyncs it; it reports whether they are durable.
func (r *receipts) appendLocked(es []logEntry) bool {
	chainEntries(r.head.Seq, r.head.Hash, es)
	var data []byte
	var err error
	for _, e := range es {
		var b []byte
		if b, err = e.encode(); err == nil && len(b) > maxReceiptFrame {
			err = fmt.Errorf("receipt of %d bytes", len(b))
		}
		if err != nil {
			break
		}
		data = frame.Append(data, b)
	}
	if err == nil {
		if _, err = r.f.Write(data); err == nil {
			err = r.f.Sync()
		}
	}
	if err != nil {
		r.err = err
		r.log.Error("writing the receipt log failed; no more receipts are made until the agent restarts (it then makes the missing ones from the journal)", "path", r.path, "err", err)
		return false
	}
	for _, e := range es {
		if e.covers() {
			r.jseq, r.known = e.JSeq, true
		}
		if !e.Mark {
			r.kept = append(r.kept, e)
			r.head = receiptHead{Seq: e.Seq, Hash: e.Hash, JSeq: e.JSeq}
		}
	}
	return true
}

// rewriteLocked replaces the log with r.kept and a mark of r.jseq
// (temporary file, fsync, rename, fsync of the directory) and appends to
// the new file from then on.
func (r *receipts) rewriteLocked() error {
	var data []byte
	for _, e := range append(r.kept[:len(r.kept):len(r.kept)], logEntry{Mark: true, JSeq: r.jseq}) {
		b, err := e.encode()
		if err != nil {
			return err
		}
		data = frame.Append(data, b)
	}
	if err := atomicfile.Write(r.path, data, 0o600); err != nil {
		return fmt.Errorf("agent: rewriting the receipt log: %w", err)
	}
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		r.err = err
		return fmt.Errorf("agent: reopening the receipt log: %w", err)
	}
	r.f.Close()
	r.f = f
	return nil
}

// unacked returns up to maxReceiptBatch receipts after the acknowledged
// one.
func (r *receipts) unacked() []wire.Receipt {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []wire.Receipt
	for _, e := range r.kept {
		if e.Seq > r.acked.Seq {
			out = append(out, e.Receipt)
			if len(out) == maxReceiptBatch {
				break
			}
		}
	}
	return out
}

// setAcked records that the hub holds the chain up to h (persisted), and
// prunes acknowledged receipts beyond keepAcked.
func (r *receipts) setAcked(h receiptHead) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.setAckedLocked(h)
}

func (r *receipts) setAckedLocked(h receiptHead) error {
	b, _ := json.Marshal(h)
	if err := atomicfile.Write(r.ackPath, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("agent: saving the receipt acknowledgement: %w", err)
	}
	r.acked = h
	acked := 0
	for _, e := range r.kept {
		if e.Seq <= h.Seq {
			acked++
		}
	}
	if acked <= 2*keepAcked || r.f == nil {
		return nil
	}
	// Keep the last keepAcked acknowledged receipts and every
	// unacknowledged one.
	r.kept = append([]logEntry(nil), r.kept[acked-keepAcked:]...)
	return r.rewriteLocked()
}

// at returns the head at seq if the receipt is kept (seq 0: the start).
func (r *receipts) at(seq uint64) (receiptHead, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq == 0 {
		return receiptHead{Hash: wire.ZeroHash}, true
	}
	for _, e := range r.kept {
		if e.Seq == seq {
			return receiptHead{Seq: seq, Hash: e.Hash, JSeq: e.JSeq}, true
		}
	}
	return receiptHead{}, false
}

// pendingBreakLocked returns the index in kept of the first break the hub
// has not acknowledged; -1 when there is none.
func (r *receipts) pendingBreakLocked() int {
	for i, e := range r.kept {
		if e.Seq > r.acked.Seq && e.Type == wire.ReceiptBreak {
			return i
		}
	}
	return -1
}

// renumber answers a hub whose chain ends at have, where the agent cannot
// continue it: the segment from the first unacknowledged break (or, when
// there is none, a new break followed by every unacknowledged receipt) is
// numbered on from have. Receipts before it are dropped from the log:
// what the hub holds up to have stands, and the break says what may be
// missing.
func (r *receipts) renumber(have uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := r.pendingBreakLocked()
	var seg []logEntry
	if i >= 0 {
		if r.kept[i].Seq == have+1 {
			return fmt.Errorf("agent: the hub answered a gap at seq %d, where the agent's new segment already starts", have)
		}
		seg = append(seg, r.kept[i:]...)
	} else {
		var first, last uint64
		if n := len(r.kept); n > 0 {
			first, last = r.kept[0].Seq, r.kept[n-1].Seq
		}
		why := fmt.Sprintf("the hub's chain ends at seq %d, which this agent does not hold (it holds seq %d to %d): receipts the hub lacks are lost to it, or it holds some the agent's log no longer has", have, first, last)
		r.log.Error("receipts: the receipt chain breaks here; the hub reports the break", "reason", why)
		seg = append(seg, r.breakEntry(why, r.jseq))
		for _, e := range r.kept {
			if e.Seq > r.acked.Seq {
				seg = append(seg, e)
			}
		}
	}
	chainEntries(have, wire.ZeroHash, seg)
	r.kept = seg
	last := seg[len(seg)-1]
	r.head = receiptHead{Seq: last.Seq, Hash: last.Hash, JSeq: last.JSeq}
	if err := r.rewriteLocked(); err != nil {
		return err
	}
	// The hub holds up to have; its hash there is not known, and no
	// receipt links to it (the segment starts with a break).
	return r.setAckedLocked(receiptHead{Seq: have, Hash: wire.ZeroHash})
}

// ship sends the receipts the hub has not acknowledged, one batch per
// call; hubVersion is the wire version the hub reads (a hub before
// breakVersion is sent the receipts before the first break only, and the
// rest wait for it to be upgraded). A hub that answers with a gap says
// where its chain ends: shipping resumes from there when the receipts are
// still kept, and otherwise goes on in a new segment numbered from there,
// after a break the hub reports.
func (r *receipts) ship(ctx context.Context, c *hubclient.Client, hubVersion int) error {
	batch := r.unacked()
	if hubVersion < breakVersion {
		for i, rc := range batch {
			if rc.Type == wire.ReceiptBreak {
				batch = batch[:i]
				r.mu.Lock()
				if !r.heldBack {
					r.heldBack = true
					r.log.Error("the hub is too old to record a break in the receipt chain; receipts from the break on wait until it is upgraded",
						"hub_wire_version", hubVersion, "seq", rc.Seq)
				}
				r.mu.Unlock()
				break
			}
		}
	}
	if len(batch) == 0 {
		return nil
	}
	head, err := c.Receipts(ctx, wire.Receipts{Host: r.host, Receipts: batch})
	var gap *hubclient.ReceiptGapError
	switch {
	case errors.As(err, &gap):
		r.mu.Lock()
		i := r.pendingBreakLocked()
		segmentBehind := i >= 0 && gap.Have+1 >= r.kept[i].Seq
		r.mu.Unlock()
		if segmentBehind {
			r.log.Warn("the hub's receipt chain ends past where the agent's new segment starts; numbering the segment on from there", "hub_seq", gap.Have)
			return r.renumber(gap.Have)
		}
		if h, ok := r.at(gap.Have); ok {
			r.log.Warn("the hub holds receipts up to another point; resending from there", "hub_seq", gap.Have)
			return r.setAcked(h)
		}
		return r.renumber(gap.Have)
	case err != nil:
		return err
	}
	last := batch[len(batch)-1]
	if head.Seq != last.Seq || head.Hash != last.Hash {
		r.log.Error("the hub acknowledged receipts with another chain head", "want_seq", last.Seq, "hub_seq", head.Seq)
		return fmt.Errorf("agent: the hub acknowledged receipts up to %d, not %d", head.Seq, last.Seq)
	}
	h, ok := r.at(last.Seq)
	if !ok {
		h = receiptHead{Seq: last.Seq, Hash: last.Hash}
	}
	return r.setAcked(h)
}
