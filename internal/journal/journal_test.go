package journal

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
)

const (
	upid1 = "UPID:pve-a:0000A1B2:0001C3D4:67D3F6E5:qmconfig:101:steward@pve!agent:"
	upid3 = "UPID:pve-a:0000A1B3:0001C3E0:67D3F6F0:qmstart:101:steward@pve!agent:"
)

var (
	goldenKeys  = []string{"cfg-101-a", "create-op-2", "k-op-3", "cfg-103-a"}
	goldenVMIDs = []int{101, 102, 103, 105}
)

// writeGoldenSequence writes the fixed sequence behind testdata/golden.journal
// and returns the clock at its end.
func writeGoldenSequence(t *testing.T, dir string) (*clock, string) {
	t.Helper()
	clk := newClock()
	j, err := Open(dir, Options{Now: clk.Now, Retention: 24 * time.Hour})
	must(t, err)
	must(t, j.Begin(configOp("op-1", 101, "cfg-101-a")))
	clk.Advance(time.Second)
	must(t, j.Task("op-1", upid1))
	clk.Advance(time.Second)
	must(t, j.End("op-1", Result{OK: true, ExitStatus: "OK"}))
	must(t, j.Decision(Decision{VMID: 102, Action: action.Action{Op: action.Destroy, VMID: 102, Kind: guest.QEMU, Params: map[string]string{"purge": "1"}}, Class: "destructive", Verdict: "rejected", Reason: "destroy needs 2 signatures, got 0"}))
	must(t, j.Begin(createOp("op-2", 105)))
	clk.Advance(time.Second)
	must(t, j.Task("op-2", "UPID:pve-a:0000A1B4:0001C3E0:67D3F6F1:qmcreate:105:steward@pve!agent:"))
	clk.Advance(2 * time.Second)
	must(t, j.End("op-2", Result{OK: false, ExitStatus: "storage 'local' does not exist", Error: "create 105: task failed"}))
	clk.Advance(48 * time.Hour)
	must(t, j.Begin(simpleOp("op-3", action.Start, 101)))
	must(t, j.Task("op-3", upid3))
	must(t, j.Begin(configOp("op-4", 103, "cfg-103-a")))
	clk.Advance(time.Second)
	must(t, j.End("op-4", Result{OK: true}))
	sum := summary(j, goldenKeys, goldenVMIDs)
	must(t, j.Close())
	return clk, sum
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if os.Getenv("STEWARD_UPDATE_GOLDEN") == "1" {
		must(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with STEWARD_UPDATE_GOLDEN=1 to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: got %d bytes; want %d bytes equal to the golden file (STEWARD_UPDATE_GOLDEN=1 regenerates after an intended format change)\ngot:  %q\nwant: %q", name, len(got), len(want), got, want)
	}
}

// reencode decodes a journal file and encodes its records again.
func reencode(t *testing.T, data []byte) []byte {
	t.Helper()
	d, err := decodeFile(data)
	if err != nil {
		t.Fatalf("decodeFile: %v", err)
	}
	if d.end != len(data) {
		t.Fatalf("decodeFile stopped at %d of %d bytes", d.end, len(data))
	}
	out := fileHeader()
	for _, r := range d.records {
		f, err := encodeFrame(r)
		must(t, err)
		out = append(out, f...)
	}
	return out
}

func TestGolden(t *testing.T) {
	dir := t.TempDir()
	clk, liveSum := writeGoldenSequence(t, dir)
	data := readFile(t, filepath.Join(dir, FileName))
	checkGolden(t, "golden.journal", data)
	endClk := &clock{t: clk.Now()}

	// Compaction of the same journal, one day on: op-1's and op-2's keys
	// and the decision are past retention; op-2's failed-create
	// provenance, in-flight op-3 and op-4's key stay.
	clk.Advance(23 * time.Hour)
	j := open(t, dir, Options{Now: clk.Now, Retention: 24 * time.Hour})
	must(t, j.Compact())
	compacted := readFile(t, filepath.Join(dir, FileName))
	checkGolden(t, "golden-compacted.journal", compacted)
	compactedSum := summary(j, goldenKeys, goldenVMIDs)
	must(t, j.Close())

	for _, name := range []string{"golden.journal", "golden-compacted.journal"} {
		t.Run(name, func(t *testing.T) {
			g := readFile(t, filepath.Join("testdata", name))
			if got := reencode(t, g); !bytes.Equal(got, g) {
				t.Errorf("re-encoding the decoded records: got %q; want %q", got, g)
			}
		})
	}

	// The golden file opens to what the live journal answered.
	gj := open(t, writeJournal(t, readFile(t, "testdata/golden.journal")), Options{Now: endClk.Now, Retention: 24 * time.Hour})
	if got := summary(gj, goldenKeys, goldenVMIDs); got != liveSum {
		t.Errorf("opened golden journal:\ngot  %s\nwant %s", got, liveSum)
	}
	cj := open(t, writeJournal(t, readFile(t, "testdata/golden-compacted.journal")), Options{Now: clk.Now, Retention: 24 * time.Hour})
	if got := summary(cj, goldenKeys, goldenVMIDs); got != compactedSum {
		t.Errorf("opened compacted golden journal:\ngot  %s\nwant %s", got, compactedSum)
	}
	want := strings.Join([]string{
		`inflight op-3 key="k-op-3" upid="` + upid3 + `" action=qemu/101/start time=2025-03-16T09:26:58.589793Z`,
		`completed "cfg-101-a"=false {OK:false ExitStatus: Error: Resolution: RemainsDigest: Retry:false}`,
		`completed "create-op-2"=false {OK:false ExitStatus: Error: Resolution: RemainsDigest: Retry:false}`,
		`completed "k-op-3"=false {OK:false ExitStatus: Error: Resolution: RemainsDigest: Retry:false}`,
		`completed "cfg-103-a"=true {OK:true ExitStatus: Error: Resolution: RemainsDigest: Retry:false}`,
		`provenance 101={CreatedByAgent:false CreateFailed:false FailedAt:0001-01-01 00:00:00 +0000 UTC RemainsDigest: CreateOpID: At:0001-01-01 00:00:00 +0000 UTC Created:false Started:false}`,
		`provenance 102={CreatedByAgent:false CreateFailed:false FailedAt:0001-01-01 00:00:00 +0000 UTC RemainsDigest: CreateOpID: At:0001-01-01 00:00:00 +0000 UTC Created:false Started:false}`,
		`provenance 103={CreatedByAgent:false CreateFailed:false FailedAt:0001-01-01 00:00:00 +0000 UTC RemainsDigest: CreateOpID: At:0001-01-01 00:00:00 +0000 UTC Created:false Started:false}`,
		`provenance 105={CreatedByAgent:true CreateFailed:true FailedAt:0001-01-01 00:00:00 +0000 UTC RemainsDigest: CreateOpID:op-2 At:0001-01-01 00:00:00 +0000 UTC Created:false Started:false}`,
		`last ended map[103:op-4]`,
	}, "\n") + "\n"
	if compactedSum != want {
		t.Errorf("compacted journal answers:\ngot  %s\nwant %s", compactedSum, want)
	}
}

func TestTornTailAtEveryOffset(t *testing.T) {
	dir := t.TempDir()
	writeGoldenSequence(t, dir)
	data := readFile(t, filepath.Join(dir, FileName))
	offs := recordOffsets(t, data)
	last := offs[len(offs)-1]

	// The reference: the journal without its last record (op-4's end).
	ref := open(t, writeJournal(t, data[:last]), Options{Now: newClock().Now, Retention: 1000 * time.Hour})
	want := summary(ref, goldenKeys, goldenVMIDs)
	if _, ok := ref.Completed("cfg-103-a"); ok {
		t.Fatal("reference journal already has op-4's key completed; the last record is not op-4's end")
	}
	if !strings.Contains(want, "inflight op-4") {
		t.Fatalf("reference journal does not have op-4 in flight:\n%s", want)
	}

	for cut := last; cut < len(data); cut++ {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			dir := writeJournal(t, data[:cut])
			clk := newClock()
			j, err := Open(dir, Options{Now: clk.Now, Retention: 1000 * time.Hour})
			if err != nil {
				t.Fatalf("Open of a journal torn at byte %d: %v", cut, err)
			}
			if got := summary(j, goldenKeys, goldenVMIDs); got != want {
				t.Fatalf("after repair:\ngot  %s\nwant %s", got, want)
			}
			if fi, err := os.Stat(filepath.Join(dir, FileName)); err != nil || fi.Size() != int64(last) {
				t.Fatalf("file size after repair: got %v (%v); want %d", fi.Size(), err, last)
			}
			must(t, j.End("op-4", Result{OK: true}))
			must(t, j.Begin(simpleOp("op-5", action.Stop, 104)))
			must(t, j.Close())
			j2 := open(t, dir, Options{Now: clk.Now, Retention: 1000 * time.Hour})
			if _, ok := j2.Completed("cfg-103-a"); !ok {
				t.Error("op-4's key is not completed after the append that followed the repair")
			}
			if got := j2.InFlight(); len(got) != 2 || got[0].ID != "op-3" || got[1].ID != "op-5" {
				t.Errorf("got in flight %v; want op-3 and op-5", got)
			}
		})
	}
}

