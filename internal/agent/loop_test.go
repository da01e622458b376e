package agent_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/agent"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/pve"
)

// quietPVE is a PVE with no guests whose task reads fail while down is
// set: enough to drive the loop's timing without a server, which a
// synctest bubble could not wait on. Every mutation is an error and is
// counted.
type quietPVE struct {
	mu        sync.Mutex
	lists     int // guest list reads (two per tick)
	waits     int // WaitTask calls (recovery)
	mutations int
	down      bool
}

var errDown = errors.New("connection refused")

func (p *quietPVE) Guests(ctx context.Context, node string, kind guest.Kind) ([]pve.GuestSummary, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lists++
	return nil, nil
}

func (p *quietPVE) GuestConfig(ctx context.Context, node string, kind guest.Kind, vmid int) (pve.GuestConfig, error) {
	return pve.GuestConfig{}, errors.New("no such guest")
}

func (p *quietPVE) ConfigWithPending(ctx context.Context, node string, kind guest.Kind, vmid int) (pve.PendingConfig, error) {
	return pve.PendingConfig{}, errors.New("no such guest")
}

func (p *quietPVE) TaskStatus(ctx context.Context, node string, upid pve.UPID) (pve.TaskStatus, error) {
	return pve.TaskStatus{}, errDown
}

func (p *quietPVE) Tasks(ctx context.Context, node string, q pve.TaskQuery) ([]pve.TaskSummary, error) {
	return nil, errDown
}

func (p *quietPVE) Snapshots(ctx context.Context, node string, kind guest.Kind, vmid int) ([]pve.Snapshot, error) {
	return nil, errDown
}

func (p *quietPVE) WaitTask(ctx context.Context, upid pve.UPID, o pve.WaitOptions) (pve.TaskResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waits++
	if p.down {
		return pve.TaskResult{}, errDown
	}
	return pve.TaskResult{ExitStatus: "OK"}, nil
}

func (p *quietPVE) mutate() (pve.Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mutations++
	return pve.Result{}, errors.New("quietPVE: no mutations")
}

func (p *quietPVE) Start(context.Context, string, guest.Kind, int) (pve.Result, error) {
	return p.mutate()
}
func (p *quietPVE) Shutdown(context.Context, string, guest.Kind, int, pve.ShutdownOptions) (pve.Result, error) {
	return p.mutate()
}
func (p *quietPVE) Reboot(context.Context, string, guest.Kind, int, time.Duration) (pve.Result, error) {
	return p.mutate()
}
func (p *quietPVE) Stop(context.Context, string, guest.Kind, int) (pve.Result, error) {
	return p.mutate()
}
func (p *quietPVE) SetConfig(context.Context, string, guest.Kind, int, pve.ConfigChange) (pve.Result, error) {
	return p.mutate()
}
func (p *quietPVE) Resize(context.Context, string, guest.Kind, int, string, string, string) (pve.Result, error) {
	return p.mutate()
}
func (p *quietPVE) Create(context.Context, string, guest.Kind, int, map[string]string) (pve.Result, error) {
	return p.mutate()
}
func (p *quietPVE) Clone(context.Context, string, guest.Kind, int, int, map[string]string) (pve.Result, error) {
	return p.mutate()
}
func (p *quietPVE) ClusterResources(context.Context, string) ([]pve.Resource, error) {
	return nil, errDown
}
func (p *quietPVE) VolumeInfo(context.Context, string, string) (pve.Volume, error) {
	return pve.Volume{}, errDown
}
func (p *quietPVE) StorageStatus(context.Context, string, string) (pve.Storage, error) {
	return pve.Storage{}, errDown
}
func (p *quietPVE) Destroy(context.Context, string, guest.Kind, int, pve.DestroyOptions) (pve.Result, error) {
	return p.mutate()
}
func (p *quietPVE) SnapshotTake(context.Context, string, guest.Kind, int, pve.SnapshotOptions) (pve.Result, error) {
	return p.mutate()
}
func (p *quietPVE) SnapshotRollback(context.Context, string, guest.Kind, int, string) (pve.Result, error) {
	return p.mutate()
}
func (p *quietPVE) SnapshotDelete(context.Context, string, guest.Kind, int, string) (pve.Result, error) {
	return p.mutate()
}
func (p *quietPVE) Migrate(context.Context, string, guest.Kind, int, map[string]string) (pve.Result, error) {
	return p.mutate()
}
func (p *quietPVE) MigrateCheck(context.Context, string, guest.Kind, int, string) (pve.MigrateCheck, error) {
	return pve.MigrateCheck{}, nil
}
func (p *quietPVE) TaskLog(context.Context, string, pve.UPID, int, int) ([]pve.LogLine, error) {
	return nil, nil
}

func (p *quietPVE) counts() (lists, waits, mutations int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lists, p.waits, p.mutations
}

func (p *quietPVE) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
}

