package postgres

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/pgtest"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/wire"
)

// fill gives s one of everything a hub keeps.
func fill(t *testing.T, s store.Store) {
	t.Helper()
	ctx := t.Context()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []string{"pve-b", "pve-a", "pve-c"} {
		enroll(t, s, h)
	}
	must(s.CreateJoinToken(ctx, "pve-new", store.HashToken("unused"), time.Now().Add(time.Hour))) // invited, never enrolled
	must(s.RevokeHost(ctx, "pve-c"))
	must(s.SetBlocked(ctx, "pve-b", true, "disk swap"))
	must(s.CreateOperator(ctx, "alice", store.HashToken("op-alice")))
	must(s.CreateOperator(ctx, "bob", store.HashToken("op-bob")))
	must(s.RevokeOperator(ctx, "bob"))
	for i := range 3 {
		_, err := s.PutDesired(ctx, "pve-a", fmt.Appendf(nil, `{"v":%d}`, i), store.AnyGeneration, "alice")
		must(err)
	}
	must(s.PutReport(ctx, "pve-a", []byte(`{"host":"pve-a"}`), "rh1"))
	j1, err := s.PutJob(ctx, "pve-a", []byte("job one\r\n"), [][]byte{[]byte("sig1"), []byte("sig2\n")}, "alice")
	must(err)
	_, err = s.PutJob(ctx, "pve-a", []byte("job two\n"), nil, "alice")
	must(err)
	must(s.SetJobResult(ctx, "pve-a", wire.JobResult{Job: j1.ID, State: wire.JobDone, Reason: "ok"}))
	must(s.SetPending(ctx, "pve-a", []wire.Pending{{Action: wire.Action{Op: "destroy", VMID: 101, Kind: "lxc"}, Reason: "destroys", Payload: []byte("p\n")}}))
	rs := make([]wire.Receipt, 3)
	for i := range rs {
		rs[i] = wire.Receipt{Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC), Type: wire.ReceiptBegin, Op: fmt.Sprint("op", i), Source: "reconcile"}
	}
	wire.Chain(0, wire.ZeroHash, rs)
	_, err = s.AppendReceipts(ctx, "pve-a", rs)
	must(err)
	for i := range 3 {
		_, err := s.AppendAudit(ctx, store.AuditEntry{Actor: "alice", Action: "desired.put", Host: "pve-a", Detail: fmt.Sprint(i)})
		must(err)
	}
	must(s.TouchOperator(ctx, "alice", time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)))
	must(s.CreateSession(ctx, store.HashToken("session-alice"), "alice", time.Now().Add(time.Hour)))
	for i := range 4 {
		_, err := s.AppendEvent(ctx, store.Event{Type: store.EventDesiredChanged, Host: "pve-a", Actor: "alice", Detail: fmt.Sprint(i)})
		must(err)
	}
	_, err = s.PruneEvents(ctx, time.Time{}, 2) // ids 3 and 4 kept: the copy keeps ids
	must(err)
	// The outbox: one delivered, one pending under a lease (a hub stopped
	// mid-send), one waiting for its retry.
	at := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 {
		_, err := s.EnqueueNotification(ctx, store.Notification{Sink: "ops", Key: fmt.Sprint("k", i), Body: []byte(`{"n":` + fmt.Sprint(i) + `}`), CreatedAt: at}, 0)
		must(err)
	}
	claimed, err := s.ClaimNotifications(ctx, "hub-1", at, time.Minute, 3)
	must(err)
	must(s.AckNotification(ctx, claimed[0].ID, at))
	must(s.RetryNotification(ctx, claimed[2].ID, "hub-1", at.Add(time.Hour), "502 Bad Gateway", false))
}

