package journal

import (
	"testing"
	"time"
)

// TestSnapshotRecordsSurviveReopenAndCompaction: the agent's own
// scheduled snapshots are kept across restarts and compaction (they are
// what makes pruning benign, long after the take's completion record has
// aged out) until forgotten.
func TestSnapshotRecordsSurviveReopenAndCompaction(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{Retention: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i, name := range []string{"steward-20261201-000000", "steward-20261202-000000", "steward-20261203-000000"} {
		if err := j.RecordSnapshot(Snapshot{VMID: 101, Name: name, Snaptime: t0.Unix() + int64(i)*86400, Description: "d", Taken: t0.Add(time.Duration(i) * 24 * time.Hour), OpID: "op"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.RecordSnapshot(Snapshot{VMID: 101, Name: "steward-20261201-000000", Gone: true}); err != nil {
		t.Fatal(err)
	}
	if err := j.RecordSnapshot(Snapshot{Name: "x"}); err == nil {
		t.Error("a record without a vmid was accepted")
	}
	if err := j.Compact(); err != nil {
		t.Fatal(err)
	}
	j.Close()
	j, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	got := j.Snapshots(101)
	if len(got) != 2 || got[0].Name != "steward-20261202-000000" || got[1].Name != "steward-20261203-000000" ||
		got[1].Snaptime != t0.Unix()+2*86400 || got[1].Description != "d" || !got[1].Taken.Equal(t0.Add(48*time.Hour)) {
		t.Fatalf("after forget, compaction and reopen: %+v; want the 2nd and 3rd, as recorded", got)
	}
	if n := len(j.Snapshots(102)); n != 0 {
		t.Errorf("guest 102 has %d snapshots; want none", n)
	}
}
