package hub

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/wire"
)

func TestHistory(t *testing.T) {
	e := newEnv(t)
	tok := e.enroll("pve-a")
	payload, sig := signedJob(t, "pve-a")
	p, err := signedop.ParsePayload(payload)
	if err != nil {
		t.Fatal(err)
	}
	var up struct{ ID string }
	e.must(200, "POST", "/v1/hosts/pve-a/jobs", e.opTok, mustJSON(t, JobJSON{Payload: payload, Signatures: [][]byte{sig}}), &up)

	at := func(s int) time.Time { return time.Date(2026, 1, 1, 0, 0, s, 0, time.UTC) }
	start := &wire.Action{Op: "start", VMID: 101, Kind: "lxc"}
	cfg := &wire.Action{Op: "config", VMID: 102, Kind: "qemu", Params: map[string]string{"cores": "4"}}
	rs := []wire.Receipt{
		{Time: at(1), Type: wire.ReceiptBegin, Op: "op-a", Source: "signed", Action: start, Signers: []string{"SHA256:abc"}, Nonce: p.Nonce},
		{Time: at(2), Type: wire.ReceiptBegin, Op: "op-b", Source: "reconcile", Action: cfg},
		{Time: at(3), Type: wire.ReceiptTask, Op: "op-a", UPID: "UPID:n1:1:2:3:vzstart:101:root@pam:"},
		{Time: at(4), Type: wire.ReceiptEnd, Op: "op-a", Result: &wire.OpResult{OK: true, ExitStatus: "OK"}},
		{Time: at(5), Type: wire.ReceiptDecision, Source: "reconcile", Action: &wire.Action{Op: "destroy", VMID: 102, Kind: "qemu"},
			Class: "destructive", Verdict: "pending_signature", Reason: "destroys the guest"},
	}
	wire.Chain(0, wire.ZeroHash, rs)
	e.must(200, "POST", "/v1/agent/hosts/pve-a/receipts", tok, mustJSON(t, wire.Receipts{Host: "pve-a", Receipts: rs}), nil)

	var h HistoryJSON
	e.must(200, "GET", "/v1/hosts/pve-a/history", e.opTok, nil, &h)
	if h.Head != 5 || len(h.Entries) != 3 {
		t.Fatalf("history: got head %d and %d entries %+v; want head 5 and 3 entries", h.Head, len(h.Entries), h.Entries)
	}
	a := h.Entries[0]
	if a.Type != "operation" || a.Op != "op-a" || a.VMID != 101 || a.Source != "signed" || a.UPID != rs[2].UPID ||
		a.Result == nil || !a.Result.OK || a.EndedAt == nil || !a.EndedAt.Equal(at(4)) || a.Job != up.ID || a.AskedBy != "alice" ||
		len(a.Signers) != 1 || a.Signers[0] != "SHA256:abc" {
		t.Errorf("signed op entry: got %+v; want op-a, vmid 101, signed by SHA256:abc, asked by alice, its task and OK result", a)
	}
	if b := h.Entries[1]; b.Op != "op-b" || b.Result != nil || b.UPID != "" || b.AskedBy != "" || b.Action.Params["cores"] != "4" {
		t.Errorf("op without end: got %+v; want op-b unfinished, no task, no asker", b)
	}
	if d := h.Entries[2]; d.Type != "decision" || d.VMID != 102 || d.Verdict != "pending_signature" || d.Seq != 5 {
		t.Errorf("decision: got %+v; want the destroy of 102 held", d)
	}

	e.must(200, "GET", "/v1/hosts/pve-a/history?vmid=102", e.opTok, nil, &h)
	if len(h.Entries) != 2 || h.Entries[0].Op != "op-b" || h.Entries[1].Type != "decision" {
		t.Errorf("vmid=102: got %+v; want op-b and the decision", h.Entries)
	}
	e.must(200, "GET", "/v1/hosts/pve-a/history?limit=1", e.opTok, nil, &h)
	if len(h.Entries) != 1 || h.Entries[0].Type != "decision" {
		t.Errorf("limit=1: got %+v; want the newest entry only", h.Entries)
	}
	// A window starting after op-a's begin still shows its task and end.
	e.must(200, "GET", "/v1/hosts/pve-a/history?after=2", e.opTok, nil, &h)
	if len(h.Entries) != 2 || h.Entries[0].Op != "op-a" || h.Entries[0].Seq != 3 || h.Entries[0].Result == nil {
		t.Errorf("after=2: got %+v; want op-a from its task receipt, then the decision", h.Entries)
	}

	for _, q := range []string{"vmid=0", "vmid=x", "after=-1", "limit=0", "limit=1001"} {
		code, b := e.do("GET", "/v1/hosts/pve-a/history?"+q, e.opTok, nil)
		if code != 400 || errCode(t, b) != "bad_query" {
			t.Errorf("%s: got %d %s; want 400 bad_query", q, code, b)
		}
	}
	if code, b := e.do("GET", "/v1/hosts/nope/history", e.opTok, nil); code != 404 || errCode(t, b) != "no_such_host" {
		t.Errorf("unknown host: got %d %s; want 404 no_such_host", code, b)
	}
	if code, _ := e.do("GET", "/v1/hosts/pve-a/history", tok, nil); code != 401 {
		t.Errorf("host token on history: got %d; want 401", code)
	}
	e.must(200, "GET", fmt.Sprintf("/v1/hosts/pve-a/history?after=%d", h.Head), e.opTok, nil, &h)
	if len(h.Entries) != 0 {
		t.Errorf("after the head: got %+v; want no entries", h.Entries)
	}
}

