package engine_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/crashpoint"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/sim"
)

// fakeClock is the engine's and the simulator's wall clock; it moves only
// when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

const snapDoc = `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101:
        kind: qemu
        snapshots: {every: 24h, keep: 7, vmstate: true}
      102:
        kind: lxc
        snapshots: {every: 24h, keep: 3}
`

// snapHarness is a harness whose engine and simulator share clk, with
// guest 101 (a running VM) and 102 (a stopped container).
func snapHarness(t *testing.T, clk *fakeClock) *harness {
	h := newHarness(t, sim.Options{Clock: clk.Now},
		qemuGuest(101, true, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,size=8G"}),
		sim.GuestSpec{VMID: 102, Kind: guest.LXC, Name: "ct", Config: map[string]string{"rootfs": "local-lvm:vm-102-disk-0,size=4G"}})
	h.now = clk.Now
	h.open()
	return h
}

// operatorSnapshot takes a snapshot as an operator would, outside steward.
func operatorSnapshot(t *testing.T, h *harness, kind guest.Kind, vmid int, name string) {
	t.Helper()
	r, err := h.client.SnapshotCreate(t.Context(), h.srv.Sim.Node(), kind, vmid, name, "the operator's")
	if err != nil {
		t.Fatalf("operator snapshot %s: %v", name, err)
	}
	if u, ok := r.Task(); ok {
		if _, err := h.client.WaitTask(t.Context(), u, pve.WaitOptions{Initial: time.Millisecond, Max: 5 * time.Millisecond}); err != nil {
			t.Fatalf("operator snapshot %s: %v", name, err)
		}
	}
}

func snapNames(t *testing.T, h *harness, kind guest.Kind, vmid int) []string {
	t.Helper()
	list, err := h.client.Snapshots(t.Context(), h.srv.Sim.Node(), kind, vmid)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range list {
		if !s.IsCurrent() {
			out = append(out, s.Name)
		}
	}
	slices.Sort(out)
	return out
}

func count(ms []string, m string) int {
	n := 0
	for _, x := range ms {
		if x == m {
			n++
		}
	}
	return n
}

// TestSnapshotScheduleTwoWeeks: every 24h, keep 7 (and keep 3 for a
// container), ticking every 6 hours of a fake clock for two weeks against
// the simulator. Each guest gets one snapshot a day, the schedule keeps
// the newest it took, and it never touches the operator's snapshots, not
// even one named like its own.
func TestSnapshotScheduleTwoWeeks(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 11, 1, 3, 0, 0, 0, time.UTC)}
	h := snapHarness(t, clk)
	// The operator's: a steward-looking name from before, and an ordinary one.
	operatorSnapshot(t, h, guest.QEMU, 101, "steward-20261031-030000")
	operatorSnapshot(t, h, guest.QEMU, 101, "before-upgrade")
	operatorSnapshot(t, h, guest.LXC, 102, "steward-20261101-030000x")
	clk.Add(time.Minute)
	want := mustParse(t, snapDoc)
	var taken []string
	operators := count(h.mutations(), "snapshot 101")
	var rep engine.Report
	for tick := 0; tick < 14*4; tick++ {
		rep = h.tick(want)
		for _, r := range rep.Results {
			if r.Err != nil || r.Skip != engine.NotSkipped {
				t.Fatalf("tick %d (%s): %s: %v %s", tick, clk.Now(), r.Action, r.Err, r.Skipped)
			}
			if r.Class != "benign" {
				t.Fatalf("tick %d: %s ran as %s", tick, r.Action, r.Class)
			}
		}
		if len(rep.Pending) != 0 {
			t.Fatalf("tick %d: pending %+v; want none", tick, rep.Pending)
		}
		for _, r := range rep.Results {
			if r.Action.VMID == 101 && r.Action.Op == "snapshot" {
				taken = append(taken, r.Action.Params["snapname"])
				if r.Action.Params["vmstate"] != "1" {
					t.Errorf("take of the running VM without vmstate: %v", r.Action.Params)
				}
			}
			if r.Action.VMID == 102 && r.Action.Params["vmstate"] != "" {
				t.Errorf("a container's snapshot asked for vmstate: %v", r.Action.Params)
			}
		}
		names := snapNames(t, h, guest.QEMU, 101)
		for _, keep := range []string{"steward-20261031-030000", "before-upgrade"} {
			if !slices.Contains(names, keep) {
				t.Fatalf("tick %d: the operator's snapshot %s is gone: %v", tick, keep, names)
			}
		}
		if !slices.Contains(snapNames(t, h, guest.LXC, 102), "steward-20261101-030000x") {
			t.Fatalf("tick %d: the operator's container snapshot is gone", tick)
		}
		// One take per day: at most keep+1 of the agent's between a take
		// and the next tick's prune.
		if own := len(names) - 2; own > 8 {
			t.Fatalf("tick %d: %d of the agent's snapshots; want at most 8", tick, own)
		}
		clk.Add(6 * time.Hour)
	}
	muts := h.mutations()
	if n := count(muts, "snapshot 101") - operators; n != 14 || len(taken) != 14 {
		t.Errorf("snapshots of 101 taken: %d; want 14 (one a day)", n)
	}
	if n := count(muts, "delsnapshot 101"); n != 7 {
		t.Errorf("snapshots of 101 pruned: %d; want 7", n)
	}
	if n := count(muts, "delsnapshot 102"); n != 14-3 {
		t.Errorf("snapshots of 102 pruned: %d; want 11", n)
	}
	wantNames := append(slices.Clone(taken[len(taken)-7:]), "before-upgrade", "steward-20261031-030000")
	slices.Sort(wantNames)
	if got := snapNames(t, h, guest.QEMU, 101); !slices.Equal(got, wantNames) {
		t.Errorf("snapshots of 101 after two weeks: %v; want %v", got, wantNames)
	}
	if got := snapNames(t, h, guest.LXC, 102); len(got) != 4 {
		t.Errorf("snapshots of 102 after two weeks: %v; want 3 of the agent's and the operator's", got)
	}
	// Names follow the documented scheme, one day apart.
	for i, n := range taken {
		if want := engine.SnapshotName(time.Date(2026, 11, 1+i, 3, 1, 0, 0, time.UTC)); n != want {
			t.Errorf("take %d named %s; want %s", i, n, want)
		}
	}
	list, _ := h.client.Snapshots(t.Context(), h.srv.Sim.Node(), guest.QEMU, 101)
	for _, s := range list {
		if strings.HasPrefix(s.Name, "steward-202611") && !s.VMState {
			t.Errorf("%s of the running VM has no vmstate", s.Name)
		}
	}
	// The last tick's report: the policy's state, with the agent's
	// snapshots (the last take was 18 hours before it).
	st := snapState(t, rep, 101)
	if len(st.Own) != 7 || st.Keep != 7 || st.Every != 24*time.Hour || st.Own[6].Name != taken[13] ||
		!st.LastTaken.Equal(time.Date(2026, 11, 14, 3, 1, 0, 0, time.UTC)) {
		t.Errorf("schedule state %+v; want the 7 newest takes, the last on 2026-11-14 03:01", st)
	}
	if !st.NextDue.Equal(st.LastTaken.Add(24 * time.Hour)) {
		t.Errorf("next due %s; want last taken %s + 24h", st.NextDue, st.LastTaken)
	}
	w := rep.Wire()
	for _, s := range w.Sync {
		if s.VMID == 101 && (s.Snapshots == nil || len(s.Snapshots.Snapshots) != 7 || s.Snapshots.Keep != 7) {
			t.Errorf("wire sync %+v; want the schedule with 7 snapshots", s.Snapshots)
		}
	}
}