// TestRunTicksEveryInterval: the first tick runs at once, then one per
// Interval; cancelling the context stops the loop cleanly (nil error) and
// releases the state directory.
func TestRunTicksEveryInterval(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		p := &quietPVE{}
		var ticks []time.Duration
		start := time.Now()
		a, err := agent.New(agent.Config{Node: "pve", PVE: p, StateDir: dir, Interval: 30 * time.Second,
			OnTick: func(rep engine.Report, err error) {
				if err != nil {
					t.Errorf("tick at %v failed: %v", time.Since(start), err)
				}
				ticks = append(ticks, time.Since(start))
			}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()

		time.Sleep(95 * time.Second)
		synctest.Wait()
		want := []time.Duration{0, 30 * time.Second, 60 * time.Second, 90 * time.Second}
		if len(ticks) != len(want) {
			t.Fatalf("ticks at %v after 95s; want %v", ticks, want)
		}
		for i := range want {
			if ticks[i] != want[i] {
				t.Errorf("tick %d at %v; want %v", i, ticks[i], want[i])
			}
		}
		if lists, _, _ := p.counts(); lists != 2*len(want) {
			t.Errorf("%d guest list reads; want %d (two per tick)", lists, 2*len(want))
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run after cancel: %v; want nil (shutdown is not a failure)", err)
		}
	})
	// The lock is free again: another agent can take the directory.
	a, _ := agent.New(agent.Config{Node: "pve", PVE: &quietPVE{}, StateDir: dir})
	if _, err := a.Once(t.Context()); err != nil {
		t.Errorf("Once after Run returned: %v; want the state directory free", err)
	}
}

// crashedStateDir returns a state directory whose journal holds what a
// crash leaves: a start of guest 101 begun, its task recorded, not ended.
func crashedStateDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	j, err := journal.Open(dir+"/journal", journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if err := j.Begin(journal.Op{ID: "op-1", Source: "reconcile", Host: "pve", Action: action.Action{Op: action.Start, VMID: 101, Kind: guest.QEMU}}); err != nil {
		t.Fatal(err)
	}
	if err := j.Task("op-1", "UPID:pve:00001234:00005678:67D3F6F1:qmstart:101:steward@pve!agent:"); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestRunRecoversBeforeTicking: an op interrupted by a crash is resolved
// before the first tick; while PVE cannot say what became of it, recovery
// is retried every Interval and nothing is observed or changed.
func TestRunRecoversBeforeTicking(t *testing.T) {
	dir := crashedStateDir(t)

	synctest.Test(t, func(t *testing.T) {
		p := &quietPVE{down: true}
		ticked := 0
		a, err := agent.New(agent.Config{Node: "pve", PVE: p, StateDir: dir, Interval: 10 * time.Second,
			TaskWait: pve.WaitOptions{Initial: time.Second, Max: time.Second},
			OnTick:   func(engine.Report, error) { ticked++ }})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()

		time.Sleep(35 * time.Second)
		synctest.Wait()
		lists, waits, mutations := p.counts()
		if ticked != 0 || lists != 0 || mutations != 0 {
			t.Fatalf("while recovery fails: %d ticks, %d list reads, %d mutations; want none", ticked, lists, mutations)
		}
		if waits != 4 {
			t.Errorf("recovery asked PVE about the task %d times in 35s; want 4 (at once, then every 10s)", waits)
		}

		p.setDown(false)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if ticked != 1 {
			t.Errorf("%d ticks after recovery succeeded; want 1", ticked)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	j, err := journal.Open(dir+"/journal", journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if n := len(j.InFlight()); n != 0 {
		t.Errorf("%d ops still in flight after recovery; want 0", n)
	}
}

// TestRunStoppedDuringRecovery: shutting down while recovery keeps failing
// returns the context's error (nothing was resolved) and frees the
// directory.
func TestRunStoppedDuringRecovery(t *testing.T) {
	dir := crashedStateDir(t)
	synctest.Test(t, func(t *testing.T) {
		a, _ := agent.New(agent.Config{Node: "pve", PVE: &quietPVE{down: true}, StateDir: dir, Interval: time.Minute})
		ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
		defer cancel()
		if err := a.Run(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Run stopped during recovery: %v; want the context's error", err)
		}
	})
}

func TestSecondAgentRefused(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		a, _ := agent.New(agent.Config{Node: "pve", PVE: &quietPVE{}, StateDir: dir})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		synctest.Wait()
		b, _ := agent.New(agent.Config{Node: "pve", PVE: &quietPVE{}, StateDir: dir})
		_, err := b.Once(t.Context())
		if err == nil || !strings.Contains(err.Error(), "in use by another steward agent") {
			t.Errorf("second agent on the same state directory: %v; want refused", err)
		}
		cancel()
		<-done
	})
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, c := range []agent.Config{{PVE: &quietPVE{}}, {Node: "pve"}, {Node: "pve", PVE: &quietPVE{}, Interval: -time.Second}} {
		if _, err := agent.New(c); !errors.Is(err, agent.ErrConfig) {
			t.Errorf("New(%+v): %v; want ErrConfig", c, err)
		}
	}
	a, _ := agent.New(agent.Config{Node: "pve", PVE: &quietPVE{}})
	if _, err := a.Once(t.Context()); !errors.Is(err, agent.ErrConfig) {
		t.Errorf("Once without a state directory: %v; want ErrConfig", err)
	}
}
