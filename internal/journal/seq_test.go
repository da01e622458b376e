package journal

import (
	"fmt"
	"sync"
	"testing"
)

// Records are numbered over the journal's life: OnRecord sees each number
// once, in order; a reopen and a compaction keep counting; Since gives the
// records the file still holds after a number, and says where the ones
// compaction dropped end.
func TestSeqAndSince(t *testing.T) {
	dir := t.TempDir()
	var seen []uint64
	opts := Options{OnRecord: func(ev Event) { seen = append(seen, ev.Seq) }}
	j := open(t, dir, opts)
	must(t, j.Begin(configOp("a", 101, "k1")))
	must(t, j.Task("a", "UPID:pve-a:1:1:1:qmconfig:101:x:"))
	must(t, j.End("a", Result{OK: true}))
	must(t, j.Decision(Decision{VMID: 102, Class: "destructive", Verdict: "pending_signature"}))
	if fmt.Sprint(seen) != "[1 2 3 4]" || j.Seq() != 4 {
		t.Fatalf("OnRecord saw %v, Seq %d; want [1 2 3 4], 4", seen, j.Seq())
	}
	evs, first, err := j.Since(2)
	if err != nil || first != 1 || len(evs) != 2 || evs[0].Seq != 3 || evs[0].Type != "end" || evs[0].OpID != "a" || evs[1].Type != "decision" {
		t.Fatalf("Since(2) = %+v, first %d, %v; want the end and the decision, first 1", evs, first, err)
	}

	// Reopen: counting goes on.
	must(t, j.Close())
	seen = nil
	j = open(t, dir, opts)
	if j.Seq() != 4 {
		t.Fatalf("after a reopen Seq = %d; want 4", j.Seq())
	}
	must(t, j.Begin(configOp("b", 103, "k2"))) // 5, in flight across the compaction
	must(t, j.Compact())
	evs, first, err = j.Since(0)
	if err != nil || first != 6 || len(evs) != 0 {
		t.Fatalf("after compaction Since(0) = %+v, first %d, %v; want nothing, first 6", evs, first, err)
	}
	must(t, j.End("b", Result{OK: true})) // 6
	must(t, j.Close())

	j = open(t, dir, opts)
	if j.Seq() != 6 {
		t.Fatalf("after compaction and a reopen Seq = %d; want 6", j.Seq())
	}
	evs, first, err = j.Since(3)
	if err != nil || first != 6 || len(evs) != 1 || evs[0].Seq != 6 || evs[0].Type != "end" || evs[0].OpID != "b" {
		t.Fatalf("Since(3) = %+v, first %d, %v; want b's end as 6, first 6 (4 and 5 compacted)", evs, first, err)
	}
	must(t, j.Decision(Decision{VMID: 104, Class: "destructive", Verdict: "refused"}))
	if fmt.Sprint(seen) != "[5 6 7]" {
		t.Errorf("OnRecord saw %v; want [5 6 7]", seen)
	}
	if _, first, _ := j.Since(7); first != 6 {
		t.Errorf("Since(7) first = %d; want 6", first)
	}
}

// Concurrent appends share fsyncs and wake in any order, yet OnRecord sees
// every record once, in Seq order, and each before its append returns.
func TestOnRecordInSeqOrderUnderConcurrency(t *testing.T) {
	var seen []uint64
	delivered := map[uint64]bool{}
	j := open(t, t.TempDir(), Options{OnRecord: func(ev Event) {
		seen = append(seen, ev.Seq)
		delivered[ev.Seq] = true
	}})
	const n = 400
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for k := range n / 8 {
				if err := j.Decision(Decision{VMID: 100 + i, Reason: fmt.Sprint(k)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("OnRecord saw %d records; want %d", len(seen), n)
	}
	for i, s := range seen {
		if s != uint64(i+1) {
			t.Fatalf("OnRecord's record %d has Seq %d; want %d (in order, each once)", i, s, i+1)
		}
	}
}
