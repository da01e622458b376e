package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/atomicfile"
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
// journal record is durable. ReceiptsAckFile holds the sequence number and
// hash of the last receipt the hub acknowledged. Receipts are shipped
// from the one after it; acknowledged ones are pruned, keeping the last
// keepAcked so a hub that lost some can be sent them again.
const (
	ReceiptsFile    = "receipts"
	ReceiptsAckFile = "receipts-ack.json"
)

const (
	keepAcked         = 1000
	maxReceiptFrame   = 256 << 10
	maxReceiptBatch   = 500
	maxReceiptsOnDisk = 1 << 30
)

var receiptFormat = frame.Format{Min: 2, Max: maxReceiptFrame, Plausible: func(p []byte) bool { return p[0] == '{' }}

// receiptHead is a point of the chain: a sequence number and its hash.
type receiptHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// receipts is the receipt log and what the hub acknowledged. record is
// the journal's OnRecord hook; ship runs on the tick loop. Safe for
// concurrent use.
type receipts struct {
	path, ackPath string
	host          string
	log           *slog.Logger

	mu    sync.Mutex
	f     *os.File
	kept  []wire.Receipt // contiguous, ending at head
	head  receiptHead    // the last receipt appended
	acked receiptHead    // the last receipt the hub acknowledged
	err   error          // appending failed: no more receipts are made
}

// openReceipts opens the receipt log of stateDir, cutting off a torn tail.
// Damage (a bad frame that a good one follows) or a broken chain is an
// error: the audit history must not be silently shortened.
func openReceipts(stateDir, host string, log *slog.Logger) (*receipts, error) {
	r := &receipts{path: filepath.Join(stateDir, ReceiptsFile), ackPath: filepath.Join(stateDir, ReceiptsAckFile), host: host, log: log}
	r.acked = receiptHead{Hash: wire.ZeroHash}
	if b, err := safefile.ReadFileNoFollow(r.ackPath, 4<<10); err == nil {
		if err := json.Unmarshal(b, &r.acked); err != nil || len(r.acked.Hash) != len(wire.ZeroHash) {
			return nil, fmt.Errorf("agent: %s is unreadable (%v); remove it to ship every receipt held again", r.ackPath, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("agent: reading %s: %w", r.ackPath, err)
	}
	data, err := safefile.ReadFileNoFollow(r.path, maxReceiptsOnDisk)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("agent: reading the receipt log: %w", err)
	}
	end, err := receiptFormat.Scan(data, 0, func(_ int, p []byte) error {
		var rc wire.Receipt
		if err := json.Unmarshal(p, &rc); err != nil {
			return err
		}
		r.kept = append(r.kept, rc)
		return nil
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("agent: the receipt log %s is damaged (%w); move it aside to start a new one (the hub will report the gap)", r.path, err)
	}
	r.head = r.acked
	if n := len(r.kept); n > 0 {
		first := r.kept[0]
		if _, _, err := wire.VerifyChain(first.Seq-1, first.Prev, r.kept); err != nil {
			return nil, fmt.Errorf("agent: the receipt log %s: %w; move it aside to start a new one (the hub will report the gap)", r.path, err)
		}
		r.head = receiptHead{Seq: r.kept[n-1].Seq, Hash: r.kept[n-1].Hash}
	}
	if r.f, err = os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY, 0o600); err != nil {
		return nil, fmt.Errorf("agent: opening the receipt log: %w", err)
	}
	if end < len(data) {
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

// record appends a journal record to the receipt log, chained to the
// receipt before it, and fsyncs it. It is the journal's OnRecord hook. A
// failed write stops the receipts (logged once): the chain would
// otherwise hide the loss.
func (r *receipts) record(ev journal.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil || r.f == nil {
		return
	}
	rs := []wire.Receipt{receiptOf(ev)}
	wire.Chain(r.head.Seq, r.head.Hash, rs)
	b, err := json.Marshal(rs[0])
	if err == nil && len(b) > maxReceiptFrame {
		err = fmt.Errorf("receipt of %d bytes", len(b))
	}
	if err == nil {
		if _, err = r.f.Write(frame.Append(nil, b)); err == nil {
			err = r.f.Sync()
		}
	}
	if err != nil {
		r.err = err
		r.log.Error("writing the receipt log failed; no more receipts are shipped until the agent restarts", "path", r.path, "err", err)
		return
	}
	r.kept = append(r.kept, rs[0])
	r.head = receiptHead{Seq: rs[0].Seq, Hash: rs[0].Hash}
}

// unacked returns up to maxReceiptBatch receipts after the acknowledged
// one.
func (r *receipts) unacked() []wire.Receipt {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []wire.Receipt
	for _, rc := range r.kept {
		if rc.Seq > r.acked.Seq {
			out = append(out, rc)
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
	b, _ := json.Marshal(h)
	if err := atomicfile.Write(r.ackPath, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("agent: saving the receipt acknowledgement: %w", err)
	}
	r.acked = h
	acked := 0
	for _, rc := range r.kept {
		if rc.Seq <= h.Seq {
			acked++
		}
	}
	if acked <= 2*keepAcked || r.f == nil {
		return nil
	}
	// Rewrite the log with the last keepAcked acknowledged receipts and
	// every unacknowledged one.
	keep := r.kept[acked-keepAcked:]
	var data []byte
	for _, rc := range keep {
		b, _ := json.Marshal(rc)
		data = frame.Append(data, b)
	}
	if err := atomicfile.Write(r.path, data, 0o600); err != nil {
		return fmt.Errorf("agent: compacting the receipt log: %w", err)
	}
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		r.err = err
		return fmt.Errorf("agent: reopening the receipt log: %w", err)
	}
	r.f.Close()
	r.f, r.kept = f, append([]wire.Receipt(nil), keep...)
	return nil
}

// at returns the head at seq if the receipt is kept (seq 0: the start).
func (r *receipts) at(seq uint64) (receiptHead, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq == 0 {
		return receiptHead{Hash: wire.ZeroHash}, true
	}
	for _, rc := range r.kept {
		if rc.Seq == seq {
			return receiptHead{Seq: seq, Hash: rc.Hash}, true
		}
	}
	return receiptHead{}, false
}

// ship sends the receipts the hub has not acknowledged, one batch per
// call. A hub that answers with a gap says where its chain ends: shipping
// resumes from there when the receipts are still kept, and the loss is
// logged when they are not.
func (r *receipts) ship(ctx context.Context, c *hubclient.Client) error {
	batch := r.unacked()
	if len(batch) == 0 {
		return nil
	}
	head, err := c.Receipts(ctx, wire.Receipts{Host: r.host, Receipts: batch})
	var gap *hubclient.ReceiptGapError
	switch {
	case errors.As(err, &gap):
		h, ok := r.at(gap.Have)
		if !ok {
			r.log.Error("the hub's receipt chain ends at a receipt this agent does not hold; the audit history on the hub has a gap",
				"hub_seq", gap.Have)
			return err
		}
		r.log.Warn("the hub holds receipts up to another point; resending from there", "hub_seq", gap.Have)
		return r.setAcked(h)
	case err != nil:
		return err
	}
	last := batch[len(batch)-1]
	if head.Seq != last.Seq || head.Hash != last.Hash {
		r.log.Error("the hub acknowledged receipts with another chain head", "want_seq", last.Seq, "hub_seq", head.Seq)
		return fmt.Errorf("agent: the hub acknowledged receipts up to %d, not %d", head.Seq, last.Seq)
	}
	return r.setAcked(receiptHead{Seq: last.Seq, Hash: last.Hash})
}
