package hub

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/wire"
)

func (e *env) events(q string) EventsJSON {
	e.t.Helper()
	var out EventsJSON
	e.must(200, "GET", "/v1/events"+q, e.opTok, nil, &out)
	return out
}

func types(es []EventJSON) string {
	var s []string
	for _, e := range es {
		s = append(s, e.Type+":"+e.Host)
	}
	return strings.Join(s, " ")
}

// Every fleet change the brief lists lands in the event log, in order.
func TestEventsRecorded(t *testing.T) {
	e := newEnv(t)
	tok := e.enroll("pve-a")
	rep := report("pve-a")
	rep.Sync = []wire.Sync{{VMID: 101, Phase: wire.PhaseInSync}}
	body, _ := wire.EncodeReport(rep)
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body, nil)
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body, nil) // the same: no status change
	rep.Sync[0].Phase = wire.PhaseError
	body2, _ := wire.EncodeReport(rep)
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body2, nil)
	e.must(200, "PUT", "/v1/hosts/pve-a/desired", e.opTok, []byte(docA), nil)
	e.must(200, "POST", "/v1/hosts/pve-a/block", e.opTok, []byte(`{"reason":"maintenance"}`), nil)
	e.must(200, "POST", "/v1/hosts/pve-a/unblock", e.opTok, nil, nil)
	payload, sig := signedJob(t, "pve-a")
	var up struct{ ID string }
	e.must(200, "POST", "/v1/hosts/pve-a/jobs", e.opTok, mustJSON(t, JobJSON{Payload: payload, Signatures: [][]byte{sig}}), &up)
	res := mustJSON(t, wire.JobResults{Host: "pve-a", Results: []wire.JobResult{{Job: up.ID, State: wire.JobFailed, Reason: "PVE said no"}}})
	e.must(200, "POST", "/v1/agent/hosts/pve-a/job-results", tok, res, nil)
	e.must(200, "POST", "/v1/agent/hosts/pve-a/job-results", tok, res, nil) // a retry: no second event
	forged := wire.Receipts{Host: "pve-a", Receipts: []wire.Receipt{{Seq: 5, Time: time.Now().UTC(), Type: wire.ReceiptBegin, Op: "x", Source: "reconcile"}}}
	wire.Chain(4, wire.ZeroHash, forged.Receipts)
	if code, _ := e.do("POST", "/v1/agent/hosts/pve-a/receipts", tok, mustJSON(t, forged)); code != 409 {
		t.Fatalf("receipts after a gap: got %d; want 409", code)
	}
	e.must(200, "POST", "/v1/hosts/pve-a/revoke", e.opTok, nil, nil)

	got := e.events("?after=0")
	want := "host.enrolled:pve-a host.status:pve-a host.status:pve-a desired.changed:pve-a host.blocked:pve-a host.unblocked:pve-a " +
		"job.uploaded:pve-a job.failed:pve-a receipts.broken:pve-a host.revoked:pve-a"
	if types(got.Events) != want {
		t.Fatalf("events:\n got %s\nwant %s", types(got.Events), want)
	}
	if st, want := got.Events[2], "error 1, pending signatures 1 (was: in_sync 1, pending signatures 1)"; st.Detail != want {
		t.Errorf("status change detail: got %q; want %q", st.Detail, want)
	}
	if d := got.Events[3]; d.Actor != "alice" || d.Detail != "generation 1" {
		t.Errorf("desired.changed: got %+v; want actor alice, generation 1", d)
	}
	if f := got.Events[7]; !strings.Contains(f.Detail, "PVE said no") || f.Actor != "" {
		t.Errorf("job.failed: got %+v; want PVE's message, no operator", f)
	}
	if got.LastID != got.Events[len(got.Events)-1].ID {
		t.Errorf("last_id: got %d; want the newest event's id %d", got.LastID, got.Events[len(got.Events)-1].ID)
	}
	// Without after: the newest, at once.
	if tail := e.events("?limit=2"); types(tail.Events) != "receipts.broken:pve-a host.revoked:pve-a" || tail.LastID != got.LastID {
		t.Fatalf("newest 2: got %s (last_id %d); want the last two", types(tail.Events), tail.LastID)
	}
}