func TestTornHeaderAndZeroTail(t *testing.T) {
	dir := t.TempDir()
	writeGoldenSequence(t, dir)
	data := readFile(t, filepath.Join(dir, FileName))
	for cut := range headerSize {
		t.Run(fmt.Sprintf("header-%d", cut), func(t *testing.T) {
			j := open(t, writeJournal(t, data[:cut]), Options{})
			if got := j.InFlight(); len(got) != 0 {
				t.Errorf("got in flight %v; want none", got)
			}
			must(t, j.Begin(simpleOp("a", action.Start, 1)))
		})
	}
	// Zeros after the last record, as a file system that extended the
	// file but never wrote the data leaves after a crash.
	t.Run("zeros", func(t *testing.T) {
		torn := append(bytes.Clone(data), make([]byte, 4096)...)
		dir := writeJournal(t, torn)
		j := open(t, dir, Options{Now: newClock().Now, Retention: 1000 * time.Hour})
		if got := len(readFile(t, filepath.Join(dir, FileName))); got != len(data) {
			t.Errorf("got file size %d after repair; want %d", got, len(data))
		}
		if _, ok := j.Completed("cfg-103-a"); !ok {
			t.Error("the last whole record was lost")
		}
	})
}

func TestCorruption(t *testing.T) {
	dir := t.TempDir()
	writeGoldenSequence(t, dir)
	data := readFile(t, filepath.Join(dir, FileName))
	offs := recordOffsets(t, data)
	mid := offs[len(offs)/2]

	// Raw records with valid checksums that must still be refused.
	raw := func(typ recordType, body string) []byte {
		return appendFrame(nil, append([]byte{byte(typ)}, body...))
	}
	endUnknown := append(append(fileHeader(), raw(typeEnd, `{"id":"nope","time":"2025-01-01T00:00:00Z","result":{"ok":true}}`)...), data[offs[0]:]...)
	badJSON := append(append(fileHeader(), raw(typeBegin, `{"id":`)...), data[offs[0]:]...)
	unknownType := append(append(fileHeader(), raw(9, `{}`)...), data[offs[0]:]...)

	flip := func(at int) []byte {
		b := bytes.Clone(data)
		b[at] ^= 0x40
		return b
	}
	tests := []struct {
		name   string
		data   []byte
		offset int64
	}{
		{"payload byte of a middle record", flip(mid + frameHeaderSize + 5), int64(mid)},
		{"length of a middle record", flip(mid + 1), int64(mid)},
		{"checksum of a middle record", flip(mid + 5), int64(mid)},
		{"first record", flip(offs[0] + frameHeaderSize + 2), int64(offs[0])},
		{"magic", flip(2), 0},
		{"version", flip(8), 8},
		{"end for an op never begun", endUnknown, headerSize},
		{"valid checksum, bad JSON", badJSON, headerSize},
		{"unknown record type", unknownType, headerSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeJournal(t, tt.data)
			j, err := Open(dir, Options{})
			if err == nil {
				j.Close()
				t.Fatal("Open succeeded; want ErrCorrupt")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("got %v; want an error wrapping ErrCorrupt", err)
			}
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("got %T; want *CorruptError", err)
			}
			if ce.Offset != tt.offset {
				t.Errorf("got offset %d; want %d (%v)", ce.Offset, tt.offset, err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("offset %d", tt.offset)) || !strings.Contains(err.Error(), filepath.Join(dir, FileName)) {
				t.Errorf("error %q does not name the offset and the file", err)
			}
			if got := readFile(t, filepath.Join(dir, FileName)); !bytes.Equal(got, tt.data) {
				t.Error("Open modified a corrupt journal")
			}
		})
	}
}

func TestIdempotencySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	j := open(t, dir, Options{Now: clk.Now})
	op := configOp("op-1", 101, "key-1")
	must(t, j.Begin(op))
	if err := j.Begin(configOp("op-2", 101, "key-1")); !errors.Is(err, ErrInFlight) {
		t.Errorf("Begin with an in-flight key: got %v; want ErrInFlight", err)
	}
	if err := j.Begin(configOp("op-1", 101, "other")); !errors.Is(err, ErrInFlight) {
		t.Errorf("Begin with an in-flight op id: got %v; want ErrInFlight", err)
	}
	want := Result{OK: true, ExitStatus: "OK"}
	must(t, j.End("op-1", want))
	must(t, j.Close())

	j = open(t, dir, Options{Now: clk.Now})
	got, ok := j.Completed("key-1")
	if !ok || got != want {
		t.Errorf("Completed after restart: got %+v, %v; want %+v, true", got, ok, want)
	}
	if err := j.Begin(configOp("op-9", 101, "key-1")); !errors.Is(err, ErrDone) {
		t.Errorf("Begin with a completed key after restart: got %v; want ErrDone", err)
	}
	if got := j.InFlight(); len(got) != 0 {
		t.Errorf("a refused Begin left ops in flight: %v", got)
	}
	if _, ok := j.Completed("never"); ok {
		t.Error("Completed of an unknown key: got true; want false")
	}
	// Past retention the key no longer blocks, even before compaction.
	clk.Advance(DefaultRetention + time.Minute)
	if _, ok := j.Completed("key-1"); ok {
		t.Error("Completed past retention: got true; want false")
	}
	must(t, j.Begin(configOp("op-10", 101, "key-1")))
}