// A break in an agent's receipt chain (a new segment) is accepted at the
// head's next number, recorded once as receipts.broken with the agent's
// reason (not again for a retried batch), and shown in the history; a
// segment numbered from another point is answered with the hub's head
// so the agent numbers it on from there, and is reported only when
// stored.
func TestHistoryChainBreak(t *testing.T) {
	e := newEnv(t)
	tok := e.enroll("pve-a")
	at := func(s int) time.Time { return time.Date(2026, 1, 1, 0, 0, s, 0, time.UTC) }
	rs := []wire.Receipt{
		{Time: at(1), Type: wire.ReceiptBegin, Op: "op-a", Source: "reconcile", Action: &wire.Action{Op: "start", VMID: 101, Kind: "lxc"}},
		{Time: at(2), Type: wire.ReceiptEnd, Op: "op-a", Result: &wire.OpResult{OK: true}},
	}
	wire.Chain(0, wire.ZeroHash, rs)
	e.must(200, "POST", "/v1/agent/hosts/pve-a/receipts", tok, mustJSON(t, wire.Receipts{Host: "pve-a", Receipts: rs}), nil)

	segment := func(after uint64) []wire.Receipt {
		seg := []wire.Receipt{{Time: at(3), Type: wire.ReceiptBreak, Reason: "the receipt log was damaged; set aside as receipts.damaged-x"},
			{Time: at(4), Type: wire.ReceiptBegin, Op: "op-b", Source: "reconcile", Action: &wire.Action{Op: "stop", VMID: 101, Kind: "lxc"}}}
		wire.Chain(after, wire.ZeroHash, seg[:1])
		wire.Chain(after+1, seg[0].Hash, seg[1:])
		return seg
	}
	code, b := e.do("POST", "/v1/agent/hosts/pve-a/receipts", tok, mustJSON(t, wire.Receipts{Host: "pve-a", Receipts: segment(0)}))
	var we wire.Error
	json.Unmarshal(b, &we)
	if code != 409 || we.Code != "chain_gap" || we.HaveSeq == nil || *we.HaveSeq != 2 {
		t.Fatalf("a segment numbered from 1: got %d %s; want 409 chain_gap naming seq 2", code, b)
	}
	if evs := e.events("?after=0"); strings.Contains(types(evs.Events), "receipts.broken") {
		t.Fatalf("events after a segment to renumber: %s; want no receipts.broken until it is stored", types(evs.Events))
	}
	seg := segment(2)
	for range 2 { // the second is a retry
		e.must(200, "POST", "/v1/agent/hosts/pve-a/receipts", tok, mustJSON(t, wire.Receipts{Host: "pve-a", Receipts: seg}), nil)
	}
	var broken []EventJSON
	for _, ev := range e.events("?after=0").Events {
		if ev.Type == "receipts.broken" {
			broken = append(broken, ev)
		}
	}
	if len(broken) != 1 || !strings.Contains(broken[0].Detail, "break at seq 3") || !strings.Contains(broken[0].Detail, "receipts.damaged-x") {
		t.Fatalf("receipts.broken events: %+v; want one naming seq 3 and the agent's reason", broken)
	}
	var h HistoryJSON
	e.must(200, "GET", "/v1/hosts/pve-a/history", e.opTok, nil, &h)
	if h.Head != 4 || len(h.Entries) != 3 || h.Entries[1].Type != "break" || h.Entries[1].Seq != 3 || !strings.Contains(h.Entries[1].Reason, "damaged") || h.Entries[2].Op != "op-b" {
		t.Fatalf("history: head %d, %+v; want op-a, the break at 3, op-b", h.Head, h.Entries)
	}
}
