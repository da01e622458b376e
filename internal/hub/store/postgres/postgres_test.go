package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/pgtest"
	"github.com/steward-pve/steward/internal/hub/store/storetest"
	"github.com/steward-pve/steward/internal/wire"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func open(t *testing.T, url string, opt Options) *Store {
	t.Helper()
	s, err := Open(t.Context(), url, opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, pgtest.NewDatabase(t), Options{})
	})
}

// replicas opens n stores (n replicas' pools) on one new database.
func replicas(t *testing.T, n int) []*Store {
	t.Helper()
	url := pgtest.NewDatabase(t)
	out := make([]*Store, n)
	for i := range out {
		out[i] = open(t, url, Options{})
	}
	return out
}

func enroll(t *testing.T, s store.Store, host string) {
	t.Helper()
	ctx := t.Context()
	if err := s.CreateJoinToken(ctx, host, store.HashToken("j-"+host), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enroll(ctx, store.HashToken("j-"+host), store.HashToken("h-"+host)); err != nil {
		t.Fatal(err)
	}
}

// TestReplicasIfMatchOneWins: replicas racing to bump one host's
// generation with the same If-Match: exactly one wins, the others get
// ErrConflict, and the generation moved by one.
func TestReplicasIfMatchOneWins(t *testing.T) {
	rs := replicas(t, 4)
	ctx := t.Context()
	enroll(t, rs[0], "pve-a")
	if _, err := rs[1].PutDesired(ctx, "pve-a", []byte(`{"v":0}`), 0, "alice"); err != nil {
		t.Fatal(err)
	}
	for round := int64(1); round <= 5; round++ {
		const per = 4
		errs := make([]error, len(rs)*per)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() {
				_, errs[i] = rs[i%len(rs)].PutDesired(ctx, "pve-a", fmt.Appendf(nil, `{"r":%d,"i":%d}`, round, i), round, "alice")
			})
		}
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, store.ErrConflict):
				t.Fatalf("round %d PUT %d: %v; want nil or ErrConflict", round, i, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d PUTs with If-Match %d won across %d replicas; want exactly 1", round, won, round, len(rs))
		}
		for _, r := range rs {
			if d, err := r.Desired(ctx, "pve-a"); err != nil || d.Generation != round+1 {
				t.Fatalf("round %d: a replica reads generation %d, %v; want %d", round, d.Generation, err, round+1)
			}
		}
	}
}

// TestReplicasUnconditionalPutsConsecutive: unconditional PUTs through
// several replicas get generations 1..n, none twice, none skipped.
func TestReplicasUnconditionalPutsConsecutive(t *testing.T) {
	rs := replicas(t, 3)
	ctx := t.Context()
	enroll(t, rs[0], "pve-a")
	const n = 30
	gens := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { gens[i], errs[i] = rs[i%3].PutDesired(ctx, "pve-a", []byte(`{}`), store.AnyGeneration, "a") })
	}
	wg.Wait()
	seen := map[int64]bool{}
	for i := range n {
		if errs[i] != nil || seen[gens[i]] || gens[i] < 1 || gens[i] > n {
			t.Fatalf("PUT %d: generation %d, %v (seen before: %v); want a unique one in 1..%d", i, gens[i], errs[i], seen[gens[i]], n)
		}
		seen[gens[i]] = true
	}
	if hist, _ := rs[2].DesiredHistory(ctx, "pve-a", 100); len(hist) != n {
		t.Fatalf("history: %d generations; want %d", len(hist), n)
	}
}

