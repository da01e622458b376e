package journal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
)

// dumpState renders everything a journal's state answers, except what
// compaction at cutoff legitimately drops, independent of sequence numbers.
func dumpState(st *state, cutoff time.Time) string {
	var lines []string
	var fs []*flight
	for _, f := range st.inflight {
		fs = append(fs, f)
	}
	slices.SortFunc(fs, func(a, b *flight) int { return int(a.seq) - int(b.seq) })
	for _, f := range fs {
		js, _ := json.Marshal(f.op)
		lines = append(lines, "inflight "+string(js))
	}
	var rest []string
	for k, c := range st.completed {
		if !c.at.Before(cutoff) {
			rest = append(rest, fmt.Sprintf("completed %q %s %d %+v %s", k, c.opID, c.vmid, c.result, c.at.Format(time.RFC3339Nano)))
		}
	}
	for v, p := range st.prov {
		rest = append(rest, fmt.Sprintf("prov %d %s ended=%v failed=%v %s", v, p.createOp, p.ended, p.failed, p.at.Format(time.RFC3339Nano)))
	}
	slices.Sort(rest)
	for _, e := range st.decisions {
		if !e.d.Time.Before(cutoff) {
			js, _ := json.Marshal(e.d)
			rest = append(rest, "decision "+string(js))
		}
	}
	return strings.Join(append(lines, rest...), "\n")
}

func fuzzSeeds(f *testing.F) {
	for _, name := range []string{"golden.journal", "golden-compacted.journal"} {
		g, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(g)
		f.Add(g[:len(g)-7])
		f.Add(g[:headerSize+3])
		b := bytes.Clone(g)
		b[len(b)/2] ^= 1
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add(fileHeader())
	f.Add(append(fileHeader(), make([]byte, 64)...))
	f.Add([]byte("not a journal at all"))
	f.Add(append(fileHeader(), appendFrame(nil, append([]byte{byte(typeBegin)}, `{"id":"x","time":"2025-01-01T00:00:00+02:00","action":{"op":"create","vmid":7,"kind":"lxc"}}`...))...))
}

func FuzzDecode(f *testing.F) {
	fuzzSeeds(f)
	f.Add([]byte{byte(typeTask), '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		// As a payload: decoding never panics, and what decodes encodes
		// to a stable form.
		if r, err := decodePayload(data); err == nil {
			p1, err := encodePayload(r)
			if err != nil {
				t.Fatalf("re-encoding a decoded %v record: %v", r.Type, err)
			}
			r2, err := decodePayload(p1)
			if err != nil {
				t.Fatalf("decoding a re-encoded %v record %q: %v", r.Type, p1, err)
			}
			p2, err := encodePayload(r2)
			if err != nil || !bytes.Equal(p1, p2) {
				t.Fatalf("encoding is not stable: %q then %q (%v)", p1, p2, err)
			}
		}
		// As a file: either corrupt, or whole records up to end.
		d, err := decodeFile(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v; want nil or ErrCorrupt", err)
			}
			return
		}
		if !d.tornHeader && (d.end < headerSize || d.end > len(data)) {
			t.Fatalf("end %d outside [%d, %d]", d.end, headerSize, len(data))
		}
	})
}

func FuzzOpen(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, FileName)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		clk := newClock()
		opts := Options{Now: clk.Now, Retention: 30 * 24 * time.Hour}
		cutoff := clk.Now().Add(-opts.Retention)
		j, err := Open(dir, opts)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: got %v; want nil or ErrCorrupt", err)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
				t.Fatal("Open modified a journal it refused")
			}
			return
		}
		want := dumpState(j.st, cutoff)
		must(t, j.Close())

		// The repaired file reopens to the same state, and again after
		// compaction.
		j = open(t, dir, opts)
		if got := dumpState(j.st, cutoff); got != want {
			t.Fatalf("reopen after repair:\ngot  %s\nwant %s", got, want)
		}
		must(t, j.Compact())
		must(t, j.Close())
		j = open(t, dir, opts)
		if got := dumpState(j.st, cutoff); got != want {
			t.Fatalf("reopen after compaction:\ngot  %s\nwant %s", got, want)
		}
		// And it takes appends.
		op := Op{ID: "fuzz-new-op", IdemKey: "fuzz-new-key", Action: action.Action{Op: action.Start, VMID: 1}}
		if err := j.Begin(op); errors.Is(err, ErrInFlight) || errors.Is(err, ErrDone) {
			return // the input already used the id or key
		} else if err != nil {
			t.Fatal(err)
		}
		must(t, j.End(op.ID, Result{OK: true}))
		must(t, j.Close())
		j = open(t, dir, opts)
		if _, ok := j.Completed("fuzz-new-key"); !ok {
			t.Fatal("an op appended after repair was lost")
		}
	})
}