func snapState(t *testing.T, rep engine.Report, vmid int) *engine.SnapshotState {
	t.Helper()
	for _, g := range rep.Guests {
		if g.VMID == vmid && g.Snapshots != nil {
			return g.Snapshots
		}
	}
	t.Fatalf("guest %d has no snapshot state in the report", vmid)
	return nil
}

// TestSnapshotReplacedUnderItsNameNeverPruned: an operator deletes one of
// the agent's snapshots and takes their own under the same name. It is
// not the agent's any more (another snaptime): its prune is held for a
// signature, reported, and never run.
func TestSnapshotReplacedUnderItsNameNeverPruned(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 11, 1, 3, 0, 0, 0, time.UTC)}
	h := snapHarness(t, clk)
	doc := strings.Replace(snapDoc, "keep: 3", "keep: 1", 1)
	want := mustParse(t, doc)
	h.tick(want) // takes the first
	first := snapNames(t, h, guest.LXC, 102)[0]
	clk.Add(time.Hour)
	r, err := h.client.SnapshotDelete(t.Context(), h.srv.Sim.Node(), guest.LXC, 102, first)
	if err != nil {
		t.Fatal(err)
	}
	if u, ok := r.Task(); ok {
		h.client.WaitTask(t.Context(), u, pve.WaitOptions{Initial: time.Millisecond})
	}
	operatorSnapshot(t, h, guest.LXC, 102, first)
	before := count(h.mutations(), "delsnapshot 102")
	for range 8 {
		clk.Add(12 * time.Hour)
		rep := h.tick(want)
		st := snapState(t, rep, 102)
		for _, r := range rep.Results {
			if r.Action.Op == "snapshot_delete" && r.Action.Params["snapname"] == first {
				t.Fatalf("the operator's %s was deleted", first)
			}
		}
		_ = st
	}
	if !slices.Contains(snapNames(t, h, guest.LXC, 102), first) {
		t.Fatalf("the operator's snapshot %s is gone", first)
	}
	if n := count(h.mutations(), "delsnapshot 102") - before; n == 0 {
		t.Errorf("the agent's own later snapshots were never pruned")
	}
}

