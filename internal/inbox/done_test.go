package inbox

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/engine"
)

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// Finished jobs leave the inbox with their signature files; jobs that may
// still run stay.
func TestSettleMovesFinishedJobs(t *testing.T) {
	dir := t.TempDir()
	inboxDir := filepath.Join(dir, "jobs")
	os.Mkdir(inboxDir, 0o700)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	in := &Done{Dir: filepath.Join(inboxDir, "done"), Now: func() time.Time { return now }}
	for _, n := range []string{"a.json", "a.json.sig", "a.json.sig.2", "b.json", "c.json", "d.json", "e.json", "[x].json", "[x].json.sig"} {
		writeFile(t, filepath.Join(inboxDir, n), n)
	}
	p := func(n string) string { return filepath.Join(inboxDir, n) }
	err := in.Settle([]engine.JobReport{
		{Name: p("a.json"), Status: engine.JobRan},
		{Name: p("b.json"), Status: engine.JobFailed, Reason: "task failed"},
		{Name: p("c.json"), Status: engine.JobCompleted, Reason: "ran before"},
		{Name: p("d.json"), Status: engine.JobRejected, Reason: "no signature"},
		{Name: p("e.json"), Status: engine.JobWaiting, Reason: "backing off"},
		{Name: p("[x].json"), Status: engine.JobRan},
	})
	if err != nil {
		t.Fatalf("Settle: %v", err)
	}
	if got, want := names(t, inboxDir), []string{"d.json", "done", "e.json"}; !slices.Equal(got, want) {
		t.Errorf("inbox holds %v; want %v", got, want)
	}
	want := []string{"20260102T030405Z-[x].json", "20260102T030405Z-[x].json.sig", "20260102T030405Z-a.json", "20260102T030405Z-a.json.sig",
		"20260102T030405Z-a.json.sig.2", "20260102T030405Z-b.json", "20260102T030405Z-c.json"}
	if got := names(t, in.Dir); !slices.Equal(got, want) {
		t.Errorf("done holds %v; want %v", got, want)
	}
	if b, _ := os.ReadFile(filepath.Join(in.Dir, "20260102T030405Z-a.json.sig.2")); string(b) != "a.json.sig.2" {
		t.Errorf("moved signature holds %q; want its original content", b)
	}

	// The same name finished again at the same second does not overwrite.
	writeFile(t, p("a.json"), "again")
	if err := in.Settle([]engine.JobReport{{Name: p("a.json"), Status: engine.JobCompleted}}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(in.Dir, "20260102T030405Z.1-a.json")); string(b) != "again" {
		t.Errorf("second a.json in done holds %q; want %q", b, "again")
	}
}

// Done jobs are kept for Retention, then pruned; other files are left.
func TestPrune(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 1, 20, 0, 0, 0, 0, time.UTC)
	in := &Done{Dir: dir, Retention: 7 * 24 * time.Hour, Now: func() time.Time { return now }}
	for _, n := range []string{"20260101T000000Z-old.json", "20260101T000000Z-old.json.sig", "20260101T000000Z.1-old.json",
		"20260119T000000Z-new.json", "notes.txt", "x-y.json"} {
		writeFile(t, filepath.Join(dir, n), "")
	}
	n, err := in.Prune()
	if err != nil || n != 3 {
		t.Fatalf("Prune = %d, %v; want 3 removed", n, err)
	}
	if got, want := names(t, dir), []string{"20260119T000000Z-new.json", "notes.txt", "x-y.json"}; !slices.Equal(got, want) {
		t.Errorf("after prune: %v; want %v", got, want)
	}
	if n, err := (&Done{Dir: filepath.Join(dir, "missing")}).Prune(); n != 0 || err != nil {
		t.Errorf("Prune of a missing dir = %d, %v; want 0, nil", n, err)
	}
}

func TestCheckDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	writeFile(t, file, "")
	for _, tc := range []struct{ path, want string }{
		{dir, ""},
		{filepath.Join(dir, "missing"), "does not exist"},
		{file, "is not a directory"},
	} {
		err := CheckDir("--signed-jobs", tc.path)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path)) {
			t.Errorf("CheckDir(%s) = %v; want %q naming the path", tc.path, err, tc.want)
		}
	}
}