// TestReplicasSameJobStoredOnce: replicas accepting the same signed job
// at once store it once; every other upload is ErrExists.
func TestReplicasSameJobStoredOnce(t *testing.T) {
	rs := replicas(t, 3)
	ctx := t.Context()
	enroll(t, rs[0], "pve-a")
	payload := []byte("steward-signed-job v1\nop: destroy\nvmid: 101\n")
	errs := make([]error, 9)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = rs[i%3].PutJob(ctx, "pve-a", payload, [][]byte{[]byte("sig")}, "alice")
		})
	}
	wg.Wait()
	stored := 0
	for i, err := range errs {
		switch {
		case err == nil:
			stored++
		case !errors.Is(err, store.ErrExists):
			t.Fatalf("upload %d: %v; want nil or ErrExists", i, err)
		}
	}
	if stored != 1 {
		t.Fatalf("%d of %d concurrent uploads of one job succeeded; want exactly 1", stored, len(errs))
	}
	jobs, err := rs[1].Jobs(ctx, "pve-a", "")
	if err != nil || len(jobs) != 1 || jobs[0].ID != wire.JobID(payload) {
		t.Fatalf("jobs: got %d, %v; want the one job once", len(jobs), err)
	}
	// Results from two replicas at once: one final state, the same one
	// again is accepted, another is a conflict.
	done := wire.JobResult{Job: jobs[0].ID, State: wire.JobDone}
	failed := wire.JobResult{Job: jobs[0].ID, State: wire.JobFailed, Reason: "x"}
	var e1, e2 error
	wg.Go(func() { e1 = rs[0].SetJobResult(ctx, "pve-a", done) })
	wg.Go(func() { e2 = rs[2].SetJobResult(ctx, "pve-a", failed) })
	wg.Wait()
	if (e1 == nil) == (e2 == nil) {
		t.Fatalf("done and failed at once: got %v and %v; want exactly one to win", e1, e2)
	}
	for _, e := range []error{e1, e2} {
		if e != nil && !errors.Is(e, store.ErrConflict) {
			t.Fatalf("the loser: %v; want ErrConflict", e)
		}
	}
}

// TestReplicasReceiptsRace: the same receipt batch through two replicas
// at once is stored once (the retry is recognized) and the chain is whole.
func TestReplicasReceiptsRace(t *testing.T) {
	rs := replicas(t, 2)
	ctx := t.Context()
	enroll(t, rs[0], "pve-a")
	batch := make([]wire.Receipt, 5)
	for i := range batch {
		batch[i] = wire.Receipt{Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC), Type: wire.ReceiptBegin, Op: fmt.Sprint("op", i), Source: "reconcile"}
	}
	wire.Chain(0, wire.ZeroHash, batch)
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Go(func() { _, errs[i] = rs[i%2].AppendReceipts(ctx, "pve-a", batch) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	got, err := rs[1].Receipts(ctx, "pve-a", 0, 100)
	if err != nil || len(got) != 5 {
		t.Fatalf("receipts: got %d, %v; want 5", len(got), err)
	}
}

// TestAuditIDsCommitInOrder: a reader paging the audit log by id while
// replicas append sees every entry exactly once.
func TestAuditIDsCommitInOrder(t *testing.T) {
	rs := replicas(t, 3)
	ctx := t.Context()
	const n = 60
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, err := rs[i%3].AppendAudit(ctx, store.AuditEntry{Actor: "a", Action: "x", Detail: fmt.Sprint(i)}); err != nil {
				t.Error(err)
			}
		})
	}
	seen := map[string]bool{}
	var after int64
	for len(seen) < n {
		page, err := rs[0].Audit(ctx, after, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			if seen[e.Detail] {
				t.Fatalf("entry %s read twice", e.Detail)
			}
			seen[e.Detail] = true
			after = e.ID
		}
		if len(page) == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	wg.Wait()
	if rest, _ := rs[0].Audit(ctx, after, 100); len(rest) != 0 {
		t.Fatalf("%d entries appeared behind the reader's cursor", len(rest))
	}
}