// TestSnapshotChangedHeldForSignature: a snapshot the journal holds as the
// agent's but whose snaptime PVE now reports differently (it is another
// snapshot under the name) is held for a signature when due for pruning.
func TestSnapshotChangedHeldForSignature(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 11, 1, 3, 0, 0, 0, time.UTC)}
	h := snapHarness(t, clk)
	want := mustParse(t, strings.Replace(snapDoc, "keep: 3", "keep: 1", 1))
	h.tick(want)
	first := snapNames(t, h, guest.LXC, 102)[0]
	// Replace it within the same tick gap, so no tick sees it missing.
	r, _ := h.client.SnapshotDelete(t.Context(), h.srv.Sim.Node(), guest.LXC, 102, first)
	if u, ok := r.Task(); ok {
		h.client.WaitTask(t.Context(), u, pve.WaitOptions{Initial: time.Millisecond})
	}
	clk.Add(time.Minute)
	operatorSnapshot(t, h, guest.LXC, 102, first)
	clk.Add(24 * time.Hour)
	h.tick(want) // takes the second
	clk.Add(time.Hour)
	rep := h.tick(want)
	st := snapState(t, rep, 102)
	if len(st.Held) != 1 || !strings.Contains(st.Held[0], first) {
		t.Fatalf("held %v; want %s held", st.Held, first)
	}
	var pending []gate.Decision
	for _, d := range rep.Pending {
		if d.Action.VMID == 102 {
			pending = append(pending, d)
		}
	}
	if len(pending) != 1 || pending[0].Action.Params["snapname"] != first || len(pending[0].Payload) == 0 {
		t.Fatalf("pending %+v; want the delete of %s waiting for a signature", pending, first)
	}
	if !slices.Contains(snapNames(t, h, guest.LXC, 102), first) {
		t.Fatalf("%s deleted without a signature", first)
	}
}

// TestSnapshotTakeCrashResumes: a take killed at every crash point
// resumes without taking twice, and its snapshot becomes the agent's own
// (pruned later like the rest).
func TestSnapshotTakeCrashResumes(t *testing.T) {
	for _, point := range []string{crashpoint.BeforeBegin, crashpoint.AfterBegin, crashpoint.AfterTaskReturned,
		crashpoint.AfterTaskRecorded, crashpoint.AfterCall, crashpoint.AfterEnd} {
		t.Run(point, func(t *testing.T) {
			clk := &fakeClock{t: time.Date(2026, 11, 1, 3, 0, 0, 0, time.UTC)}
			h := snapHarness(t, clk)
			doc := strings.Replace(snapDoc, "      101:\n        kind: qemu\n        snapshots: {every: 24h, keep: 7, vmstate: true}\n", "", 1)
			want := mustParse(t, doc)
			ctx, cancel := context.WithCancel(t.Context())
			crashAt(t, point, cancel)
			h.eng.Tick(ctx, want, nil)
			crashpoint.SetHook(nil)
			clk.Add(time.Minute)
			h.open()
			for range 3 {
				clk.Add(time.Hour)
				h.tick(want)
			}
			if n := count(h.mutations(), "snapshot 102"); n != 1 {
				t.Fatalf("takes = %d (%v); want exactly one", n, h.mutations())
			}
			if got := h.j.Snapshots(102); len(got) != 1 {
				t.Fatalf("journaled snapshots %+v; want the one taken", got)
			}
			if got := h.j.InFlight(); len(got) != 0 {
				t.Errorf("ops left in flight: %+v", got)
			}
		})
	}
}