func TestInFlightAfterReopen(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	j := open(t, dir, Options{Now: clk.Now})
	for i, id := range []string{"c", "a", "d", "b"} {
		must(t, j.Begin(simpleOp(id, action.Start, 100+i)))
	}
	must(t, j.Task("a", upid1))
	must(t, j.End("d", Result{OK: true}))
	if err := j.Task("d", upid1); !errors.Is(err, ErrUnknownOp) {
		t.Errorf("Task for an ended op: got %v; want ErrUnknownOp", err)
	}
	if err := j.End("zzz", Result{}); !errors.Is(err, ErrUnknownOp) {
		t.Errorf("End for an unknown op: got %v; want ErrUnknownOp", err)
	}
	must(t, j.Close())

	j = open(t, dir, Options{Now: clk.Now})
	ops := j.InFlight()
	var got []string
	for _, op := range ops {
		got = append(got, op.ID+"="+op.UPID)
	}
	if want := []string{"c=", "a=" + upid1, "b="}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got in flight %v; want %v (begin order, with UPIDs)", got, want)
	}
	// InFlight returns copies.
	ops[0].Action.Params = map[string]string{"x": "y"}
	ops[0].UPID = "changed"
	if again := j.InFlight(); again[0].UPID != "" || again[0].Action.Params != nil {
		t.Errorf("mutating InFlight's result changed the journal: %+v", again[0])
	}
}

func TestClosed(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	must(t, j.Close())
	must(t, j.Close())
	for name, err := range map[string]error{
		"Begin":    j.Begin(simpleOp("a", action.Start, 1)),
		"Task":     j.Task("a", upid1),
		"End":      j.End("a", Result{}),
		"Decision": j.Decision(Decision{VMID: 1}),
		"Compact":  j.Compact(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: got %v; want ErrClosed", name, err)
		}
	}
	if err := j.Begin(Op{}); err == nil || !strings.HasPrefix(err.Error(), "journal: ") {
		t.Errorf("Begin without an id: got %v; want a journal: error", err)
	}
}

func TestConcurrentAppenders(t *testing.T) {
	// With a tiny MaxBytes, automatic compaction runs while others append.
	for _, maxBytes := range []int64{0, 2048} {
		t.Run(fmt.Sprintf("MaxBytes=%d", maxBytes), func(t *testing.T) { testConcurrentAppenders(t, Options{MaxBytes: maxBytes}) })
	}
}

func testConcurrentAppenders(t *testing.T, opts Options) {
	dir := t.TempDir()
	j := open(t, dir, opts)
	const writers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				if err := j.Begin(simpleOp(id, action.Start, 100+w)); err != nil {
					errs <- err
					continue
				}
				if i%2 == 0 {
					if err := j.End(id, Result{OK: true}); err != nil {
						errs <- err
					}
				}
				if _, ok := j.Completed("k-" + id); ok != (i%2 == 0) {
					errs <- fmt.Errorf("op %s: Completed=%v right after its own append", id, ok)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	must(t, j.Close())
	j = open(t, dir, opts)
	if got, want := len(j.InFlight()), writers*each/2; got != want {
		t.Errorf("got %d in flight after reopen; want %d", got, want)
	}
	for w := range writers {
		for i := 0; i < each; i += 2 {
			if _, ok := j.Completed(fmt.Sprintf("k-w%d-%d", w, i)); !ok {
				t.Errorf("op w%d-%d: key not completed after reopen", w, i)
			}
		}
	}
}
