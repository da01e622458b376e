package journal

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2025, 3, 14, 9, 26, 53, 589793000, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func open(t testing.TB, dir string, opts Options) *Journal {
	t.Helper()
	j, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func configOp(id string, vmid int, key string) Op {
	return Op{
		ID:      id,
		Source:  "reconcile",
		Host:    "pve-a",
		Action:  action.Action{Op: action.SetConfig, VMID: vmid, Kind: guest.QEMU, Params: map[string]string{"cores": "4", "memory": "4096"}, Digest: "3f2a9c"},
		IdemKey: key,
	}
}

// cloneGuestOp is a reconcile clone of template 9000 into vmid.
func cloneGuestOp(id string, vmid int) Op {
	return Op{ID: id, Source: "reconcile", Host: "pve-a", IdemKey: "clone-" + id,
		Action: action.Action{Op: action.Clone, VMID: vmid, Kind: guest.QEMU, Params: map[string]string{"source": "9000", "full": "1"}}}
}

func createOp(id string, vmid int) Op {
	return Op{
		ID:      id,
		Source:  "signed",
		Host:    "pve-a",
		Action:  action.Action{Op: action.Create, VMID: vmid, Kind: guest.LXC, Params: map[string]string{"ostemplate": "local:vztmpl/debian-12.tar.zst", "memory": "512"}},
		IdemKey: "create-" + id,
		Signers: []string{"SHA256:abc"},
	}
}

func simpleOp(id string, op action.Op, vmid int) Op {
	return Op{ID: id, Source: "reconcile", Action: action.Action{Op: op, VMID: vmid, Kind: guest.QEMU}, IdemKey: "k-" + id}
}

// summary renders what a journal answers for the given keys and vmids, so
// two journals can be compared as a whole.
func summary(j *Journal, keys []string, vmids []int) string {
	var b strings.Builder
	for _, op := range j.InFlight() {
		fmt.Fprintf(&b, "inflight %s key=%q upid=%q action=%s time=%s\n", op.ID, op.IdemKey, op.UPID, op.Action.Key(), op.Time.Format(time.RFC3339Nano))
	}
	for _, k := range keys {
		r, ok := j.Completed(k)
		fmt.Fprintf(&b, "completed %q=%v %+v\n", k, ok, r)
	}
	for _, v := range vmids {
		p := j.Provenance(v)
		p.FailedAt, p.At = time.Time{}, time.Time{} // times, not state: checked in TestProvenance
		fmt.Fprintf(&b, "provenance %d=%+v\n", v, p)
	}
	fmt.Fprintf(&b, "last ended %v\n", j.LastEnded())
	return b.String()
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeJournal puts data in dir/journal and returns dir.
func writeJournal(t testing.TB, data []byte) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func recordOffsets(t testing.TB, data []byte) []int {
	t.Helper()
	d, err := decodeFile(data)
	if err != nil {
		t.Fatalf("decodeFile: %v", err)
	}
	return slices.Clone(d.offsets)
}
