package journal

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
)

// countingHandler counts log records whose message contains a substring.
type countingHandler struct {
	substr string
	n      *atomic.Int64
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.substr) {
		h.n.Add(1)
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

func fileSize(t *testing.T, dir string) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestCompactKeepsInFlightAndRecentKeys(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	opts := Options{Now: clk.Now}
	j := open(t, dir, opts)
	for i := range 20 {
		id := fmt.Sprintf("old-%d", i)
		must(t, j.Begin(configOp(id, 101, "key-"+id)))
		must(t, j.End(id, Result{OK: true}))
		must(t, j.Decision(Decision{VMID: 101, Verdict: "allowed"}))
	}
	must(t, j.Begin(configOp("fly-old", 102, "key-fly-old")))
	must(t, j.Task("fly-old", upid1))
	clk.Advance(DefaultRetention + time.Hour)
	must(t, j.Begin(configOp("recent", 103, "key-recent")))
	must(t, j.End("recent", Result{OK: true, ExitStatus: "OK"}))
	must(t, j.Begin(configOp("fly", 104, "key-fly")))

	keys := []string{"key-old-0", "key-old-19", "key-recent", "key-fly", "key-fly-old"}
	before := summary(j, keys, nil)
	sizeBefore := fileSize(t, dir)
	must(t, j.Compact())
	if got := summary(j, keys, nil); got != before {
		t.Errorf("compaction changed the journal's answers:\ngot  %s\nwant %s", got, before)
	}
	if after := fileSize(t, dir); after*4 > sizeBefore {
		t.Errorf("got %d bytes after compaction, %d before; want at most a quarter", after, sizeBefore)
	}
	if _, ok := j.Completed("key-old-0"); ok {
		t.Error("a key past retention is still completed")
	}
	if _, ok := j.Completed("key-recent"); !ok {
		t.Error("a key within retention was dropped")
	}
	if got := j.InFlight(); len(got) != 2 || got[0].ID != "fly-old" || got[0].UPID != upid1 || got[1].ID != "fly" {
		t.Errorf("got in flight %+v; want fly-old (with its UPID) then fly", got)
	}

	// Appends after compaction go to the new file and survive a reopen.
	must(t, j.End("fly", Result{OK: true}))
	must(t, j.Close())
	j = open(t, dir, opts)
	if _, ok := j.Completed("key-fly"); !ok {
		t.Error("an End appended after compaction was lost on reopen")
	}
	if got := j.InFlight(); len(got) != 1 || got[0].ID != "fly-old" || got[0].UPID != upid1 {
		t.Errorf("after reopen: got in flight %+v; want fly-old with its UPID", got)
	}
	if stale, _ := filepath.Glob(filepath.Join(dir, ".journal.tmp*")); len(stale) != 0 {
		t.Errorf("compaction left temporary files: %v", stale)
	}
}

func TestCompactionBoundsFile(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	var compactions atomic.Int64
	opts := Options{
		Now:       clk.Now,
		MaxBytes:  4096,
		Retention: 10 * time.Minute,
		Logger:    slog.New(countingHandler{"compacted", &compactions}),
	}
	j := open(t, dir, opts)
	var maxSize int64
	const n = 300
	for i := range n {
		id := fmt.Sprintf("op-%d", i)
		must(t, j.Begin(configOp(id, 100+i%7, "key-"+id)))
		must(t, j.End(id, Result{OK: true}))
		clk.Advance(time.Minute)
		maxSize = max(maxSize, fileSize(t, dir))
	}
	// One append may cross the threshold before it triggers compaction.
	if limit := opts.MaxBytes + 1024; maxSize > limit {
		t.Errorf("file grew to %d bytes; want at most %d", maxSize, limit)
	}
	if compactions.Load() == 0 {
		t.Error("no automatic compaction happened")
	}
	must(t, j.Close())
	j = open(t, dir, opts)
	if _, ok := j.Completed(fmt.Sprintf("key-op-%d", n-1)); !ok {
		t.Error("the last key is not completed after reopen")
	}
	if _, ok := j.Completed("key-op-0"); ok {
		t.Error("the first key survived past retention")
	}
}

func TestCompactionBacksOffWhenLiveDataExceedsMax(t *testing.T) {
	dir := t.TempDir()
	var compactions atomic.Int64
	opts := Options{MaxBytes: 1024, Logger: slog.New(countingHandler{"compacted", &compactions})}
	j := open(t, dir, opts)
	const n = 100
	for i := range n {
		id := fmt.Sprintf("op-%d", i)
		must(t, j.Begin(configOp(id, 101, "key-"+id)))
		must(t, j.End(id, Result{OK: true}))
	}
	// Everything is within retention, so compaction cannot shrink the
	// file; it must run about log2(final/MaxBytes) times, not per append.
	if got := compactions.Load(); got < 1 || got > 12 {
		t.Errorf("got %d compactions for %d appends; want between 1 and 12", got, 2*n)
	}
	for i := range n {
		if _, ok := j.Completed(fmt.Sprintf("key-op-%d", i)); !ok {
			t.Fatalf("key-op-%d lost by compaction", i)
		}
	}
}

func TestProvenance(t *testing.T) {
	const vm = 105
	type step struct {
		op Op
		ok bool // result; ignored when end is false
		// end is false for an op left in flight
		end bool
		// remains: the RemainsDigest the op's end records
		remains string
		// noTask: PVE never started a task for this op (a create ops
		// otherwise gets its task recorded, as a create PVE accepted does)
		noTask bool
	}
	create := func(id string) Op { return createOp(id, vm) }
	ended := func(op Op, ok bool) step { return step{op: op, ok: ok, end: true} }
	tests := []struct {
		name  string
		steps []step
		want  Provenance
	}{
		{"no ops", nil, Provenance{}},
		{"other vmid created", []step{ended(createOp("c", 106), false)}, Provenance{}},
		{"create in flight", []step{{op: create("c")}}, Provenance{CreatedByAgent: true, CreateOpID: "c"}},
		{"create succeeded", []step{ended(create("c"), true)}, Provenance{CreatedByAgent: true, CreateOpID: "c", Created: true}},
		{"clone succeeded", []step{ended(cloneGuestOp("c", vm), true)}, Provenance{CreatedByAgent: true, CreateOpID: "c", Created: true}},
		{"clone failed leaving remains", []step{{op: cloneGuestOp("c", vm), end: true, remains: "77aa"}}, Provenance{CreatedByAgent: true, CreateFailed: true, CreateOpID: "c", RemainsDigest: "77aa"}},
		{"create succeeded, then configured", []step{ended(create("c"), true), ended(simpleOp("s", action.SetConfig, vm), true)}, Provenance{CreatedByAgent: true, CreateOpID: "c", Created: true}},
		{"create succeeded, then started", []step{ended(create("c"), true), ended(simpleOp("s", action.Start, vm), false)}, Provenance{CreatedByAgent: true, CreateOpID: "c", Created: true, Started: true}},
		{"create succeeded, reboot in flight", []step{ended(create("c"), true), {op: simpleOp("s", action.Reboot, vm)}}, Provenance{CreatedByAgent: true, CreateOpID: "c", Created: true, Started: true}},
		{"started before the create", []step{ended(simpleOp("s", action.Start, vm), true), ended(create("c"), true)}, Provenance{CreatedByAgent: true, CreateOpID: "c", Created: true}},
		{"create failed", []step{ended(create("c"), false)}, Provenance{CreatedByAgent: true, CreateFailed: true, CreateOpID: "c"}},
		{"create failed, later config succeeded", []step{ended(create("c"), false), ended(simpleOp("s", action.SetConfig, vm), true)}, Provenance{CreatedByAgent: true, CreateOpID: "c", Created: true}},
		{"create failed, later start failed", []step{ended(create("c"), false), ended(simpleOp("s", action.Start, vm), false)}, Provenance{CreatedByAgent: true, CreateFailed: true, CreateOpID: "c", Started: true}},
		{"create failed, later start in flight", []step{ended(create("c"), false), {op: simpleOp("s", action.Start, vm)}}, Provenance{CreatedByAgent: true, CreateFailed: true, CreateOpID: "c", Started: true}},
		{"create failed, other guest touched", []step{ended(create("c"), false), ended(simpleOp("s", action.Start, vm+1), true)}, Provenance{CreatedByAgent: true, CreateFailed: true, CreateOpID: "c"}},
		{"create failed, cleaned up by destroy", []step{ended(create("c"), false), ended(simpleOp("d", action.Destroy, vm), true)}, Provenance{}},
		{"create failed, destroy failed", []step{ended(create("c"), false), ended(simpleOp("d", action.Destroy, vm), false)}, Provenance{CreatedByAgent: true, CreateFailed: true, CreateOpID: "c"}},
		{"destroyed, then recreated and failed", []step{ended(create("c1"), true), ended(simpleOp("d", action.Destroy, vm), true), ended(create("c2"), false)}, Provenance{CreatedByAgent: true, CreateFailed: true, CreateOpID: "c2"}},
		{"op begun before the create ends OK after it failed", []step{{op: simpleOp("s", action.Stop, vm)}, ended(create("c"), false), {op: Op{ID: "s"}, ok: true, end: true}}, Provenance{CreatedByAgent: true, CreateFailed: true, CreateOpID: "c"}},
		{"create failed leaving remains", []step{{op: create("c"), end: true, remains: "9f0c"}}, Provenance{CreatedByAgent: true, CreateFailed: true, CreateOpID: "c", RemainsDigest: "9f0c"}},
		{"create succeeded, remains digest ignored", []step{{op: create("c"), end: true, ok: true, remains: "9f0c"}}, Provenance{CreatedByAgent: true, CreateOpID: "c", Created: true}},
		{"create refused before PVE started a task", []step{{op: create("c"), end: true, noTask: true}}, Provenance{}},
		{"create refused, destroy attempt", []step{{op: create("c"), end: true, noTask: true}, ended(simpleOp("d", action.Destroy, vm), false)}, Provenance{}},
		{"op begun after the create, in flight across compaction, ends OK", []step{ended(create("c"), false), {op: simpleOp("s", action.Start, vm)}, {op: Op{ID: "s"}, ok: true, end: true}}, Provenance{CreatedByAgent: true, CreateOpID: "c", Created: true, Started: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			clk := newClock()
			opts := Options{Now: clk.Now, Retention: time.Hour}
			j := open(t, dir, opts)
			begun := map[string]bool{}
			var failedAt time.Time // end time of the last failed create
			for i, s := range tt.steps {
				if !begun[s.op.ID] {
					must(t, j.Begin(s.op))
					begun[s.op.ID] = true
					if isCreate(s.op.Action.Op) && !s.noTask {
						must(t, j.Task(s.op.ID, fmt.Sprintf("UPID:pve-a:0000A1B3:0001C3E0:67D3F6F0:qmcreate:%d:steward@pve!agent:", vm)))
					}
				}
				if s.end {
					must(t, j.End(s.op.ID, Result{OK: s.ok, RemainsDigest: s.remains}))
					if isCreate(s.op.Action.Op) && !s.ok {
						failedAt = clk.Now().UTC()
					}
				}
				// Compact midway too, so provenance is carried across
				// compactions while later ops are still in flight.
				if i == len(tt.steps)/2 {
					must(t, j.Compact())
				}
			}
			live := j.Provenance(vm)
			if live.CreateFailed && !live.FailedAt.Equal(failedAt) || !live.CreateFailed && !live.FailedAt.IsZero() {
				t.Errorf("live: FailedAt %v with CreateFailed %v; want the failed create's end time %v", live.FailedAt, live.CreateFailed, failedAt)
			}
			if got := noTime(live); got != tt.want {
				t.Errorf("live: got %+v; want %+v", got, tt.want)
			}
			must(t, j.Close())
			j = open(t, dir, opts)
			if got := noTime(j.Provenance(vm)); got != tt.want {
				t.Errorf("after reopen: got %+v; want %+v", got, tt.want)
			}
			// Long after retention, compaction still keeps provenance.
			clk.Advance(30 * 24 * time.Hour)
			must(t, j.Compact())
			must(t, j.Close())
			j = open(t, dir, opts)
			if got := noTime(j.Provenance(vm)); got != tt.want {
				t.Errorf("after compaction past retention and reopen: got %+v; want %+v", got, tt.want)
			}
		})
	}
}

// noTime drops FailedAt, which TestProvenance checks on its own.
func noTime(p Provenance) Provenance {
	p.FailedAt, p.At = time.Time{}, time.Time{}
	return p
}
