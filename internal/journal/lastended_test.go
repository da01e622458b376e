package journal

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
)

// LastEnded moves when an op with a key ends on a guest, not when one
// begins, and answers the same after compaction and after a reopen.
func TestLastEnded(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	opts := Options{Now: clk.Now, Retention: time.Hour}
	j := open(t, dir, opts)
	check := func(when string, want map[int]string) {
		t.Helper()
		if got := j.LastEnded(); !maps.Equal(got, want) {
			t.Fatalf("%s: LastEnded = %v; want %v", when, got, want)
		}
	}
	check("empty", map[int]string{})

	must(t, j.Begin(configOp("a", 101, "key-a")))
	check("a begun", map[int]string{})
	must(t, j.End("a", Result{OK: true}))
	check("a ended", map[int]string{101: "a"})

	must(t, j.Begin(simpleOp("b", action.Start, 101)))
	must(t, j.Begin(configOp("c", 102, "key-c")))
	check("b and c in flight", map[int]string{101: "a"})
	must(t, j.End("b", Result{OK: false, Error: "boom"}))
	must(t, j.End("c", Result{Retry: true, Error: "not run"}))
	check("b failed, c not run", map[int]string{101: "b", 102: "c"})

	// An op without a key is not deduplicated and leaves no completion.
	must(t, j.Begin(Op{ID: "nokey", Action: action.Action{Op: action.Stop, VMID: 101}}))
	must(t, j.End("nokey", Result{OK: true}))
	check("an op without a key", map[int]string{101: "b", 102: "c"})

	// The same key completing again (a retry of c) moves the mark.
	must(t, j.Begin(configOp("c2", 102, "key-c")))
	must(t, j.End("c2", Result{OK: true}))
	check("c retried", map[int]string{101: "b", 102: "c2"})

	live := j.LastEnded()
	must(t, j.Compact())
	check("after compaction", live)
	must(t, j.Close())
	j = open(t, dir, opts)
	check("after reopen", live)

	// Past retention a guest's history is forgotten, as its keys are,
	// whether or not compaction ran yet.
	clk.Advance(time.Hour + time.Minute)
	must(t, j.Begin(configOp("d", 103, "key-d")))
	must(t, j.End("d", Result{OK: true}))
	check("past retention", map[int]string{103: "d"})
	must(t, j.Compact())
	check("past retention, compacted", map[int]string{103: "d"})
}

// Many ops on a few guests: compaction keeps LastEnded as it was.
func TestLastEndedSurvivesAutomaticCompaction(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	opts := Options{Now: clk.Now, MaxBytes: 2048}
	j := open(t, dir, opts)
	want := map[int]string{}
	for i := range 200 {
		id := fmt.Sprintf("op-%d", i)
		vmid := 100 + i%5
		must(t, j.Begin(configOp(id, vmid, "key-"+id)))
		must(t, j.End(id, Result{OK: true}))
		want[vmid] = id
		clk.Advance(time.Second)
	}
	if got := j.LastEnded(); !maps.Equal(got, want) {
		t.Fatalf("LastEnded = %v; want %v", got, want)
	}
	must(t, j.Close())
	j = open(t, dir, opts)
	if got := j.LastEnded(); !maps.Equal(got, want) {
		t.Fatalf("after reopen: LastEnded = %v; want %v", got, want)
	}
}
