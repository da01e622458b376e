package journal

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Snapshot is a snapshot the agent took under a guest's snapshot
// schedule, as PVE listed it right after: the journal's proof that the
// snapshot is the agent's own, which alone makes pruning it benign. A
// snapshot PVE lists under the same name but with another snaptime or
// description is not this one (an operator deleted the agent's and made
// their own, or edited it) and is never pruned without a signature.
type Snapshot struct {
	VMID int    `json:"vmid"`
	Name string `json:"name"`
	// Snaptime is PVE's snaptime (Unix seconds) and Description the
	// snapshot's description, both as PVE listed them after the take.
	Snaptime    int64  `json:"snaptime"`
	Description string `json:"description,omitempty"`
	// Taken is the agent's clock when it began the take: the schedule
	// runs on it (the snapshot's name is made from it too).
	Taken time.Time `json:"taken"`
	// OpID is the op that took it.
	OpID string `json:"op,omitempty"`
	// Gone marks the snapshot as no longer the agent's to prune: the
	// agent pruned it, or PVE no longer lists it. The journal then
	// forgets it.
	Gone bool `json:"gone,omitempty"`
}

// RecordSnapshot records s (or, with s.Gone, forgets the snapshot of
// s.VMID named s.Name). It returns once the record is durable. Recorded
// snapshots survive compaction until forgotten.
func (j *Journal) RecordSnapshot(s Snapshot) error {
	if s.VMID <= 0 || s.Name == "" {
		return errors.New("journal: snapshot record without a vmid or name")
	}
	s.Taken = s.Taken.UTC()
	return j.append(record{Type: typeSnapshot, Snapshot: &s}, func() error { return nil })
}

// Snapshots returns the snapshots of vmid the journal holds as the
// agent's own, oldest first (by Taken, then name). It does not block on
// I/O.
func (j *Journal) Snapshots(vmid int) []Snapshot {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]Snapshot, 0, len(j.st.snaps[vmid]))
	for _, e := range j.st.snaps[vmid] {
		out = append(out, e.s)
	}
	slices.SortFunc(out, func(a, b Snapshot) int {
		if c := a.Taken.Compare(b.Taken); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return out
}

type snapEntry struct {
	s   Snapshot
	seq uint64
}

// applySnapshot folds a snapshot record into s.
func (s *state) applySnapshot(r *Snapshot) {
	if r.Gone {
		delete(s.snaps[r.VMID], r.Name)
		if len(s.snaps[r.VMID]) == 0 {
			delete(s.snaps, r.VMID)
		}
		return
	}
	if s.snaps == nil {
		s.snaps = map[int]map[string]snapEntry{}
	}
	if s.snaps[r.VMID] == nil {
		s.snaps[r.VMID] = map[string]snapEntry{}
	}
	s.snaps[r.VMID][r.Name] = snapEntry{s: *r, seq: s.seq}
}

// snapshotRecords are the records that rebuild the snapshots s holds.
func (s *state) snapshotRecords() []struct {
	seq uint64
	r   record
} {
	var out []struct {
		seq uint64
		r   record
	}
	for _, vmid := range slices.Sorted(maps.Keys(s.snaps)) {
		for _, e := range s.snaps[vmid] {
			sn := e.s
			out = append(out, struct {
				seq uint64
				r   record
			}{e.seq, record{Type: typeSnapshot, Snapshot: &sn}})
		}
	}
	return out
}

func validateSnapshot(r *Snapshot) error {
	if r.VMID <= 0 || r.Name == "" {
		return fmt.Errorf("snapshot record without a vmid or name")
	}
	return nil
}