// TestCopyFromSQLite: a hub's SQLite store copied into PostgreSQL is the
// same, table by table (counts and content hashes), and works: old tokens
// authenticate, generations, job order, the receipt chain and audit ids
// continue where they were.
func TestCopyFromSQLite(t *testing.T) {
	ctx := t.Context()
	src, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	fill(t, src)
	dst := open(t, pgtest.NewDatabase(t), Options{})
	sums, err := store.Copy(ctx, src, dst)
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	counts := map[string]int{}
	for _, s := range sums {
		counts[s.Table] = s.Count
	}
	want := map[string]int{"hosts": 4, "join_tokens": 4, "operators": 2, "desired": 3, "reports": 1, "jobs": 2, "pending": 1, "receipts": 3, "audit": 3, "events": 2, "sessions": 1, "outbox": 3}
	for table, n := range want {
		if counts[table] != n {
			t.Errorf("%s: copied %d rows; want %d", table, counts[table], n)
		}
	}

	if h, err := dst.HostByToken(ctx, store.HashToken("h-pve-a")); err != nil || h.ID != "pve-a" || h.DesiredGeneration != 3 || h.ReportHash != "rh1" {
		t.Fatalf("pve-a by its old token: %+v, %v", h, err)
	}
	if _, err := dst.HostByToken(ctx, store.HashToken("h-pve-c")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoked pve-c's token: %v; want ErrNotFound", err)
	}
	if h, _ := dst.Host(ctx, "pve-b"); !h.Blocked || h.BlockedReason != "disk swap" {
		t.Fatalf("pve-b: %+v; want blocked", h)
	}
	if _, err := dst.Enroll(ctx, store.HashToken("unused"), store.HashToken("h-new")); err != nil {
		t.Fatalf("the unused join token after the copy: %v", err)
	}
	if x, err := dst.SessionByToken(ctx, store.HashToken("session-alice"), time.Now()); err != nil || x.Operator != "alice" {
		t.Fatalf("alice's dashboard session after the copy: %+v, %v", x, err)
	}
	if o, err := dst.OperatorByToken(ctx, store.HashToken("op-alice")); err != nil || o.Name != "alice" || !o.LastUsed.Equal(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("alice's token: %+v, %v; want it, last used 2026-02-01", o, err)
	}
	if _, err := dst.OperatorByToken(ctx, store.HashToken("op-bob")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("bob's revoked token: %v; want ErrNotFound", err)
	}
	if gen, err := dst.PutDesired(ctx, "pve-a", []byte(`{}`), 3, "alice"); err != nil || gen != 4 {
		t.Fatalf("PutDesired If-Match 3 after the copy: %d, %v; want 4", gen, err)
	}
	j3, err := dst.PutJob(ctx, "pve-a", []byte("job three\n"), nil, "alice")
	if err != nil {
		t.Fatal(err)
	}
	jobs, _ := dst.Jobs(ctx, "pve-a", "")
	if len(jobs) != 3 || string(jobs[0].Payload) != "job one\r\n" || jobs[0].State != store.JobDone || jobs[2].ID != j3.ID || string(jobs[0].Signatures[1]) != "sig2\n" {
		t.Fatalf("jobs after the copy: %+v; want one (done), two, three in order, bytes kept", jobs)
	}
	head, _ := dst.ReceiptHead(ctx, "pve-a")
	next := []wire.Receipt{{Time: time.Now().UTC(), Type: wire.ReceiptEnd, Op: "op2", Source: "reconcile"}}
	wire.Chain(head.Seq, head.Hash, next)
	if h, err := dst.AppendReceipts(ctx, "pve-a", next); err != nil || h.Seq != 4 {
		t.Fatalf("continuing the receipt chain: %+v, %v; want seq 4", h, err)
	}
	if id, err := dst.AppendAudit(ctx, store.AuditEntry{Actor: "alice", Action: "x"}); err != nil || id != 4 {
		t.Fatalf("next audit id: %d, %v; want 4", id, err)
	}
	if evs, err := dst.Events(ctx, 0, 10); err != nil || len(evs) != 2 || evs[0].ID != 3 || evs[1].Detail != "3" {
		t.Fatalf("events after the copy: %+v, %v; want ids 3 and 4", evs, err)
	}
	if id, err := dst.AppendEvent(ctx, store.Event{Type: store.EventHostBlocked}); err != nil || id != 5 {
		t.Fatalf("next event id: %d, %v; want 5", id, err)
	}
	// The outbox carries on: the leased one is claimed once its lease ran
	// out, the retry when due, and ids continue.
	at := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	if got, err := dst.ClaimNotifications(ctx, "hub-2", at.Add(time.Hour), time.Minute, 10); err != nil || len(got) != 2 || got[0].ID != 2 || got[0].Attempts != 2 || got[1].LastError != "502 Bad Gateway" {
		t.Fatalf("claiming after the copy: %+v, %v; want ids 2 and 3, on their second attempt", got, err)
	}
	if id, err := dst.EnqueueNotification(ctx, store.Notification{Sink: "ops", Key: "new", Body: []byte("{}"), CreatedAt: at}, 0); err != nil || id != 4 {
		t.Fatalf("next notification id: %d, %v; want 4", id, err)
	}

	// Into a database that is no longer empty: refused, nothing added.
	_, err = store.Copy(ctx, src, dst)
	if err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("Copy into a used database: %v; want a refusal saying it must be empty", err)
	}
	if hosts, _ := dst.Hosts(ctx); len(hosts) != 4 {
		t.Fatalf("hosts after a refused copy: %d; want 4", len(hosts))
	}
}

// lossy reads back the last desired document altered, as a faulty copy
// would.
type lossy struct{ *Store }

func (l lossy) Export(ctx context.Context) (*store.Dump, error) {
	d, err := l.Store.Export(ctx)
	if err == nil && len(d.Desired) > 0 {
		d.Desired[len(d.Desired)-1].Document = []byte(`{"tampered":true}`)
	}
	return d, err
}

// TestCopyVerifies: a copy that reads back different from its source is
// an error naming the table.
func TestCopyVerifies(t *testing.T) {
	ctx := t.Context()
	src, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	fill(t, src)
	_, err = store.Copy(ctx, src, lossy{open(t, pgtest.NewDatabase(t), Options{})})
	if !errors.Is(err, store.ErrCopyMismatch) || !strings.Contains(err.Error(), "desired") {
		t.Fatalf("Copy with a differing target: %v; want ErrCopyMismatch naming desired", err)
	}
}