// TestSnapshotPruneCrashResumes: a prune killed at every crash point
// resumes without deleting twice or deleting anything else.
func TestSnapshotPruneCrashResumes(t *testing.T) {
	for _, point := range []string{crashpoint.BeforeBegin, crashpoint.AfterBegin, crashpoint.AfterTaskReturned,
		crashpoint.AfterTaskRecorded, crashpoint.AfterCall, crashpoint.AfterEnd} {
		t.Run(point, func(t *testing.T) {
			clk := &fakeClock{t: time.Date(2026, 11, 1, 3, 0, 0, 0, time.UTC)}
			h := snapHarness(t, clk)
			doc := strings.Replace(snapDoc, "      101:\n        kind: qemu\n        snapshots: {every: 24h, keep: 7, vmstate: true}\n", "", 1)
			doc = strings.Replace(doc, "keep: 3", "keep: 1", 1)
			want := mustParse(t, doc)
			operatorSnapshot(t, h, guest.LXC, 102, "steward-20261030-000000")
			h.tick(want)
			first := snapNames(t, h, guest.LXC, 102)
			clk.Add(24 * time.Hour)
			h.tick(want) // the second take
			clk.Add(time.Hour)
			ctx, cancel := context.WithCancel(t.Context())
			crashAt(t, point, cancel)
			h.eng.Tick(ctx, want, nil) // the prune, killed
			crashpoint.SetHook(nil)
			clk.Add(time.Minute)
			h.open()
			for range 3 {
				clk.Add(time.Hour)
				h.tick(want)
			}
			if n := count(h.mutations(), "delsnapshot 102"); n != 1 {
				t.Fatalf("prunes = %d (%v); want exactly one", n, h.mutations())
			}
			got := snapNames(t, h, guest.LXC, 102)
			if len(got) != 2 || !slices.Contains(got, "steward-20261030-000000") {
				t.Fatalf("snapshots %v (before: %v); want the operator's and the newest of the agent's", got, first)
			}
			if got := h.j.InFlight(); len(got) != 0 {
				t.Errorf("ops left in flight: %+v", got)
			}
		})
	}
}

// TestSnapshotScheduleWaitsForLock: PVE refuses a snapshot of a locked
// guest (a backup runs, say); the schedule waits, says why, and takes the
// snapshot once the lock is gone.
func TestSnapshotScheduleWaitsForLock(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 11, 1, 3, 0, 0, 0, time.UTC)}
	spec := sim.GuestSpec{VMID: 102, Kind: guest.LXC, Name: "ct", Lock: "backup", Config: map[string]string{"rootfs": "local-lvm:vm-102-disk-0,size=4G"}}
	h := newHarness(t, sim.Options{Clock: clk.Now}, spec)
	h.now = clk.Now
	h.open()
	want := mustParse(t, "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve:\n    guests:\n      102: {kind: lxc, snapshots: {every: 24h, keep: 3}}\n")
	rep := h.tick(want)
	if st := snapState(t, rep, 102); !strings.Contains(st.Note, "locked (backup)") || len(h.mutations()) != 0 {
		t.Fatalf("locked guest: note %q, mutations %v; want the schedule waiting, nothing run", st.Note, h.mutations())
	}
	if err := h.srv.Sim.SetLock(102, ""); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute)
	h.tick(want)
	if m := h.mutations(); !slices.Equal(m, []string{"snapshot 102"}) {
		t.Fatalf("after the lock went: mutations %v; want the take", m)
	}
}
