package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Types of a Receipt, one per journal record that changes an op's fate or
// records a gate decision.
const (
	ReceiptBegin    = "begin"
	ReceiptTask     = "task"
	ReceiptEnd      = "end"
	ReceiptDecision = "decision"
	// ReceiptBreak starts a new segment of the chain: the agent could not
	// continue the one before (its receipt log was damaged and set aside,
	// or its journal was compacted past records it had made no receipt
	// for, or the hub holds receipts it no longer has). Reason says what
	// happened and what may be missing. A break is numbered on (Seq is
	// the one after the receipt before) but its Prev is ZeroHash: it
	// links to nothing, and a hub that accepts one reports it. Wire
	// version 5: an agent sends one only to a hub that names 5 or later.
	ReceiptBreak = "break"
)

// Receipt is one journal record shipped to the hub as the host's audit
// history. Receipts form a hash chain: Seq counts from 1 without gaps,
// Prev is the Hash of the receipt before (the hex SHA-256 zero hash
// ZeroHash for the first), and Hash is ReceiptHash of the receipt. A hub
// that keeps the chain can show that no record was dropped, altered or
// reordered after it was shipped.
type Receipt struct {
	Seq  uint64    `json:"seq"`
	Prev string    `json:"prev"`
	Hash string    `json:"hash"`
	Time time.Time `json:"time"`
	Type string    `json:"type"`
	Op   string    `json:"op,omitempty"` // the op id (begin, task, end)
	// Begin and decision fields.
	Source  string   `json:"source,omitempty"`
	Action  *Action  `json:"action,omitempty"`
	Signers []string `json:"signers,omitempty"`
	Nonce   string   `json:"nonce,omitempty"`
	// Task field.
	UPID string `json:"upid,omitempty"`
	// End fields.
	Result *OpResult `json:"result,omitempty"`
	// Decision fields (Reason is a break's too).
	Class   string `json:"class,omitempty"`
	Verdict string `json:"verdict,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// OpResult is how an op ended (journal.Result without agent-local fields).
type OpResult struct {
	OK         bool   `json:"ok"`
	ExitStatus string `json:"exit_status,omitempty"`
	Error      string `json:"error,omitempty"`
	Resolution string `json:"resolution,omitempty"`
	Retry      bool   `json:"retry,omitempty"`
}

// Receipts is a batch of consecutive receipts.
type Receipts struct {
	Host     string    `json:"host"`
	Receipts []Receipt `json:"receipts"`
}

// ZeroHash is the Prev of the first receipt of a host.
const ZeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// ReceiptHash returns the hash that chains r: the hex SHA-256 of r's JSON
// encoding with Hash empty (Prev included, so each hash covers the whole
// history before it).
func ReceiptHash(r Receipt) string {
	r.Hash = ""
	b, err := json.Marshal(r)
	if err != nil { // unreachable: every field marshals
		panic("wire: encoding a receipt: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Chain fills Seq, Prev and Hash of rs so they continue a chain whose last
// receipt had sequence seq and hash prev (0 and ZeroHash to start one).
func Chain(seq uint64, prev string, rs []Receipt) {
	for i := range rs {
		seq++
		rs[i].Seq, rs[i].Prev = seq, prev
		rs[i].Hash = ReceiptHash(rs[i])
		prev = rs[i].Hash
	}
}

// Chain errors, wrapped by VerifyChain.
var (
	ErrChainGap    = errors.New("wire: receipt chain has a gap")
	ErrChainBroken = errors.New("wire: receipt chain is broken")
)

// VerifyChain checks that rs continue a chain whose last receipt had
// sequence seq and hash prev: consecutive sequence numbers (ErrChainGap
// otherwise), each Prev equal to the hash before and each Hash equal to
// ReceiptHash (ErrChainBroken otherwise). A ReceiptBreak receipt is the
// one exception to the links: its Prev must be ZeroHash, whatever came
// before. It returns the new last sequence and hash. A gap or a broken
// link is reported, never repaired; a break is explicit, and whoever
// accepts one reports it (Breaks).
func VerifyChain(seq uint64, prev string, rs []Receipt) (uint64, string, error) {
	for i, r := range rs {
		if r.Seq != seq+1 {
			return seq, prev, fmt.Errorf("%w: receipts[%d] has seq %d, want %d", ErrChainGap, i, r.Seq, seq+1)
		}
		if r.Type == ReceiptBreak {
			if r.Prev != ZeroHash {
				return seq, prev, fmt.Errorf("%w: receipts[%d] (seq %d) is a break naming previous hash %.16s…; a break names the zero hash", ErrChainBroken, i, r.Seq, r.Prev)
			}
		} else if r.Prev != prev {
			return seq, prev, fmt.Errorf("%w: receipts[%d] (seq %d) names previous hash %.16s…, the chain's is %.16s…", ErrChainBroken, i, r.Seq, r.Prev, prev)
		}
		if h := ReceiptHash(r); r.Hash != h {
			return seq, prev, fmt.Errorf("%w: receipts[%d] (seq %d) has hash %.16s…, its content hashes to %.16s…", ErrChainBroken, i, r.Seq, r.Hash, h)
		}
		seq, prev = r.Seq, r.Hash
	}
	return seq, prev, nil
}

// Breaks returns the ReceiptBreak receipts among rs.
func Breaks(rs []Receipt) []Receipt {
	var out []Receipt
	for _, r := range rs {
		if r.Type == ReceiptBreak {
			out = append(out, r)
		}
	}
	return out
}

// EncodeReceipts returns rs's JSON encoding.
func EncodeReceipts(rs Receipts) ([]byte, error) { return encode("receipts", rs) }

// DecodeReceipts strictly decodes and validates a batch of receipts. It
// checks the batch's own chain links; whether the batch continues what the
// receiver holds is VerifyChain's job.
func DecodeReceipts(b []byte) (Receipts, error) {
	rs, err := decode[Receipts]("receipts", b, MaxReceiptsSize)
	if err != nil {
		return Receipts{}, err
	}
	if err := rs.Validate(); err != nil {
		return Receipts{}, err
	}
	return rs, nil
}

// Validate checks the values of rs and that its receipts link to each
// other (the first one's Prev is not checked).
func (rs Receipts) Validate() error {
	c := &checker{msg: "receipts"}
	c.text("host", rs.Host, true)
	c.count("receipts", len(rs.Receipts), MaxItems)
	for i, r := range rs.Receipts {
		p := fmt.Sprintf("receipts[%d]", i)
		if r.Seq == 0 {
			c.fail(p+".seq", "sequence numbers start at 1")
		}
		c.hex64(p+".prev", "a hash", r.Prev)
		c.hex64(p+".hash", "a hash", r.Hash)
		c.oneOf(p+".type", r.Type, ReceiptBegin, ReceiptTask, ReceiptEnd, ReceiptDecision, ReceiptBreak)
		switch r.Type {
		case ReceiptDecision:
		case ReceiptBreak:
			c.text(p+".reason", r.Reason, true)
		default:
			c.text(p+".op", r.Op, true)
		}
		c.text(p+".source", r.Source, false)
		if r.Action != nil {
			c.action(p+".action", *r.Action)
		}
		c.count(p+".signers", len(r.Signers), MaxParams)
		for j, s := range r.Signers {
			c.text(fmt.Sprintf("%s.signers[%d]", p, j), s, true)
		}
		c.text(p+".nonce", r.Nonce, false)
		c.text(p+".upid", r.UPID, false)
		if r.Result != nil {
			c.text(p+".result.exit_status", r.Result.ExitStatus, false)
			c.text(p+".result.error", r.Result.Error, false)
			c.text(p+".result.resolution", r.Result.Resolution, false)
		}
		c.text(p+".class", r.Class, false)
		c.text(p+".verdict", r.Verdict, false)
		c.text(p+".reason", r.Reason, false)
	}
	if c.err != nil {
		return c.err
	}
	if len(rs.Receipts) > 0 {
		first := rs.Receipts[0]
		if _, _, err := VerifyChain(first.Seq-1, first.Prev, rs.Receipts); err != nil {
			return fmt.Errorf("wire: receipts: %w", err)
		}
	}
	return nil
}