// TestConcurrentStartsMigrateOnce: replicas opening an empty database at
// the same moment all succeed, and the migrations ran once.
func TestConcurrentStartsMigrateOnce(t *testing.T) {
	url := pgtest.NewDatabase(t)
	const n = 6
	errs := make([]error, n)
	stores := make([]*Store, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = Open(t.Context(), url, Options{}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	db, known, err := stores[0].SchemaVersions(t.Context())
	if err != nil || db != known || known != SchemaVersion() {
		t.Fatalf("schema versions: db %d known %d, %v; want both %d", db, known, err, SchemaVersion())
	}
	var rows int
	if err := stores[1].pool.QueryRow(t.Context(), "SELECT count(*) FROM steward_schema").Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("steward_schema rows: %d, %v; want 1", rows, err)
	}
	// Every replica works on the one schema.
	enroll(t, stores[n-1], "pve-a")
	if h, err := stores[0].Host(t.Context(), "pve-a"); err != nil || h.EnrolledAt.IsZero() {
		t.Fatalf("host through another replica: %+v, %v", h, err)
	}
}

// TestOlderReplicaRefusesWrites: once a newer steward migrated the
// database, a replica of the older one (started before or after) reads
// but refuses every write with ErrNewerSchema naming both versions.
func TestOlderReplicaRefusesWrites(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := t.Context()
	current := open(t, url, Options{})
	enroll(t, current, "pve-a")
	if err := current.Writable(ctx); err != nil {
		t.Fatalf("Writable on a current schema: %v", err)
	}

	// A "newer steward" migrates: here, the version number moves on
	// (what a real newer migration leaves behind).
	newer := SchemaVersion() + 1
	if _, err := current.pool.Exec(ctx, "UPDATE steward_schema SET version = $1", newer); err != nil {
		t.Fatal(err)
	}
	late := open(t, url, Options{}) // an old replica started after the upgrade
	for name, s := range map[string]*Store{"running replica": current, "replica started after": late} {
		err := s.Writable(ctx)
		if !errors.Is(err, store.ErrNewerSchema) {
			t.Fatalf("%s: Writable: %v; want ErrNewerSchema", name, err)
		}
		for _, want := range []string{fmt.Sprint("version ", newer), fmt.Sprint("up to ", SchemaVersion()), "refuses writes"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not say %q", name, err, want)
			}
		}
		_, err = s.PutDesired(ctx, "pve-a", []byte(`{}`), store.AnyGeneration, "alice")
		if !errors.Is(err, store.ErrNewerSchema) {
			t.Fatalf("%s: PutDesired: %v; want ErrNewerSchema", name, err)
		}
		if _, err := s.Heartbeat(ctx, "pve-a", "x"); !errors.Is(err, store.ErrNewerSchema) {
			t.Fatalf("%s: Heartbeat: %v; want ErrNewerSchema", name, err)
		}
		if h, err := s.Host(ctx, "pve-a"); err != nil || h.ID != "pve-a" {
			t.Fatalf("%s: a read: %+v, %v; want it to work", name, h, err)
		}
	}
	if d, _ := current.Desired(ctx, "pve-a"); d.Generation != 0 {
		t.Fatalf("generation after refused writes: %d; want 0", d.Generation)
	}
	var v int
	if err := current.pool.QueryRow(ctx, "SELECT version FROM steward_schema").Scan(&v); err != nil || v != newer {
		t.Fatalf("schema version after an old replica opened: %d, %v; want %d untouched", v, err, newer)
	}
}

// TestUpgradeAppliesMissingMigrations: a database an older steward left
// at a lower version is brought up to this one's at Open.
func TestUpgradeAppliesMissingMigrations(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := t.Context()
	// Version 0 then the full set: the same as a database created by an
	// older steward and opened by this one.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE steward_schema (one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one), version INTEGER NOT NULL); INSERT INTO steward_schema (version) VALUES (0)"); err != nil {
		t.Fatal(err)
	}
	s := open(t, url, Options{})
	if db, known, err := s.SchemaVersions(ctx); err != nil || db != known {
		t.Fatalf("after upgrade: db %d, known %d, %v", db, known, err)
	}
	enroll(t, s, "pve-a")
}

func TestRedactHidesPassword(t *testing.T) {
	got := Redact("postgres://steward:s3cret@db.example:5432/steward?sslmode=require")
	if strings.Contains(got, "s3cret") || !strings.Contains(got, "db.example") {
		t.Fatalf("Redact: %q; want the host without the password", got)
	}
	_, err := Open(context.Background(), "postgres://steward:s3cret@127.0.0.1:1/x?sslmode=disable&connect_timeout=1", Options{})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("Open of an unreachable server: %v; want an error without the password", err)
	}
	_, err = Open(context.Background(), "postgres://steward:s3cret@[::1:5432/x", Options{})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("Open of a malformed URL: %v; want an error without the password", err)
	}
}

func TestMigrationsNumbered(t *testing.T) {
	m, err := migrations()
	if err != nil || len(m) == 0 {
		t.Fatalf("migrations: got %d, %v", len(m), err)
	}
}

func TestPoolSize(t *testing.T) {
	url := pgtest.NewDatabase(t)
	for _, tc := range []struct {
		url  string
		opt  Options
		want int32
	}{
		{url, Options{}, DefaultMaxConns},
		{url, Options{MaxConns: 3}, 3},
		{url + "&pool_max_conns=7", Options{}, 7},
	} {
		s := open(t, tc.url, tc.opt)
		if got := s.pool.Config().MaxConns; got != tc.want {
			t.Errorf("%s %+v: pool size %d; want %d", Redact(tc.url), tc.opt, got, tc.want)
		}
	}
}