func TestEventsLongPoll(t *testing.T) {
	e := newEnv(t)
	e.enroll("pve-a")
	first := e.events("?after=0")
	if len(first.Events) != 1 {
		t.Fatalf("events: got %s; want host.enrolled", types(first.Events))
	}
	t.Run("wakes on an event", func(t *testing.T) {
		ch := make(chan []byte, 1)
		go func() {
			_, b := e.do("GET", fmt.Sprintf("/v1/events?after=%d&wait=10m", first.LastID), e.opTok, nil)
			ch <- b
		}()
		for e.hub.HeldEventPolls() != 1 {
			time.Sleep(time.Millisecond)
		}
		e.must(200, "POST", "/v1/hosts/pve-a/block", e.opTok, []byte(`{"reason":"x"}`), nil)
		var got EventsJSON
		if err := json.Unmarshal(<-ch, &got); err != nil || types(got.Events) != "host.blocked:pve-a" || got.LastID <= first.LastID {
			t.Fatalf("woken poll: got %+v, %v; want host.blocked and a newer last_id", got, err)
		}
	})
	t.Run("returns empty when wait passes", func(t *testing.T) {
		last := e.events("").LastID
		got := e.events(fmt.Sprintf("?after=%d&wait=20ms", last))
		if len(got.Events) != 0 || got.LastID != last {
			t.Fatalf("timed-out poll: got %+v; want no event and last_id %d", got, last)
		}
	})
	t.Run("answered on shutdown", func(t *testing.T) {
		last := e.events("").LastID
		ch := make(chan int, 1)
		go func() {
			c, _ := e.do("GET", fmt.Sprintf("/v1/events?after=%d&wait=10m", last), e.opTok, nil)
			ch <- c
		}()
		for e.hub.HeldEventPolls() != 1 {
			time.Sleep(time.Millisecond)
		}
		e.hub.Shutdown()
		if c := <-ch; c != 200 {
			t.Fatalf("event poll at shutdown: got %d; want 200", c)
		}
	})
	for _, q := range []string{"after=-1", "after=x", "wait=forever", "limit=0", "limit=1001"} {
		code, b := e.do("GET", "/v1/events?"+q, e.opTok, nil)
		if code != 400 || errCode(t, b) != "bad_query" {
			t.Errorf("?%s: got %d %s; want 400 bad_query", q, code, b)
		}
	}
	if code, _ := e.do("GET", "/v1/events", "", nil); code != 401 {
		t.Errorf("events without a token: got %d; want 401", code)
	}
}

// The sweep keeps the event log within its bounds.
func TestEventRetention(t *testing.T) {
	e := newEnvOpt(t, Options{EventKeep: 3, FlushInterval: time.Hour, SweepInterval: time.Hour})
	for i := range 5 {
		e.enroll(fmt.Sprint("pve-", i))
	}
	e.hub.sweep(t.Context(), time.Now(), false)
	got := e.events("?after=0")
	if types(got.Events) != "host.enrolled:pve-2 host.enrolled:pve-3 host.enrolled:pve-4" {
		t.Fatalf("after pruning to 3: got %s; want the newest 3", types(got.Events))
	}
}

func TestStatusSummary(t *testing.T) {
	r := wire.Report{Facts: wire.Facts{Frozen: true}, Sync: []wire.Sync{{Phase: wire.PhaseError}, {Phase: wire.PhaseInSync}, {Phase: wire.PhaseInSync}},
		Pending: []wire.Pending{{}}}
	if got, want := statusSummary(r), "frozen, in_sync 2, error 1, pending signatures 1"; got != want {
		t.Errorf("statusSummary: got %q; want %q", got, want)
	}
	if got := statusSummary(wire.Report{}); got != "no managed guests" {
		t.Errorf("statusSummary of an empty report: got %q", got)
	}
}
