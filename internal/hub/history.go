package hub

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/wire"
)

// HistoryJSON is a host's audit trail as GET /v1/hosts/{host}/history
// answers it: the journal receipts its agent shipped, one entry per
// operation (its begin, task and end receipts joined by op id) or gate
// decision, oldest first.
type HistoryJSON struct {
	Host string `json:"host"`
	// Head is the sequence number of the last receipt the hub holds
	// (0: none); After of a later request continues from it.
	Head    uint64             `json:"head"`
	Entries []HistoryEntryJSON `json:"entries"`
}

// HistoryEntryJSON is one operation or gate decision.
type HistoryEntryJSON struct {
	// Type is "operation" (a mutation: begin, then task, then end),
	// "decision" (the gate held or refused something) or "break" (the
	// agent started a new segment of its receipt chain: Reason says why
	// and what may be missing before it).
	Type string `json:"type"`
	// Seq is the sequence number of the entry's first receipt.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Op is the journal's op id (operations only).
	Op     string       `json:"op,omitempty"`
	VMID   int          `json:"vmid,omitempty"`
	Action *wire.Action `json:"action,omitempty"`
	// Source is why it ran: reconcile (desired state), signed (a signed
	// job) or recovery (finishing an op a crash interrupted).
	Source string `json:"source,omitempty"`
	// Signers are the fingerprints of the keys that authorized it.
	Signers []string `json:"signers,omitempty"`
	Nonce   string   `json:"nonce,omitempty"`
	// Job and AskedBy name the signed job whose nonce the op carries and
	// the operator who uploaded it, when the hub holds that job.
	Job     string `json:"job,omitempty"`
	AskedBy string `json:"asked_by,omitempty"`
	// UPID is PVE's task id, once the agent learned it.
	UPID string `json:"upid,omitempty"`
	// Result is how the op ended; nil while it has no end receipt.
	Result  *wire.OpResult `json:"result,omitempty"`
	EndedAt *time.Time     `json:"ended_at,omitempty"`
	// Decision fields.
	Class   string `json:"class,omitempty"`
	Verdict string `json:"verdict,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// maxHistoryScan bounds the receipts one history request reads.
const maxHistoryScan = 200_000

// history answers GET /v1/hosts/{host}/history?vmid=N&after=SEQ&limit=N:
// the newest limit entries (default 100, at most 1000) built from the
// receipts after SEQ, of guest N only when vmid is given.
func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	host := r.PathValue("host")
	q := r.URL.Query()
	limit, err := limitParam(r, 100, 1000)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_query", err.Error())
		return
	}
	var after uint64
	if v := q.Get("after"); v != "" {
		if after, err = strconv.ParseUint(v, 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, "bad_query", fmt.Sprintf("after=%q: want a receipt sequence number (a whole number >= 0)", v))
			return
		}
	}
	vmid := 0
	if v := q.Get("vmid"); v != "" {
		if vmid, err = strconv.Atoi(v); err != nil || vmid < 1 {
			writeError(w, http.StatusBadRequest, "bad_query", fmt.Sprintf("vmid=%q: want a guest id (a whole number >= 1)", v))
			return
		}
	}
	if _, err := s.st.Host(r.Context(), host); err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "no_such_host", fmt.Sprintf("no host %q", host))
		return
	}
	entries, head, err := s.hostHistory(r.Context(), host, after)
	if err != nil {
		s.storeError(w, r, err, http.StatusNotFound, "no_such_host", "")
		return
	}
	out := HistoryJSON{Host: host, Head: head, Entries: []HistoryEntryJSON{}}
	for _, e := range entries {
		if vmid != 0 && e.VMID != vmid {
			continue
		}
		out.Entries = append(out.Entries, e)
	}
	if len(out.Entries) > limit {
		out.Entries = out.Entries[len(out.Entries)-limit:]
	}
	writeJSON(w, http.StatusOK, out)
}

// hostHistory reads host's receipts after after (at most maxHistoryScan
// of them) and joins them into entries (HistoryEntries), each signed op
// named with its job and the operator who uploaded it when the hub holds
// that job. It returns the head of the chain too.
func (s *Server) hostHistory(ctx context.Context, host string, after uint64) ([]HistoryEntryJSON, uint64, error) {
	head, err := s.st.ReceiptHead(ctx, host)
	if err != nil {
		return nil, 0, err
	}
	var rs []wire.Receipt
	for cur := after; len(rs) < maxHistoryScan; {
		page, err := s.st.Receipts(ctx, host, cur, 1000)
		if err != nil {
			return nil, 0, err
		}
		if len(page) == 0 {
			break
		}
		rs = append(rs, page...)
		cur = page[len(page)-1].Seq
	}
	// Who asked for a signed op: the uploader of the job with its nonce.
	jobs, err := s.st.Jobs(ctx, host, "")
	if err != nil {
		return nil, 0, err
	}
	byNonce := map[string][2]string{}
	for _, j := range jobs {
		if p, err := signedop.ParsePayload(j.Payload); err == nil {
			byNonce[p.Nonce] = [2]string{j.ID, j.Uploader}
		}
	}
	entries := HistoryEntries(rs)
	for i, e := range entries {
		if j, ok := byNonce[e.Nonce]; ok && e.Nonce != "" {
			entries[i].Job, entries[i].AskedBy = j[0], j[1]
		}
	}
	return entries, head.Seq, nil
}

// HistoryEntries joins receipts into entries: the begin, task and end
// receipts of one op id become one operation (a task or end whose begin
// is not among rs starts an entry of its own, so a window that cuts an
// op shows what it has), each decision and each break one entry. Entries are ordered by
// their first receipt.
func HistoryEntries(rs []wire.Receipt) []HistoryEntryJSON {
	var out []HistoryEntryJSON
	ops := map[string]int{} // op id -> index in out
	for _, rc := range rs {
		if rc.Type == wire.ReceiptBreak {
			out = append(out, HistoryEntryJSON{Type: "break", Seq: rc.Seq, Time: rc.Time, Reason: rc.Reason})
			continue
		}
		if rc.Type == wire.ReceiptDecision {
			e := HistoryEntryJSON{Type: "decision", Seq: rc.Seq, Time: rc.Time, Action: rc.Action, Source: rc.Source,
				Signers: rc.Signers, Nonce: rc.Nonce, Class: rc.Class, Verdict: rc.Verdict, Reason: rc.Reason}
			if rc.Action != nil {
				e.VMID = rc.Action.VMID
			}
			out = append(out, e)
			continue
		}
		i, ok := ops[rc.Op]
		if !ok {
			out = append(out, HistoryEntryJSON{Type: "operation", Seq: rc.Seq, Time: rc.Time, Op: rc.Op})
			i = len(out) - 1
			ops[rc.Op] = i
		}
		e := &out[i]
		switch rc.Type {
		case wire.ReceiptBegin:
			e.Time, e.Action, e.Source, e.Signers, e.Nonce = rc.Time, rc.Action, rc.Source, rc.Signers, rc.Nonce
			if rc.Action != nil {
				e.VMID = rc.Action.VMID
			}
		case wire.ReceiptTask:
			e.UPID = rc.UPID
		case wire.ReceiptEnd:
			e.Result = rc.Result
			t := rc.Time
			e.EndedAt = &t
		}
	}
	return out
}
