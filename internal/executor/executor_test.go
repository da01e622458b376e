package executor_test

import (
	"errors"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/executor"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/sim/simtest"
)

func setup(t *testing.T, opts sim.Options) (*executor.Executor, *simtest.Server) {
	t.Helper()
	opts.TaskDuration = 2 * time.Millisecond
	srv := simtest.Start(t, opts)
	specs := []sim.GuestSpec{
		{VMID: 101, Kind: guest.QEMU, Name: "web", Config: map[string]string{"cores": "1", "memory": "1024", "scsi0": "local-lvm:vm-101-disk-0,size=32G"}},
		{VMID: 102, Kind: guest.LXC, Name: "ct", Running: true, Config: map[string]string{"cores": "1", "memory": "512", "rootfs": "local-lvm:vm-102-disk-0,size=8G"}},
		{VMID: 103, Kind: guest.QEMU, Name: "stubborn", Running: true, IgnoreShutdown: true, Config: map[string]string{"cores": "1", "memory": "1024"}},
	}
	for _, g := range specs {
		if err := srv.Sim.AddGuest(g); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := pve.ParseToken(srv.Token)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pve.New(pve.Options{URL: srv.URL, Token: tok, Fingerprint: srv.Fingerprint})
	if err != nil {
		t.Fatal(err)
	}
	return &executor.Executor{Client: c, Node: srv.Sim.Node(), Wait: pve.WaitOptions{Initial: time.Millisecond, Max: 5 * time.Millisecond}}, srv
}

// Each op reaches PVE as exactly the call it names, and an async call is
// waited on until its task stopped.
func TestRunEveryOp(t *testing.T) {
	ex, srv := setup(t, sim.Options{})
	steps := []struct {
		a     action.Action
		op    string // the simulator's name for the executed mutation
		async bool
		want  map[string]string // params the mutation must carry
	}{
		{action.Action{Op: action.SetConfig, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"cores": "2", "delete": "memory"}}, "config", false, map[string]string{"cores": "2", "delete": "memory"}},
		{action.Action{Op: action.Start, VMID: 101, Kind: guest.QEMU}, "start", true, nil},
		{action.Action{Op: action.Shutdown, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"timeout": "30"}}, "shutdown", true, map[string]string{"timeout": "30", "forceStop": "1"}},
		{action.Action{Op: action.Resize, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"disk": "scsi0", "size": "+1G"}}, "resize", true, map[string]string{"disk": "scsi0", "size": "+1G"}},
		{action.Action{Op: action.SnapshotCreate, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"snapname": "pre"}}, "snapshot", true, map[string]string{"snapname": "pre"}},
		{action.Action{Op: action.SnapshotRollback, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"snapname": "pre"}}, "rollback", true, nil},
		{action.Action{Op: action.SnapshotDelete, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"snapname": "pre"}}, "delsnapshot", true, nil},
		{action.Action{Op: action.Stop, VMID: 102, Kind: guest.LXC}, "stop", true, nil},
		{action.Action{Op: action.Destroy, VMID: 102, Kind: guest.LXC, Params: map[string]string{"purge": "1"}}, "destroy", true, map[string]string{"purge": "1"}},
		{action.Action{Op: action.Create, VMID: 104, Kind: guest.QEMU, Params: map[string]string{"name": "new", "cores": "2", "memory": "2048", "scsi0": "local-lvm:8"}}, "create", true, map[string]string{"name": "new", "scsi0": "local-lvm:8"}},
	}
	for _, s := range steps {
		before := len(srv.Sim.Mutations())
		var seen string
		out, err := ex.Run(t.Context(), s.a, func(u pve.UPID) error { seen = u.String(); return nil })
		if err != nil {
			t.Fatalf("%s: %v", s.a, err)
		}
		muts := srv.Sim.Mutations()[before:]
		if len(muts) != 1 || muts[0].Op != s.op || muts[0].VMID != s.a.VMID {
			t.Fatalf("%s: simulator executed %+v; want one %s %d", s.a, muts, s.op, s.a.VMID)
		}
		for k, v := range s.want {
			if muts[0].Params[k] != v {
				t.Errorf("%s: PVE got %s=%q; want %q (all params %v)", s.a, k, muts[0].Params[k], v, muts[0].Params)
			}
		}
		if s.async != (out.UPID != "") || seen != out.UPID {
			t.Errorf("%s: UPID %q, onTask saw %q; want async=%v", s.a, out.UPID, seen, s.async)
		}
		if s.async && out.ExitStatus != "OK" {
			t.Errorf("%s: exit status %q; want OK", s.a, out.ExitStatus)
		}
	}
	if g, ok := srv.Sim.Guest(104); !ok || g.Config["cores"] != "2" {
		t.Errorf("created guest 104 = %+v, %v", g, ok)
	}
	if _, ok := srv.Sim.Guest(102); ok {
		t.Error("destroyed guest 102 still exists")
	}
}

// A guest that ignores ACPI shutdown is stopped once the timeout passes:
// one task, graceful first, then forced.
func TestShutdownFallsBackToStop(t *testing.T) {
	ex, srv := setup(t, sim.Options{})
	if _, err := ex.Run(t.Context(), action.Action{Op: action.Shutdown, VMID: 103, Kind: guest.QEMU, Params: map[string]string{"timeout": "1"}}, nil); err != nil {
		t.Fatal(err)
	}
	if g, _ := srv.Sim.Guest(103); g.Status != "stopped" {
		t.Errorf("guest 103 status %s; want stopped", g.Status)
	}
}

// A task that fails is an error carrying PVE's exact exit text.
func TestTaskFailureCarriesExitStatus(t *testing.T) {
	ex, srv := setup(t, sim.Options{})
	srv.Sim.SetFaults(sim.Faults{TaskFailRate: 1})
	out, err := ex.Run(t.Context(), action.Action{Op: action.Start, VMID: 101, Kind: guest.QEMU}, nil)
	var te *pve.TaskError
	if !errors.As(err, &te) || te.ExitStatus == "" || out.ExitStatus != te.ExitStatus {
		t.Fatalf("err = %v, outcome %+v; want a TaskError whose exit status the outcome carries", err, out)
	}
}

// When the journal cannot record the task, Run returns at once without
// waiting: the op stays in flight for recovery.
func TestOnTaskFailureStopsBeforeWaiting(t *testing.T) {
	ex, _ := setup(t, sim.Options{})
	ex.Wait = pve.WaitOptions{Initial: time.Hour, Max: time.Hour} // waiting would hang the test
	boom := errors.New("disk full")
	out, err := ex.Run(t.Context(), action.Action{Op: action.Start, VMID: 101, Kind: guest.QEMU}, func(pve.UPID) error { return boom })
	if !errors.Is(err, boom) || out.UPID == "" {
		t.Fatalf("err = %v, outcome %+v; want the onTask error with the UPID", err, out)
	}
}

func TestUnknownOpIsRefused(t *testing.T) {
	ex, srv := setup(t, sim.Options{})
	_, err := ex.Run(t.Context(), action.Action{Op: "move_disk", VMID: 101, Kind: guest.QEMU}, nil)
	if !errors.Is(err, executor.ErrUnsupported) {
		t.Fatalf("err = %v; want ErrUnsupported", err)
	}
	if n := len(srv.Sim.Mutations()); n != 0 {
		t.Errorf("%d mutations; want none", n)
	}
}
