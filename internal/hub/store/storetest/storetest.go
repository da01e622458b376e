// Package storetest is the conformance suite every store.Store
// implementation runs: one set of behaviours the hub depends on, checked
// the same way against SQLite today and PostgreSQL later.
//
// An implementation's test calls Run with a function that opens a fresh,
// empty store for each subtest (and arranges for it to be closed).
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
	"github.com/steward-pve/steward/internal/wire"
)

// Open returns a fresh, empty store for one subtest.
type Open func(t *testing.T) store.Store

// Run runs every conformance test against stores from open.
func Run(t *testing.T, open Open) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Enroll", testEnroll},
		{"JoinTokenExpired", testJoinTokenExpired},
		{"JoinTokenSingleUseUnderRace", testJoinTokenRace},
		{"RevokeHost", testRevokeHost},
		{"Block", testBlock},
		{"Operators", testOperators},
		{"OperatorLastUsed", testOperatorLastUsed},
		{"LastOperatorUnderRace", testLastOperatorRace},
		{"Sessions", testSessions},
		{"InvalidArguments", testInvalid},
		{"DesiredGenerations", testDesired},
		{"DesiredIfMatch", testDesiredIfMatch},
		{"DesiredConcurrentPuts", testDesiredConcurrent},
		{"DesiredConcurrentIfMatch", testDesiredConcurrentIfMatch},
		{"Reports", testReports},
		{"TouchHosts", testTouchHosts},
		{"Jobs", testJobs},
		{"JobSignatures", testJobSignatures},
		{"JobSignaturesUnderRace", testJobSignaturesRace},
		{"Pending", testPending},
		{"PendingSince", testPendingSince},
		{"Receipts", testReceipts},
		{"ReceiptChainErrors", testReceiptChainErrors},
		{"ReceiptBreak", testReceiptBreak},
		{"Audit", testAudit},
		{"FindAudit", testFindAudit},
		{"Events", testEvents},
		{"PruneEvents", testPruneEvents},
		{"UnknownHost", testUnknownHost},
		{"OutboxDelivery", testOutboxDelivery},
		{"OutboxDedup", testOutboxDedup},
		{"OutboxLease", testOutboxLease},
		{"OutboxClaimUnderRace", testOutboxClaimRace},
		{"OutboxPrune", testOutboxPrune},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

// tok returns the hash of a made-up token.
func tok(s string) string { return store.HashToken("token-" + s) }

// enrolled creates host id and enrolls it with the host token "host-"+id.
func enrolled(t *testing.T, s store.Store, id string) {
	t.Helper()
	ctx := t.Context()
	if err := s.CreateJoinToken(ctx, id, tok("join-"+id), time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("CreateJoinToken(%q): %v", id, err)
	}
	if _, err := s.Enroll(ctx, tok("join-"+id), tok("host-"+id)); err != nil {
		t.Fatalf("Enroll(%q): %v", id, err)
	}
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v; want %v", what, err, target)
	}
}

func testEnroll(t *testing.T, s store.Store) {
	ctx := t.Context()
	before := time.Now().Add(-time.Second)
	if err := s.CreateJoinToken(ctx, "pve-a", tok("j1"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	h, err := s.Host(ctx, "pve-a")
	if err != nil {
		t.Fatal(err)
	}
	if !h.EnrolledAt.IsZero() || h.CreatedAt.Before(before) {
		t.Fatalf("invited host: got %+v; want created now, not enrolled", h)
	}
	wantErr(t, "same join token twice", s.CreateJoinToken(ctx, "pve-b", tok("j1"), time.Now().Add(time.Hour)), store.ErrExists)
	_, err = s.HostByToken(ctx, tok("h1"))
	wantErr(t, "HostByToken before enrolling", err, store.ErrNotFound)

	host, err := s.Enroll(ctx, tok("j1"), tok("h1"))
	if err != nil || host != "pve-a" {
		t.Fatalf("Enroll: got %q, %v; want pve-a", host, err)
	}
	h, err = s.HostByToken(ctx, tok("h1"))
	if err != nil || h.ID != "pve-a" || h.EnrolledAt.IsZero() {
		t.Fatalf("HostByToken: got %+v, %v; want pve-a enrolled", h, err)
	}
	_, err = s.Enroll(ctx, tok("j1"), tok("h2"))
	wantErr(t, "second Enroll with the same join token", err, store.ErrNotFound)
	if _, err := s.HostByToken(ctx, tok("h1")); err != nil {
		t.Fatalf("host token after a refused second enroll: %v", err)
	}

	// A second join token re-enrolls the host and replaces its token.
	if err := s.CreateJoinToken(ctx, "pve-a", tok("j2"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enroll(ctx, tok("j2"), tok("h3")); err != nil {
		t.Fatal(err)
	}
	_, err = s.HostByToken(ctx, tok("h1"))
	wantErr(t, "old host token after re-enroll", err, store.ErrNotFound)
	if h, err := s.HostByToken(ctx, tok("h3")); err != nil || h.ID != "pve-a" {
		t.Fatalf("new host token: got %+v, %v", h, err)
	}
	hosts, err := s.Hosts(ctx)
	if err != nil || len(hosts) != 1 || hosts[0].ID != "pve-a" {
		t.Fatalf("Hosts: got %+v, %v; want [pve-a]", hosts, err)
	}
}

func testJoinTokenExpired(t *testing.T, s store.Store) {
	ctx := t.Context()
	if err := s.CreateJoinToken(ctx, "pve-a", tok("old"), time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err := s.Enroll(ctx, tok("old"), tok("h"))
	wantErr(t, "Enroll with an expired join token", err, store.ErrNotFound)
	_, err = s.Enroll(ctx, tok("never-made"), tok("h"))
	wantErr(t, "Enroll with an unknown join token", err, store.ErrNotFound)
	if _, err := s.HostByToken(ctx, tok("h")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused Enroll left a usable host token (err %v)", err)
	}
}

func testJoinTokenRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	if err := s.CreateJoinToken(ctx, "pve-a", tok("j"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, errs[i] = s.Enroll(ctx, tok("j"), tok(fmt.Sprint("h", i))) })
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
			if _, err := s.HostByToken(ctx, tok(fmt.Sprint("h", i))); err != nil {
				t.Errorf("winner's token: %v", err)
			}
		case !errors.Is(err, store.ErrNotFound):
			t.Errorf("Enroll %d: %v; want ErrNotFound for the losers", i, err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent Enrolls with one join token succeeded; want exactly 1", ok, n)
	}
}

func testRevokeHost(t *testing.T, s store.Store) {
	ctx := t.Context()
	enrolled(t, s, "pve-a")
	if err := s.CreateJoinToken(ctx, "pve-a", tok("spare"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeHost(ctx, "pve-a"); err != nil {
		t.Fatal(err)
	}
	_, err := s.HostByToken(ctx, tok("host-pve-a"))
	wantErr(t, "HostByToken after revoke", err, store.ErrNotFound)
	_, err = s.Enroll(ctx, tok("spare"), tok("h2"))
	wantErr(t, "Enroll with a join token made before the revoke", err, store.ErrNotFound)
	h, err := s.Host(ctx, "pve-a")
	if err != nil || h.RevokedAt.IsZero() {
		t.Fatalf("Host after revoke: got %+v, %v; want RevokedAt set", h, err)
	}
	wantErr(t, "RevokeHost of an unknown host", s.RevokeHost(ctx, "nope"), store.ErrNotFound)

	// A new join token after the revoke lets it enroll again.
	if err := s.CreateJoinToken(ctx, "pve-a", tok("again"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enroll(ctx, tok("again"), tok("h3")); err != nil {
		t.Fatal(err)
	}
	if h, err := s.HostByToken(ctx, tok("h3")); err != nil || !h.RevokedAt.IsZero() {
		t.Fatalf("re-enrolled host: got %+v, %v; want it unrevoked", h, err)
	}
}

func testBlock(t *testing.T, s store.Store) {
	ctx := t.Context()
	enrolled(t, s, "pve-a")
	if err := s.SetBlocked(ctx, "pve-a", true, "disk replacement"); err != nil {
		t.Fatal(err)
	}
	h, _ := s.HostByToken(ctx, tok("host-pve-a"))
	if !h.Blocked || h.BlockedReason != "disk replacement" {
		t.Fatalf("after block: got blocked=%v reason=%q; want true, %q", h.Blocked, h.BlockedReason, "disk replacement")
	}
	if err := s.SetBlocked(ctx, "pve-a", false, "ignored"); err != nil {
		t.Fatal(err)
	}
	h, _ = s.Host(ctx, "pve-a")
	if h.Blocked || h.BlockedReason != "" {
		t.Fatalf("after unblock: got blocked=%v reason=%q; want false, empty", h.Blocked, h.BlockedReason)
	}
	wantErr(t, "SetBlocked of an unknown host", s.SetBlocked(ctx, "nope", true, "x"), store.ErrNotFound)
}

func testOperators(t *testing.T, s store.Store) {
	ctx := t.Context()
	if err := s.CreateOperator(ctx, "alice", tok("alice")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateOperator(ctx, "bob", tok("bob")); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "second operator named alice", s.CreateOperator(ctx, "alice", tok("other")), store.ErrExists)
	wantErr(t, "second operator with alice's token", s.CreateOperator(ctx, "carol", tok("alice")), store.ErrExists)
	o, err := s.OperatorByToken(ctx, tok("alice"))
	if err != nil || o.Name != "alice" {
		t.Fatalf("OperatorByToken: got %+v, %v; want alice", o, err)
	}
	if err := s.RevokeOperator(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	_, err = s.OperatorByToken(ctx, tok("alice"))
	wantErr(t, "OperatorByToken after revoke", err, store.ErrNotFound)
	if o, err := s.OperatorByToken(ctx, tok("bob")); err != nil || o.Name != "bob" {
		t.Fatalf("bob after alice's revoke: got %+v, %v", o, err)
	}
	wantErr(t, "revoke unknown operator", s.RevokeOperator(ctx, "zed"), store.ErrNotFound)
	wantErr(t, "reuse a revoked name", s.CreateOperator(ctx, "alice", tok("alice2")), store.ErrExists)
	ops, err := s.Operators(ctx)
	if err != nil || len(ops) != 2 || ops[0].Name != "alice" || ops[0].RevokedAt.IsZero() || ops[1].Name != "bob" || !ops[1].RevokedAt.IsZero() {
		t.Fatalf("Operators: got %+v, %v; want alice (revoked), bob", ops, err)
	}
	if err := s.RevokeOperator(ctx, "alice"); err != nil {
		t.Fatalf("revoking a revoked token again: %v; want no error", err)
	}
	// bob is the last valid token: revoking it would lock everyone out.
	wantErr(t, "revoke the last valid token", s.RevokeOperator(ctx, "bob"), store.ErrLastOperator)
	if _, err := s.OperatorByToken(ctx, tok("bob")); err != nil {
		t.Fatalf("bob after a refused revoke: %v; want still valid", err)
	}
	// A host token is not an operator token.
	enrolled(t, s, "pve-a")
	_, err = s.OperatorByToken(ctx, tok("host-pve-a"))
	wantErr(t, "OperatorByToken with a host token", err, store.ErrNotFound)
}

func testOperatorLastUsed(t *testing.T, s store.Store) {
	ctx := t.Context()
	if err := s.CreateOperator(ctx, "alice", tok("alice")); err != nil {
		t.Fatal(err)
	}
	if o, _ := s.OperatorByToken(ctx, tok("alice")); !o.LastUsed.IsZero() {
		t.Fatalf("a new token's LastUsed: got %v; want zero", o.LastUsed)
	}
	at := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	if err := s.TouchOperator(ctx, "alice", at); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchOperator(ctx, "alice", at.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	ops, err := s.Operators(ctx)
	if err != nil || len(ops) != 1 || !ops[0].LastUsed.Equal(at) {
		t.Fatalf("Operators after touches at T and T-1h: got %+v, %v; want LastUsed %v (an earlier touch changes nothing)", ops, err, at)
	}
	if o, _ := s.OperatorByToken(ctx, tok("alice")); !o.LastUsed.Equal(at) {
		t.Fatalf("OperatorByToken LastUsed: got %v; want %v", o.LastUsed, at)
	}
	wantErr(t, "TouchOperator of an unknown name", s.TouchOperator(ctx, "zed", at), store.ErrNotFound)
}

func testLastOperatorRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, n := range []string{"alice", "bob"} {
		if err := s.CreateOperator(ctx, n, tok(n)); err != nil {
			t.Fatal(err)
		}
	}
	// Each revokes the other at once: exactly one may succeed.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, n := range []string{"alice", "bob"} {
		wg.Go(func() { errs[i] = s.RevokeOperator(ctx, n) })
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrLastOperator):
			t.Errorf("revoke %d: %v; want nil or ErrLastOperator", i, err)
		}
	}
	ops, _ := s.Operators(ctx)
	valid := 0
	for _, o := range ops {
		if o.RevokedAt.IsZero() {
			valid++
		}
	}
	if ok != 1 || valid != 1 {
		t.Fatalf("concurrent revokes of the last two tokens: %d succeeded, %d valid left; want 1 and 1", ok, valid)
	}
}

func testSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, n := range []string{"alice", "bob"} {
		if err := s.CreateOperator(ctx, n, tok(n)); err != nil {
			t.Fatalf("CreateOperator %s: %v", n, err)
		}
	}
	now := time.Now()
	exp := now.Add(time.Hour).Truncate(time.Microsecond)
	if err := s.CreateSession(ctx, tok("s1"), "alice", exp); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	if err := s.CreateSession(ctx, tok("s2"), "alice", exp); err != nil {
		t.Fatalf("CreateSession (a second of alice): %v", err)
	}
	if err := s.CreateSession(ctx, tok("s3"), "bob", now.Add(time.Minute)); err != nil {
		t.Fatalf("CreateSession (bob): %v", err)
	}
	wantErr(t, "CreateSession with a taken hash", s.CreateSession(ctx, tok("s1"), "bob", exp), store.ErrExists)
	wantErr(t, "CreateSession of an unknown operator", s.CreateSession(ctx, tok("s4"), "zed", exp), store.ErrNotFound)
	wantErr(t, "CreateSession with a bad hash", s.CreateSession(ctx, "plain", "alice", exp), store.ErrInvalid)

	x, err := s.SessionByToken(ctx, tok("s1"), now)
	if err != nil || x.Operator != "alice" || !x.ExpiresAt.Equal(exp) {
		t.Fatalf("SessionByToken: got %+v, %v; want alice until %v", x, err, exp)
	}
	_, err = s.SessionByToken(ctx, tok("s3"), now.Add(time.Minute))
	wantErr(t, "SessionByToken at its expiry", err, store.ErrNotFound)
	_, err = s.SessionByToken(ctx, tok("nope"), now)
	wantErr(t, "SessionByToken of an unknown hash", err, store.ErrNotFound)

	// Logout ends one session; the other goes on.
	if err := s.DeleteSession(ctx, tok("s1")); err != nil {
		t.Fatalf("DeleteSession: %v", err)
	}
	if err := s.DeleteSession(ctx, tok("s1")); err != nil {
		t.Fatalf("DeleteSession again: %v; want no error", err)
	}
	_, err = s.SessionByToken(ctx, tok("s1"), now)
	wantErr(t, "SessionByToken after DeleteSession", err, store.ErrNotFound)
	if _, err := s.SessionByToken(ctx, tok("s2"), now); err != nil {
		t.Fatalf("SessionByToken of the other session: %v", err)
	}

	// Revoking the token ends its sessions at once; a new one is refused.
	if err := s.RevokeOperator(ctx, "alice"); err != nil {
		t.Fatalf("RevokeOperator: %v", err)
	}
	_, err = s.SessionByToken(ctx, tok("s2"), now)
	wantErr(t, "SessionByToken after its operator was revoked", err, store.ErrNotFound)
	wantErr(t, "CreateSession of a revoked operator", s.CreateSession(ctx, tok("s5"), "alice", exp), store.ErrNotFound)
	if _, err := s.SessionByToken(ctx, tok("s3"), now); err != nil {
		t.Fatalf("SessionByToken of bob's session: %v", err)
	}

	// Pruning deletes the sessions expired before the cut-off only.
	n, err := s.PruneSessions(ctx, now.Add(2*time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("PruneSessions: got %d, %v; want 1 (bob's, expired)", n, err)
	}
	if n, err := s.PruneSessions(ctx, now.Add(2*time.Minute)); err != nil || n != 0 {
		t.Fatalf("PruneSessions again: got %d, %v; want 0", n, err)
	}
}

func testInvalid(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, id := range []string{"", "a/b", "a b", "../x", string(make([]byte, store.MaxHostIDLen+1))} {
		wantErr(t, fmt.Sprintf("CreateJoinToken(%q)", id), s.CreateJoinToken(ctx, id, tok("x"), time.Now().Add(time.Hour)), store.ErrInvalid)
	}
	wantErr(t, "join token hash not a hash", s.CreateJoinToken(ctx, "pve-a", "plaintext-token", time.Now().Add(time.Hour)), store.ErrInvalid)
	wantErr(t, "operator token hash not a hash", s.CreateOperator(ctx, "alice", "plaintext-token"), store.ErrInvalid)
	if hosts, err := s.Hosts(ctx); err != nil || len(hosts) != 0 {
		t.Fatalf("refused calls created hosts: %+v, %v", hosts, err)
	}
}

func testDesired(t *testing.T, s store.Store) {
	ctx := t.Context()
	enrolled(t, s, "pve-a")
	d, err := s.Desired(ctx, "pve-a")
	if err != nil || d.Generation != 0 || d.Document != nil {
		t.Fatalf("Desired before any PUT: got %+v, %v; want generation 0, no document", d, err)
	}
	docs := [][]byte{[]byte(`{"a":1}`), []byte(`{"a":2}`), []byte(`{"a":3}`)}
	for i, doc := range docs {
		gen, err := s.PutDesired(ctx, "pve-a", doc, store.AnyGeneration, "alice")
		if err != nil || gen != int64(i+1) {
			t.Fatalf("PutDesired #%d: got %d, %v; want %d", i+1, gen, err, i+1)
		}
	}
	d, err = s.Desired(ctx, "pve-a")
	if err != nil || d.Generation != 3 || !bytes.Equal(d.Document, docs[2]) || d.Author != "alice" || d.CreatedAt.IsZero() {
		t.Fatalf("Desired: got %+v, %v; want generation 3 %s by alice", d, err, docs[2])
	}
	if h, _ := s.Host(ctx, "pve-a"); h.DesiredGeneration != 3 {
		t.Fatalf("Host.DesiredGeneration: got %d; want 3", h.DesiredGeneration)
	}
	hist, err := s.DesiredHistory(ctx, "pve-a", 2)
	if err != nil || len(hist) != 2 || hist[0].Generation != 3 || hist[1].Generation != 2 || !bytes.Equal(hist[1].Document, docs[1]) {
		t.Fatalf("DesiredHistory(2): got %+v, %v; want generations 3, 2", hist, err)
	}
	// Another host's generations are its own.
	enrolled(t, s, "pve-b")
	if gen, err := s.PutDesired(ctx, "pve-b", docs[0], store.AnyGeneration, "bob"); err != nil || gen != 1 {
		t.Fatalf("first PUT on pve-b: got %d, %v; want 1", gen, err)
	}
}

func testDesiredIfMatch(t *testing.T, s store.Store) {
	ctx := t.Context()
	enrolled(t, s, "pve-a")
	_, err := s.PutDesired(ctx, "pve-a", []byte(`{}`), 1, "alice")
	wantErr(t, "If-Match 1 on a host with none", err, store.ErrConflict)
	if gen, err := s.PutDesired(ctx, "pve-a", []byte(`{"v":1}`), 0, "alice"); err != nil || gen != 1 {
		t.Fatalf("If-Match 0 on a host with none: got %d, %v; want 1", gen, err)
	}
	_, err = s.PutDesired(ctx, "pve-a", []byte(`{"v":"stale"}`), 0, "bob")
	wantErr(t, "stale If-Match 0", err, store.ErrConflict)
	if gen, err := s.PutDesired(ctx, "pve-a", []byte(`{"v":2}`), 1, "alice"); err != nil || gen != 2 {
		t.Fatalf("If-Match 1: got %d, %v; want 2", gen, err)
	}
	d, _ := s.Desired(ctx, "pve-a")
	if string(d.Document) != `{"v":2}` {
		t.Fatalf("after a refused stale PUT: got %s; want {\"v\":2}", d.Document)
	}
	_, err = s.PutDesired(ctx, "pve-a", []byte(`{}`), -2, "alice")
	wantErr(t, "If-Match -2", err, store.ErrInvalid)
}

func testDesiredConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	enrolled(t, s, "pve-a")
	const n = 16
	gens := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			gens[i], errs[i] = s.PutDesired(ctx, "pve-a", fmt.Appendf(nil, `{"i":%d}`, i), store.AnyGeneration, "alice")
		})
	}
	wg.Wait()
	seen := map[int64]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("PutDesired %d: %v", i, errs[i])
		}
		if j, dup := seen[gens[i]]; dup {
			t.Fatalf("PUTs %d and %d both got generation %d", j, i, gens[i])
		}
		seen[gens[i]] = i
	}
	for g := int64(1); g <= n; g++ {
		if _, ok := seen[g]; !ok {
			t.Fatalf("generations %v skip %d; want exactly 1..%d", seen, g, n)
		}
	}
	d, _ := s.Desired(ctx, "pve-a")
	if want := fmt.Sprintf(`{"i":%d}`, seen[n]); d.Generation != n || string(d.Document) != want {
		t.Fatalf("Desired: got generation %d %s; want %d %s (the PUT that got %d)", d.Generation, d.Document, n, want, n)
	}
	hist, _ := s.DesiredHistory(ctx, "pve-a", 100)
	if len(hist) != n {
		t.Fatalf("history: got %d generations; want %d", len(hist), n)
	}
}

func testDesiredConcurrentIfMatch(t *testing.T, s store.Store) {
	ctx := t.Context()
	enrolled(t, s, "pve-a")
	if _, err := s.PutDesired(ctx, "pve-a", []byte(`{}`), store.AnyGeneration, "alice"); err != nil {
		t.Fatal(err)
	}
	const n = 12
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.PutDesired(ctx, "pve-a", fmt.Appendf(nil, `{"i":%d}`, i), 1, "alice")
		})
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("PUT %d: %v; want nil or ErrConflict", i, err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent PUTs with If-Match 1 succeeded; want exactly 1", ok, n)
	}
	if d, _ := s.Desired(ctx, "pve-a"); d.Generation != 2 {
		t.Fatalf("generation: got %d; want 2", d.Generation)
	}
}

func testReports(t *testing.T, s store.Store) {
	ctx := t.Context()
	enrolled(t, s, "pve-a")
	_, err := s.LastReport(ctx, "pve-a")
	wantErr(t, "LastReport before any", err, store.ErrNotFound)
	if match, err := s.Heartbeat(ctx, "pve-a", "h0"); err != nil || match {
		t.Fatalf("Heartbeat before any report: got %v, %v; want false (send the full report)", match, err)
	}
	h, _ := s.Host(ctx, "pve-a")
	if h.LastSeen.IsZero() {
		t.Fatal("a heartbeat did not mark the host seen")
	}
	body := []byte(`{"host":"pve-a","guests":[]}`)
	if err := s.PutReport(ctx, "pve-a", body, "h1"); err != nil {
		t.Fatal(err)
	}
	r, err := s.LastReport(ctx, "pve-a")
	if err != nil || !bytes.Equal(r.Body, body) || r.Hash != "h1" || r.ReceivedAt.IsZero() {
		t.Fatalf("LastReport: got %+v, %v; want the body and hash h1", r, err)
	}
	if match, err := s.Heartbeat(ctx, "pve-a", "h1"); err != nil || !match {
		t.Fatalf("Heartbeat with the stored hash: got %v, %v; want true", match, err)
	}
	if match, _ := s.Heartbeat(ctx, "pve-a", "h2"); match {
		t.Fatal("Heartbeat with another hash matched")
	}
	if err := s.PutReport(ctx, "pve-a", []byte(`{"v":2}`), "h2"); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.Host(ctx, "pve-a"); h.ReportHash != "h2" {
		t.Fatalf("Host.ReportHash: got %q; want h2", h.ReportHash)
	}
}

func testTouchHosts(t *testing.T, s store.Store) {
	ctx := t.Context()
	enrolled(t, s, "pve-a")
	enrolled(t, s, "pve-b")
	t1 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	if err := s.TouchHosts(ctx, map[string]time.Time{"pve-a": t1, "pve-b": t1.Add(time.Second), "ghost": t1}); err != nil {
		t.Fatalf("TouchHosts with an unknown host among them: %v; want it skipped", err)
	}
	if err := s.TouchHosts(ctx, map[string]time.Time{"pve-a": t1.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchHosts(ctx, nil); err != nil {
		t.Fatalf("TouchHosts(nil): %v", err)
	}
	a, _ := s.Host(ctx, "pve-a")
	b, _ := s.Host(ctx, "pve-b")
	if !a.LastSeen.Equal(t1) || !b.LastSeen.Equal(t1.Add(time.Second)) {
		t.Fatalf("LastSeen: got %v, %v; want %v, %v (an earlier time changes nothing)", a.LastSeen, b.LastSeen, t1, t1.Add(time.Second))
	}
	if hosts, _ := s.Hosts(ctx); len(hosts) != 2 {
		t.Fatalf("TouchHosts created hosts: %+v", hosts)
	}
}

func testJobs(t *testing.T, s store.Store) {
	ctx := t.Context()
	enrolled(t, s, "pve-a")
	enrolled(t, s, "pve-b")
	// Payload bytes that a re-encoding would change: trailing space, CRLF.
	p1 := []byte("steward-signed-job v1\r\nop: destroy \n")
	p2 := []byte("second job\n")
	sig1 := []byte("-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n")
	sig2 := []byte("second\r\n")
	j1, err := s.PutJob(ctx, "pve-a", p1, [][]byte{sig1, sig2}, "alice")
	if err != nil || j1.ID != wire.JobID(p1) || j1.State != store.JobWaiting {
		t.Fatalf("PutJob: got %+v, %v; want id %s waiting", j1, err, wire.JobID(p1))
	}
	if _, err := s.PutJob(ctx, "pve-a", p2, nil, "alice"); err != nil {
		t.Fatal(err)
	}
	_, err = s.PutJob(ctx, "pve-a", p1, nil, "bob")
	wantErr(t, "same job twice", err, store.ErrExists)
	_, err = s.PutJob(ctx, "pve-a", nil, nil, "bob")
	wantErr(t, "empty job", err, store.ErrInvalid)
	got, err := s.Job(ctx, "pve-a", j1.ID)
	if err != nil || !bytes.Equal(got.Payload, p1) || got.Uploader != "alice" || len(got.Signatures) != 2 ||
		!bytes.Equal(got.Signatures[0], sig1) || !bytes.Equal(got.Signatures[1], sig2) {
		t.Fatalf("Job: got %+v, %v; want payload and signatures byte for byte", got, err)
	}
	_, err = s.Job(ctx, "pve-b", j1.ID)
	wantErr(t, "host B reading host A's job", err, store.ErrNotFound)
	if jobs, _ := s.Jobs(ctx, "pve-b", ""); len(jobs) != 0 {
		t.Fatalf("host B's jobs: got %d; want 0", len(jobs))
	}
	wantErr(t, "host B reporting on host A's job", s.SetJobResult(ctx, "pve-b", wire.JobResult{Job: j1.ID, State: wire.JobDone}), store.ErrNotFound)

	if h, _ := s.HostByToken(ctx, tok("host-pve-a")); !h.JobsWaiting {
		t.Fatal("HostByToken: JobsWaiting false with two jobs waiting")
	}
	if h, _ := s.Host(ctx, "pve-b"); h.JobsWaiting {
		t.Fatal("Host(pve-b): JobsWaiting true with none of its own")
	}
	jobs, err := s.Jobs(ctx, "pve-a", store.JobWaiting)
	if err != nil || len(jobs) != 2 || jobs[0].ID != j1.ID || jobs[1].ID != wire.JobID(p2) {
		t.Fatalf("waiting jobs: got %+v, %v; want j1, j2 in upload order", jobs, err)
	}
	held := wire.JobResult{Job: j1.ID, State: wire.JobHeld, Reason: "guest locked"}
	if err := s.SetJobResult(ctx, "pve-a", held); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Job(ctx, "pve-a", j1.ID)
	if got.State != store.JobWaiting || got.Result == nil || got.Result.Reason != "guest locked" {
		t.Fatalf("after held: got state %q result %+v; want waiting with the held reason", got.State, got.Result)
	}
	rej := wire.JobResult{Job: j1.ID, State: wire.JobRejected, Code: "expired", Reason: "signature expired"}
	if err := s.SetJobResult(ctx, "pve-a", rej); err != nil {
		t.Fatal(err)
	}
	if err := s.SetJobResult(ctx, "pve-a", rej); err != nil {
		t.Fatalf("the same final result again (a retry): %v", err)
	}
	wantErr(t, "done after rejected", s.SetJobResult(ctx, "pve-a", wire.JobResult{Job: j1.ID, State: wire.JobDone}), store.ErrConflict)
	got, _ = s.Job(ctx, "pve-a", j1.ID)
	if got.State != store.JobRejected || got.Result.Code != "expired" || !bytes.Equal(got.Payload, p1) {
		t.Fatalf("after rejected: got %+v; want rejected, code expired, payload unchanged", got)
	}
	if jobs, _ := s.Jobs(ctx, "pve-a", store.JobWaiting); len(jobs) != 1 || jobs[0].ID != wire.JobID(p2) {
		t.Fatalf("waiting after one rejected: got %+v; want only j2", jobs)
	}
	if jobs, _ := s.Jobs(ctx, "pve-a", ""); len(jobs) != 2 {
		t.Fatalf("all jobs: got %d; want 2", len(jobs))
	}
	wantErr(t, "unknown job", s.SetJobResult(ctx, "pve-a", wire.JobResult{Job: wire.JobID([]byte("x")), State: wire.JobDone}), store.ErrNotFound)
	if err := s.SetJobResult(ctx, "pve-a", wire.JobResult{Job: wire.JobID(p2), State: wire.JobDone}); err != nil {
		t.Fatal(err)
	}
	if hosts, _ := s.Hosts(ctx); len(hosts) != 2 || hosts[0].JobsWaiting {
		t.Fatalf("Hosts after every job finished: got %+v; want pve-a with no job waiting", hosts)
	}
}

// sig signs payload with k as an operator would (SSHSIG, steward's
// namespace).
func sig(t *testing.T, k *signedoptest.Key, payload []byte) []byte {
	t.Helper()
	b, err := signedop.Sign(payload, k.Signer)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testJobSignatures: the four-eyes flow's store half. A second signer's
// signature joins the waiting job with the same payload bytes; a key
// that signed already (byte-identical or, for ECDSA, a fresh signature
// by the same key) adds nothing and is no error; a finished job, another
// host's job, a full job and empty arguments are refused and change
// nothing.
func testJobSignatures(t *testing.T, s store.Store) {
	ctx := t.Context()
	enrolled(t, s, "pve-a")
	enrolled(t, s, "pve-b")
	p := []byte("steward-signed-job v1\r\nop: destroy \n") // bytes a re-encoding would change
	alice := signedoptest.NewKey(t, signedoptest.Ed25519)
	bob := signedoptest.NewKeyN(t, signedoptest.Ed25519, 1)
	carol := signedoptest.NewKey(t, signedoptest.ECDSAP256)
	sa, sb := sig(t, alice, p), sig(t, bob, p)
	c1, c2 := sig(t, carol, p), sig(t, carol, p)
	if bytes.Equal(c1, c2) {
		t.Fatal("two ECDSA signatures by one key are byte-identical; the same-key case needs them to differ")
	}
	j, err := s.PutJob(ctx, "pve-a", p, [][]byte{sa}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	wantSigs := func(what string, want ...[]byte) store.Job {
		t.Helper()
		got, err := s.Job(ctx, "pve-a", j.ID)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !bytes.Equal(got.Payload, p) || got.Uploader != "alice" || got.State != store.JobWaiting {
			t.Fatalf("%s: got %+v; want alice's waiting job, payload byte for byte", what, got)
		}
		if len(got.Signatures) != len(want) {
			t.Fatalf("%s: %d signatures; want %d", what, len(got.Signatures), len(want))
		}
		for i := range want {
			if !bytes.Equal(got.Signatures[i], want[i]) {
				t.Fatalf("%s: signature %d differs from the one uploaded", what, i+1)
			}
		}
		return got
	}

	got, n, err := s.AddJobSignatures(ctx, "pve-a", p, [][]byte{sb})
	if err != nil || n != 1 || len(got.Signatures) != 2 || !bytes.Equal(got.Signatures[1], sb) || got.ID != j.ID || !bytes.Equal(got.Payload, p) {
		t.Fatalf("AddJobSignatures(bob): got %+v, %d, %v; want bob's signature added after alice's", got, n, err)
	}
	wantSigs("after bob", sa, sb)
	if got, n, err := s.AddJobSignatures(ctx, "pve-a", p, [][]byte{sa, sb}); err != nil || n != 0 || len(got.Signatures) != 2 {
		t.Fatalf("the same signatures again: got %d added, %v; want none added and no error (idempotent)", n, err)
	}
	if _, n, err := s.AddJobSignatures(ctx, "pve-a", p, [][]byte{c1, c2}); err != nil || n != 1 {
		t.Fatalf("two signatures by carol's one key: got %d added, %v; want 1", n, err)
	}
	if _, n, err := s.AddJobSignatures(ctx, "pve-a", p, [][]byte{c2}); err != nil || n != 0 {
		t.Fatalf("carol's key again, other bytes: got %d added, %v; want 0", n, err)
	}
	junk := []byte("not a signature\n")
	if _, n, err := s.AddJobSignatures(ctx, "pve-a", p, [][]byte{junk, junk}); err != nil || n != 1 {
		t.Fatalf("an unparsable signature twice: got %d added, %v; want 1 (the store checks no signature; same bytes count once)", n, err)
	}
	wantSigs("after carol and junk", sa, sb, c1, junk)

	_, _, err = s.AddJobSignatures(ctx, "pve-b", p, [][]byte{sb})
	wantErr(t, "adding to host A's job through host B", err, store.ErrNotFound)
	_, _, err = s.AddJobSignatures(ctx, "pve-a", append(bytes.Clone(p), ' '), [][]byte{sb})
	wantErr(t, "a payload one byte longer", err, store.ErrNotFound)
	_, _, err = s.AddJobSignatures(ctx, "nope", p, [][]byte{sb})
	wantErr(t, "unknown host", err, store.ErrNotFound)
	_, _, err = s.AddJobSignatures(ctx, "pve-a", nil, [][]byte{sb})
	wantErr(t, "empty payload", err, store.ErrInvalid)
	_, _, err = s.AddJobSignatures(ctx, "pve-a", p, nil)
	wantErr(t, "no signature", err, store.ErrInvalid)
	_, _, err = s.AddJobSignatures(ctx, "pve-a", p, [][]byte{{}})
	wantErr(t, "an empty signature", err, store.ErrInvalid)

	// Room for MaxJobSignatures: one call that would pass it adds nothing.
	var many [][]byte
	for i := range store.MaxJobSignatures - 3 {
		many = append(many, sig(t, signedoptest.NewKeyN(t, signedoptest.Ed25519, 10+i), p))
	}
	_, _, err = s.AddJobSignatures(ctx, "pve-a", p, many)
	wantErr(t, "more than MaxJobSignatures", err, store.ErrInvalid)
	wantSigs("after a refused overflow", sa, sb, c1, junk)
	if _, n, err := s.AddJobSignatures(ctx, "pve-a", p, many[:store.MaxJobSignatures-8]); err != nil || n != store.MaxJobSignatures-8 {
		t.Fatalf("adding many: got %d added, %v; want %d", n, err, store.MaxJobSignatures-8)
	}

	// A held result leaves it open; a final one closes it.
	if err := s.SetJobResult(ctx, "pve-a", wire.JobResult{Job: j.ID, State: wire.JobHeld, Code: "insufficient_signers", Reason: "waiting for 1 more signer(s)"}); err != nil {
		t.Fatal(err)
	}
	if got, n, err := s.AddJobSignatures(ctx, "pve-a", p, [][]byte{sb}); err != nil || n != 0 || got.Result == nil || got.Result.Code != "insufficient_signers" {
		t.Fatalf("adding a known key to a held job: got %+v, %d, %v; want it open, its held result kept", got.Result, n, err)
	}
	dave := sig(t, signedoptest.NewKeyN(t, signedoptest.Ed25519, 99), p)
	if got, n, err := s.AddJobSignatures(ctx, "pve-a", p, [][]byte{dave}); err != nil || n != 1 || got.Result != nil {
		t.Fatalf("adding a new key to a held job: got result %+v, %d, %v; want it added and the agent's verdict on fewer signatures cleared", got.Result, n, err)
	}
	if got, _ := s.Job(ctx, "pve-a", j.ID); got.Result != nil || got.State != store.JobWaiting || len(got.Signatures) != store.MaxJobSignatures-3 {
		t.Fatalf("stored after the add: result %+v, state %s, %d signatures; want no result, waiting, %d", got.Result, got.State, len(got.Signatures), store.MaxJobSignatures-3)
	}
	if err := s.SetJobResult(ctx, "pve-a", wire.JobResult{Job: j.ID, State: wire.JobDone}); err != nil {
		t.Fatal(err)
	}
	p2 := []byte("second job\n")
	if _, err := s.PutJob(ctx, "pve-a", p2, [][]byte{sig(t, alice, p2)}, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetJobResult(ctx, "pve-a", wire.JobResult{Job: wire.JobID(p2), State: wire.JobRejected, Code: "unknown_signer", Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	for _, pl := range [][]byte{p, p2} {
		before, _ := s.Job(ctx, "pve-a", wire.JobID(pl))
		_, _, err = s.AddJobSignatures(ctx, "pve-a", pl, [][]byte{sig(t, bob, pl)})
		wantErr(t, "adding to a "+before.State+" job", err, store.ErrConflict)
		after, _ := s.Job(ctx, "pve-a", wire.JobID(pl))
		if len(after.Signatures) != len(before.Signatures) || after.State != before.State {
			t.Fatalf("a refused add to a %s job changed it: %d -> %d signatures, state %s", before.State, len(before.Signatures), len(after.Signatures), after.State)
		}
	}
}

// testJobSignaturesRace: concurrent adds (several hub replicas, two
// operators at once) lose no signature and never store one key twice.
func testJobSignaturesRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	enrolled(t, s, "pve-a")
	p := []byte("race payload\n")
	if _, err := s.PutJob(ctx, "pve-a", p, nil, "alice"); err != nil {
		t.Fatal(err)
	}
	const n = 6
	keys := make([]*signedoptest.Key, n)
	for i := range keys {
		keys[i] = signedoptest.NewKeyN(t, signedoptest.Ed25519, i)
	}
	same := signedoptest.NewKey(t, signedoptest.ECDSAP256) // every goroutine signs anew with it too
	sigs := make([][][]byte, n)
	for i := range sigs {
		sigs[i] = [][]byte{sig(t, keys[i], p), sig(t, same, p)}
	}
	var wg sync.WaitGroup
	added := make([]int, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, added[i], errs[i] = s.AddJobSignatures(ctx, "pve-a", p, sigs[i])
		}()
	}
	wg.Wait()
	total := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("add %d: %v", i, errs[i])
		}
		total += added[i]
	}
	j, err := s.Job(ctx, "pve-a", wire.JobID(p))
	if err != nil {
		t.Fatal(err)
	}
	if total != n+1 || len(j.Signatures) != n+1 {
		t.Fatalf("after %d concurrent adds: %d reported added, %d stored; want %d (each key once, the shared key once)", n, total, len(j.Signatures), n+1)
	}
	seen := map[string]bool{}
	for _, sg := range j.Signatures {
		k := store.SignerKey(sg)
		if seen[k] {
			t.Fatalf("key %s stored twice", k)
		}
		seen[k] = true
	}
	for i := range n {
		if !seen[keys[i].Fingerprint()] {
			t.Fatalf("key %d's signature was lost", i)
		}
	}
}

func testPending(t *testing.T, s store.Store) {
	ctx := t.Context()
	enrolled(t, s, "pve-a")
	if p, err := s.Pending(ctx, "pve-a"); err != nil || len(p) != 0 {
		t.Fatalf("Pending before any: got %+v, %v; want none", p, err)
	}
	ps := []wire.Pending{
		{Action: wire.Action{Op: "destroy", VMID: 101, Kind: "lxc"}, Reason: "destroys a guest", Payload: []byte("p1\n")},
		{Action: wire.Action{Op: "config", VMID: 102, Kind: "qemu"}, Reason: "shrinks a disk", Destroys: []string{"scsi0"}, Payload: []byte("p2\n")},
	}
	if err := s.SetPending(ctx, "pve-a", ps); err != nil {
		t.Fatal(err)
	}
	got, err := s.Pending(ctx, "pve-a")
	if err != nil || len(got) != 2 || got[0].Action.VMID != 101 || !bytes.Equal(got[1].Payload, []byte("p2\n")) || got[1].Destroys[0] != "scsi0" {
		t.Fatalf("Pending: got %+v, %v; want both, in order, payload byte for byte", got, err)
	}
	if err := s.SetPending(ctx, "pve-a", ps[1:]); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Pending(ctx, "pve-a"); len(got) != 1 || got[0].Action.VMID != 102 {
		t.Fatalf("Pending after replace: got %+v; want only 102", got)
	}
	enrolled(t, s, "pve-b")
	if err := s.SetPending(ctx, "pve-b", ps); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PendingCount(ctx); err != nil || n != 3 {
		t.Fatalf("PendingCount: got %d, %v; want 3 (1 on pve-a, 2 on pve-b)", n, err)
	}
}

// testPendingSince: a pending action keeps the time it was first
// reported across SetPending calls that still carry it (whatever else
// changes), a new one takes the store's clock, and WaitingPending lists
// those first reported at or before a time, of enrolled, unrevoked hosts.
func testPendingSince(t *testing.T, s store.Store) {
	ctx := t.Context()
	enrolled(t, s, "pve-a")
	enrolled(t, s, "pve-b")
	enrolled(t, s, "pve-c")
	p1 := wire.Pending{Action: wire.Action{Op: "destroy", VMID: 101, Kind: "lxc"}, Reason: "destroys a guest", Payload: []byte("p1\n")}
	p2 := wire.Pending{Action: wire.Action{Op: "config", VMID: 102, Kind: "qemu"}, Reason: "shrinks a disk", Payload: []byte("p2\n")}
	p3 := wire.Pending{Action: wire.Action{Op: "rollback", VMID: 103, Kind: "qemu"}, Reason: "rolls back"} // no payload
	since := func(before time.Time) map[string]time.Time {
		t.Helper()
		ws, err := s.WaitingPending(ctx, before)
		if err != nil {
			t.Fatalf("WaitingPending: %v", err)
		}
		out := map[string]time.Time{}
		for _, w := range ws {
			out[fmt.Sprintf("%s/%d", w.Host, w.Pending.Action.VMID)] = w.Since
		}
		return out
	}
	t0 := time.Now()
	if err := s.SetPending(ctx, "pve-a", []wire.Pending{p1, p3}); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	if err := s.SetPending(ctx, "pve-c", []wire.Pending{p1}); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeHost(ctx, "pve-c"); err != nil {
		t.Fatal(err)
	}
	got := since(t1)
	a1, a3 := got["pve-a/101"], got["pve-a/103"]
	if len(got) != 2 || a1.Before(t0) || a1.After(t1) || !a3.Equal(a1) {
		t.Fatalf("WaitingPending(after the first report): %v; want pve-a's 101 and 103 stamped between %v and %v (not the revoked pve-c)", got, t0, t1)
	}
	if got := since(t0.Add(-time.Second)); len(got) != 0 {
		t.Fatalf("WaitingPending(before any report): %v; want none", got)
	}
	// The next report: 101 again (its reason reworded), 102 new, in
	// another order; 103 again without payload, the same action.
	p1b := p1
	p1b.Reason = "destroys guest 101"
	t2 := time.Now()
	if err := s.SetPending(ctx, "pve-a", []wire.Pending{p2, p3, p1b}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPending(ctx, "pve-b", []wire.Pending{p1}); err != nil {
		t.Fatal(err)
	}
	t3 := time.Now()
	got = since(t3)
	if !got["pve-a/101"].Equal(a1) || !got["pve-a/103"].Equal(a3) {
		t.Fatalf("after the next report: %v; want 101 and 103 still since %v", got, a1)
	}
	if b := got["pve-a/102"]; b.Before(t2) || b.After(t3) {
		t.Fatalf("after the next report: 102 since %v; want between %v and %v", b, t2, t3)
	}
	if b := got["pve-b/101"]; b.Before(t2) || b.After(t3) {
		t.Fatalf("pve-b's 101 since %v; want its own clock, between %v and %v", b, t2, t3)
	}
	if got := since(t1); len(got) != 2 {
		t.Fatalf("WaitingPending(t1) after the next report: %v; want only pve-a's 101 and 103", got)
	}
	if ps, _ := s.Pending(ctx, "pve-a"); len(ps) != 3 || ps[2].Reason != p1b.Reason {
		t.Fatalf("Pending: %+v; want the new report's set as given", ps)
	}
	// Gone from a report, then back: a new wait.
	if err := s.SetPending(ctx, "pve-a", []wire.Pending{p2}); err != nil {
		t.Fatal(err)
	}
	t4 := time.Now()
	if err := s.SetPending(ctx, "pve-a", []wire.Pending{p2, p1}); err != nil {
		t.Fatal(err)
	}
	if got := since(time.Now()); got["pve-a/101"].Before(t4) {
		t.Fatalf("101 back after leaving: since %v; want a new wait from %v", got["pve-a/101"], t4)
	}
}

// receipts returns n chained receipts continuing (seq, prev).
func receipts(seq uint64, prev string, n int) []wire.Receipt {
	rs := make([]wire.Receipt, n)
	for i := range rs {
		rs[i] = wire.Receipt{Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC), Type: wire.ReceiptBegin, Op: fmt.Sprint("op", seq+uint64(i)+1), Source: "reconcile"}
	}
	wire.Chain(seq, prev, rs)
	return rs
}

func testReceipts(t *testing.T, s store.Store) {
	ctx := t.Context()
	enrolled(t, s, "pve-a")
	if h, err := s.ReceiptHead(ctx, "pve-a"); err != nil || h.Seq != 0 || h.Hash != wire.ZeroHash {
		t.Fatalf("ReceiptHead of a new host: got %+v, %v; want 0, ZeroHash", h, err)
	}
	first := receipts(0, wire.ZeroHash, 3)
	h, err := s.AppendReceipts(ctx, "pve-a", first)
	if err != nil || h.Seq != 3 || h.Hash != first[2].Hash {
		t.Fatalf("AppendReceipts: got %+v, %v; want seq 3", h, err)
	}
	// A retried batch that overlaps what is stored is accepted.
	second := receipts(3, first[2].Hash, 2)
	h, err = s.AppendReceipts(ctx, "pve-a", append(first[1:], second...))
	if err != nil || h.Seq != 5 || h.Hash != second[1].Hash {
		t.Fatalf("overlapping batch: got %+v, %v; want seq 5", h, err)
	}
	if h, err := s.AppendReceipts(ctx, "pve-a", second); err != nil || h.Seq != 5 {
		t.Fatalf("a batch entirely stored: got %+v, %v; want head 5 unchanged", h, err)
	}
	got, err := s.Receipts(ctx, "pve-a", 1, 3)
	if err != nil || len(got) != 3 || got[0].Seq != 2 || got[2].Seq != 4 {
		t.Fatalf("Receipts(after 1, 3): got %d, %v; want seqs 2..4", len(got), err)
	}
	if got[0].Hash != wire.ReceiptHash(got[0]) || !got[0].Time.Equal(first[1].Time) {
		t.Fatalf("a stored receipt no longer hashes to its hash: %+v", got[0])
	}
}

func testReceiptChainErrors(t *testing.T, s store.Store) {
	ctx := t.Context()
	enrolled(t, s, "pve-a")
	rs := receipts(0, wire.ZeroHash, 4)
	if _, err := s.AppendReceipts(ctx, "pve-a", rs[:2]); err != nil {
		t.Fatal(err)
	}
	_, err := s.AppendReceipts(ctx, "pve-a", rs[3:])
	wantErr(t, "a batch after a gap", err, wire.ErrChainGap)

	forged := receipts(2, wire.ZeroHash, 1) // does not link to rs[1]
	_, err = s.AppendReceipts(ctx, "pve-a", forged)
	wantErr(t, "a batch that does not link", err, wire.ErrChainBroken)

	altered := append([]wire.Receipt(nil), rs[2:4]...)
	altered[1].Source = "tampered"
	_, err = s.AppendReceipts(ctx, "pve-a", altered)
	wantErr(t, "a batch with an altered receipt", err, wire.ErrChainBroken)

	rewritten := receipts(0, wire.ZeroHash, 2)
	rewritten[1].Op = "other"
	wire.Chain(0, wire.ZeroHash, rewritten)
	_, err = s.AppendReceipts(ctx, "pve-a", rewritten)
	wantErr(t, "a batch rewriting stored history", err, wire.ErrChainBroken)

	if h, _ := s.ReceiptHead(ctx, "pve-a"); h.Seq != 2 || h.Hash != rs[1].Hash {
		t.Fatalf("head after refused batches: got %+v; want seq 2 (nothing stored from a refused batch)", h)
	}
	if h, err := s.AppendReceipts(ctx, "pve-a", rs[2:]); err != nil || h.Seq != 4 {
		t.Fatalf("the right continuation after refusals: got %+v, %v", h, err)
	}
}

// A break starts a new segment at the head's next number, linked to
// nothing; one numbered below the next is a gap (the agent numbers it on
// from the head), and receipts after it link to it.
func testReceiptBreak(t *testing.T, s store.Store) {
	ctx := t.Context()
	enrolled(t, s, "pve-a")
	rs := receipts(0, wire.ZeroHash, 3)
	if _, err := s.AppendReceipts(ctx, "pve-a", rs); err != nil {
		t.Fatal(err)
	}
	segment := func(seq uint64) []wire.Receipt {
		seg := []wire.Receipt{{Time: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), Type: wire.ReceiptBreak, Reason: "the receipt log was damaged"},
			{Time: time.Date(2026, 1, 2, 0, 0, 1, 0, time.UTC), Type: wire.ReceiptBegin, Op: "op-new", Source: "reconcile"}}
		wire.Chain(seq, wire.ZeroHash, seg)
		wire.Chain(seq+1, seg[0].Hash, seg[1:])
		return seg
	}
	_, err := s.AppendReceipts(ctx, "pve-a", segment(1))
	wantErr(t, "a break numbered below the head", err, wire.ErrChainGap)
	_, err = s.AppendReceipts(ctx, "pve-a", segment(4))
	wantErr(t, "a break past the head's next number", err, wire.ErrChainGap)
	seg := segment(3)
	h, err := s.AppendReceipts(ctx, "pve-a", seg)
	if err != nil || h.Seq != 5 || h.Hash != seg[1].Hash {
		t.Fatalf("a break at the head's next number: got %+v, %v; want seq 5", h, err)
	}
	got, err := s.Receipts(ctx, "pve-a", 3, 10)
	if err != nil || len(got) != 2 || got[0].Type != wire.ReceiptBreak || got[0].Reason != "the receipt log was damaged" || got[0].Prev != wire.ZeroHash {
		t.Fatalf("Receipts after 3: %+v, %v; want the break and the receipt after it", got, err)
	}
	if h, err := s.AppendReceipts(ctx, "pve-a", seg); err != nil || h.Seq != 5 {
		t.Fatalf("the segment sent again: %+v, %v; want accepted, head 5", h, err)
	}
}

func testAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	id1, err := s.AppendAudit(ctx, store.AuditEntry{Time: at, Actor: "alice", Action: "desired.put", Host: "pve-a", Detail: "generation 1"})
	if err != nil {
		t.Fatal(err)
	}
	id2, err := s.AppendAudit(ctx, store.AuditEntry{Actor: "bob", Action: "operator.create"})
	if err != nil || id2 <= id1 {
		t.Fatalf("second AppendAudit: got id %d, %v; want > %d", id2, err, id1)
	}
	all, err := s.Audit(ctx, 0, 10)
	if err != nil || len(all) != 2 {
		t.Fatalf("Audit: got %d, %v; want 2", len(all), err)
	}
	if e := all[0]; e.ID != id1 || !e.Time.Equal(at) || e.Actor != "alice" || e.Action != "desired.put" || e.Host != "pve-a" || e.Detail != "generation 1" {
		t.Fatalf("entry 1: got %+v", e)
	}
	if all[1].Time.IsZero() {
		t.Fatal("an entry without a time got none; want the store's clock")
	}
	if rest, _ := s.Audit(ctx, id1, 10); len(rest) != 1 || rest[0].ID != id2 {
		t.Fatalf("Audit(after %d): got %+v; want only %d", id1, rest, id2)
	}
}

// testFindAudit: FindAudit filters by host, actor, action and time in
// the store, newest first, and pages with Before.
func testFindAudit(t *testing.T, s store.Store) {
	ctx := t.Context()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	type e = store.AuditEntry
	var ids []int64
	for i, x := range []e{
		{Actor: "alice", Action: "desired.put", Host: "pve-a"},
		{Actor: "bob", Action: "host.block", Host: "pve-a"},
		{Actor: "alice", Action: "host.unblock", Host: "pve-b"},
		{Actor: "carol", Action: "operator.create"},
		{Actor: "alice-ci", Action: "host.block", Host: "pve-b"},
		{Actor: "bob", Action: "desired.put", Host: "pve-a%"},
	} {
		x.Time = t0.Add(time.Duration(i) * time.Hour)
		id, err := s.AppendAudit(ctx, x)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	find := func(q store.AuditQuery) []int64 {
		t.Helper()
		if q.Limit == 0 {
			q.Limit = 100
		}
		es, err := s.FindAudit(ctx, q)
		if err != nil {
			t.Fatalf("FindAudit(%+v): %v", q, err)
		}
		out := []int64{}
		for _, x := range es {
			out = append(out, x.ID)
		}
		return out
	}
	for _, c := range []struct {
		q    store.AuditQuery
		want []int
	}{
		{store.AuditQuery{}, []int{5, 4, 3, 2, 1, 0}},
		{store.AuditQuery{Host: "pve-a"}, []int{1, 0}},
		{store.AuditQuery{Actor: "alice"}, []int{4, 2, 0}},
		{store.AuditQuery{Action: "block"}, []int{4, 2, 1}},
		{store.AuditQuery{Action: "block", Actor: "alice"}, []int{4, 2}},
		{store.AuditQuery{Action: "%"}, nil}, // no LIKE wildcards
		{store.AuditQuery{Host: "pve-a%"}, []int{5}},
		{store.AuditQuery{From: t0.Add(time.Hour), To: t0.Add(3 * time.Hour)}, []int{3, 2, 1}},
		{store.AuditQuery{Limit: 2}, []int{5, 4}},
		{store.AuditQuery{Before: ids[4], Limit: 2}, []int{3, 2}},
		{store.AuditQuery{Before: ids[2], Actor: "alice"}, []int{0}},
	} {
		want := []int64{}
		for _, i := range c.want {
			want = append(want, ids[i])
		}
		if got := find(c.q); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("FindAudit(%+v): got %v; want %v", c.q, got, want)
		}
	}
	if es, _ := s.FindAudit(ctx, store.AuditQuery{Host: "pve-b", Limit: 1}); len(es) != 1 || es[0].Actor != "alice-ci" || !es[0].Time.Equal(t0.Add(4*time.Hour)) {
		t.Fatalf("FindAudit(pve-b, 1): %+v; want the newest entry in full", es)
	}
}

func testEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	if id, err := s.LastEventID(ctx); err != nil || id != 0 {
		t.Fatalf("LastEventID of an empty log: got %d, %v; want 0", id, err)
	}
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	id1, err := s.AppendEvent(ctx, store.Event{Time: at, Type: store.EventDesiredChanged, Host: "pve-a", Actor: "alice", Detail: "generation 1"})
	if err != nil {
		t.Fatal(err)
	}
	id2, err := s.AppendEvent(ctx, store.Event{Type: store.EventHostSilent, Host: "pve-b"})
	if err != nil || id2 <= id1 {
		t.Fatalf("second AppendEvent: got id %d, %v; want > %d", id2, err, id1)
	}
	_, err = s.AppendEvent(ctx, store.Event{Host: "pve-a"})
	wantErr(t, "an event without a type", err, store.ErrInvalid)
	if id, err := s.LastEventID(ctx); err != nil || id != id2 {
		t.Fatalf("LastEventID: got %d, %v; want %d", id, err, id2)
	}
	all, err := s.Events(ctx, 0, 10)
	if err != nil || len(all) != 2 {
		t.Fatalf("Events: got %d, %v; want 2", len(all), err)
	}
	if e := all[0]; e.ID != id1 || !e.Time.Equal(at) || e.Type != store.EventDesiredChanged || e.Host != "pve-a" || e.Actor != "alice" || e.Detail != "generation 1" {
		t.Fatalf("event 1: got %+v", e)
	}
	if all[1].Time.IsZero() || all[1].Actor != "" {
		t.Fatalf("event 2: got %+v; want the store's clock and no actor", all[1])
	}
	if rest, _ := s.Events(ctx, id1, 10); len(rest) != 1 || rest[0].ID != id2 {
		t.Fatalf("Events(after %d): got %+v; want only %d", id1, rest, id2)
	}
	if none, err := s.Events(ctx, id2, 10); err != nil || len(none) != 0 {
		t.Fatalf("Events(after the newest): got %+v, %v; want none", none, err)
	}
	if one, _ := s.Events(ctx, 0, 1); len(one) != 1 || one[0].ID != id1 {
		t.Fatalf("Events(limit 1): got %+v; want only %d", one, id1)
	}
}

func testPruneEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var ids []int64
	for i := range 10 {
		id, err := s.AppendEvent(ctx, store.Event{Time: base.Add(time.Duration(i) * time.Minute), Type: store.EventHostStatus, Host: fmt.Sprint("h", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// Older than minute 2: events 0 and 1 go.
	n, err := s.PruneEvents(ctx, base.Add(2*time.Minute), 100)
	if err != nil || n != 2 {
		t.Fatalf("PruneEvents by age: got %d, %v; want 2", n, err)
	}
	// Keep the newest 5 of the 8 left: 3 more go.
	n, err = s.PruneEvents(ctx, base, 5)
	if err != nil || n != 3 {
		t.Fatalf("PruneEvents by count: got %d, %v; want 3", n, err)
	}
	left, _ := s.Events(ctx, 0, 100)
	if len(left) != 5 || left[0].ID != ids[5] || left[4].ID != ids[9] || left[0].Host != "h5" {
		t.Fatalf("after pruning: got %+v; want events 5..9 with their ids", left)
	}
	if n, err := s.PruneEvents(ctx, base, 5); err != nil || n != 0 {
		t.Fatalf("PruneEvents again: got %d, %v; want 0", n, err)
	}
	// Ids keep growing after a prune.
	id, err := s.AppendEvent(ctx, store.Event{Type: store.EventHostStatus})
	if err != nil || id <= ids[9] {
		t.Fatalf("AppendEvent after pruning: got %d, %v; want > %d", id, err, ids[9])
	}
	if n, err := s.PruneEvents(ctx, base, 0); err != nil || n != 6 {
		t.Fatalf("PruneEvents keeping none: got %d, %v; want 6", n, err)
	}
	if id, _ := s.LastEventID(ctx); id != 0 {
		t.Fatalf("LastEventID after pruning all: got %d; want 0 (nothing left)", id)
	}
	_, err = s.PruneEvents(ctx, base, -1)
	wantErr(t, "PruneEvents keeping -1", err, store.ErrInvalid)
}

func testUnknownHost(t *testing.T, s store.Store) {
	ctx := t.Context()
	const h = "ghost"
	check := func(what string, err error) {
		t.Helper()
		wantErr(t, what+" of an unknown host", err, store.ErrNotFound)
	}
	_, err := s.Host(ctx, h)
	check("Host", err)
	_, err = s.PutDesired(ctx, h, []byte(`{}`), store.AnyGeneration, "alice")
	check("PutDesired", err)
	_, err = s.Desired(ctx, h)
	check("Desired", err)
	_, err = s.DesiredHistory(ctx, h, 5)
	check("DesiredHistory", err)
	check("PutReport", s.PutReport(ctx, h, []byte(`{}`), "x"))
	_, err = s.Heartbeat(ctx, h, "x")
	check("Heartbeat", err)
	_, err = s.LastReport(ctx, h)
	check("LastReport", err)
	_, err = s.PutJob(ctx, h, []byte("job"), nil, "alice")
	check("PutJob", err)
	_, err = s.Jobs(ctx, h, "")
	check("Jobs", err)
	check("SetPending", s.SetPending(ctx, h, nil))
	_, err = s.Pending(ctx, h)
	check("Pending", err)
	_, err = s.AppendReceipts(ctx, h, receipts(0, wire.ZeroHash, 1))
	check("AppendReceipts", err)
	_, err = s.ReceiptHead(ctx, h)
	check("ReceiptHead", err)
	_, err = s.Receipts(ctx, h, 0, 5)
	check("Receipts", err)
	if hosts, _ := s.Hosts(ctx); len(hosts) != 0 {
		t.Fatalf("calls on an unknown host created hosts: %+v", hosts)
	}
}

func note(sink, key string, at time.Time) store.Notification {
	return store.Notification{Sink: sink, Key: key, Body: []byte(`{"kind":"test","key":"` + key + `"}`), CreatedAt: at}
}

func testOutboxDelivery(t *testing.T, s store.Store) {
	ctx := t.Context()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	id1, err := s.EnqueueNotification(ctx, note("ops", "host.silent/pve-a", at), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := s.EnqueueNotification(ctx, store.Notification{Sink: "ops", Key: "job.failed/pve-a/j1", Body: []byte("{}"), CreatedAt: at, NextAt: at.Add(30 * time.Second)}, 0)
	if err != nil || id2 <= id1 {
		t.Fatalf("second enqueue: got %d, %v; want an id > %d", id2, err, id1)
	}
	for _, bad := range []store.Notification{
		{Key: "k", Body: []byte("{}"), CreatedAt: at},
		{Sink: "ops", Body: []byte("{}"), CreatedAt: at},
		{Sink: "ops", Key: "k", CreatedAt: at},
		{Sink: "ops", Key: "k", Body: []byte("{}")},
		{Sink: "ops", Key: "k", Body: make([]byte, store.MaxNotificationBody+1), CreatedAt: at},
	} {
		_, err := s.EnqueueNotification(ctx, bad, 0)
		wantErr(t, fmt.Sprintf("EnqueueNotification(%q, %q, %d bytes)", bad.Sink, bad.Key, len(bad.Body)), err, store.ErrInvalid)
	}
	if n, err := s.OutboxDepth(ctx); err != nil || n != 2 {
		t.Fatalf("OutboxDepth: got %d, %v; want 2", n, err)
	}
	// At at only the first is due (the second waits 30s).
	got, err := s.ClaimNotifications(ctx, "hub-1", at, time.Minute, 10)
	if err != nil || len(got) != 1 || got[0].ID != id1 {
		t.Fatalf("ClaimNotifications at the start: got %+v, %v; want only %d", got, err, id1)
	}
	n := got[0]
	if n.Sink != "ops" || n.Key != "host.silent/pve-a" || string(n.Body) != `{"kind":"test","key":"host.silent/pve-a"}` ||
		!n.CreatedAt.Equal(at) || n.State != store.OutboxPending || n.Attempts != 1 || n.LeaseOwner != "hub-1" || !n.LeaseUntil.Equal(at.Add(time.Minute)) {
		t.Fatalf("claimed: got %+v", n)
	}
	// Leased: nobody else gets it, even when the other is due.
	got, err = s.ClaimNotifications(ctx, "hub-2", at.Add(59*time.Second), time.Minute, 10)
	if err != nil || len(got) != 1 || got[0].ID != id2 {
		t.Fatalf("ClaimNotifications 59s on: got %+v, %v; want only %d (the first is leased for a minute)", got, err, id2)
	}
	if err := s.AckNotification(ctx, id1, at.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.AckNotification(ctx, id1, at.Add(2*time.Second)); err != nil {
		t.Fatalf("acknowledging twice: %v; want nil (an at-least-once retry)", err)
	}
	wantErr(t, "AckNotification of an unknown id", s.AckNotification(ctx, 1<<40, at), store.ErrNotFound)
	// A failed attempt: only the lease holder reschedules it.
	wantErr(t, "RetryNotification by a non-holder", s.RetryNotification(ctx, id2, "hub-1", at.Add(time.Hour), "boom", false), store.ErrConflict)
	wantErr(t, "RetryNotification of a delivered one", s.RetryNotification(ctx, id1, "hub-1", at.Add(time.Hour), "boom", false), store.ErrConflict)
	wantErr(t, "RetryNotification of an unknown id", s.RetryNotification(ctx, 1<<40, "hub-1", at, "boom", false), store.ErrNotFound)
	if err := s.RetryNotification(ctx, id2, "hub-2", at.Add(time.Hour), "502 Bad Gateway", false); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ClaimNotifications(ctx, "hub-1", at.Add(59*time.Minute), time.Minute, 10); len(got) != 0 {
		t.Fatalf("claim before the retry is due: got %+v; want none", got)
	}
	got, err = s.ClaimNotifications(ctx, "hub-1", at.Add(time.Hour), time.Minute, 10)
	if err != nil || len(got) != 1 || got[0].ID != id2 || got[0].Attempts != 2 || got[0].LastError != "502 Bad Gateway" {
		t.Fatalf("claim when the retry is due: got %+v, %v; want %d on its second attempt with its last error", got, err, id2)
	}
	// Given up: dead, no longer claimable nor pending.
	if err := s.RetryNotification(ctx, id2, "hub-1", at.Add(2*time.Hour), "400 Bad Request", true); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ClaimNotifications(ctx, "hub-1", at.Add(48*time.Hour), time.Minute, 10); len(got) != 0 {
		t.Fatalf("claim after giving up: got %+v; want none", got)
	}
	if n, err := s.OutboxDepth(ctx); err != nil || n != 0 {
		t.Fatalf("OutboxDepth after delivery and giving up: got %d, %v; want 0", n, err)
	}
	all, err := s.Notifications(ctx, 0, 10)
	if err != nil || len(all) != 2 {
		t.Fatalf("Notifications: got %d, %v; want 2", len(all), err)
	}
	if a := all[0]; a.State != store.OutboxDelivered || !a.DoneAt.Equal(at.Add(time.Second)) || a.LeaseOwner != "" {
		t.Fatalf("delivered: got %+v; want delivered at the first ack, lease cleared", a)
	}
	if b := all[1]; b.State != store.OutboxDead || b.LastError != "400 Bad Request" || !b.DoneAt.Equal(at.Add(2*time.Hour)) {
		t.Fatalf("given up: got %+v", b)
	}
	if rest, _ := s.Notifications(ctx, id1, 10); len(rest) != 1 || rest[0].ID != id2 {
		t.Fatalf("Notifications(after %d): got %+v; want only %d", id1, rest, id2)
	}
}

func testOutboxDedup(t *testing.T, s store.Store) {
	ctx := t.Context()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if _, err := s.EnqueueNotification(ctx, note("ops", "drift/pve-a/101", at), time.Hour); err != nil {
		t.Fatal(err)
	}
	_, err := s.EnqueueNotification(ctx, note("ops", "drift/pve-a/101", at.Add(59*time.Minute)), time.Hour)
	wantErr(t, "the same key within the window", err, store.ErrExists)
	// Another sink or another key is another message.
	if _, err := s.EnqueueNotification(ctx, note("chat", "drift/pve-a/101", at.Add(time.Minute)), time.Hour); err != nil {
		t.Fatalf("the same key for another sink: %v", err)
	}
	if _, err := s.EnqueueNotification(ctx, note("ops", "drift/pve-a/102", at.Add(time.Minute)), time.Hour); err != nil {
		t.Fatalf("another key: %v", err)
	}
	// Past the window, or without one, it is sent again, delivered or not.
	if _, err := s.EnqueueNotification(ctx, note("ops", "drift/pve-a/101", at.Add(time.Hour)), time.Hour); err != nil {
		t.Fatalf("the same key when the window has passed: %v", err)
	}
	if _, err := s.EnqueueNotification(ctx, note("ops", "drift/pve-a/101", at.Add(time.Hour)), 0); err != nil {
		t.Fatalf("the same key without a window: %v", err)
	}
	if n, _ := s.OutboxDepth(ctx); n != 5 {
		t.Fatalf("OutboxDepth: got %d; want 5", n)
	}
	// Two hubs raising one alert: the one whose clock read later stored
	// first; the other, created a moment "before" it, is still a
	// duplicate.
	if _, err := s.EnqueueNotification(ctx, note("ops", "host.silent/pve-c", at.Add(90*time.Minute+time.Second)), time.Hour); err != nil {
		t.Fatal(err)
	}
	_, err = s.EnqueueNotification(ctx, note("ops", "host.silent/pve-c", at.Add(90*time.Minute)), time.Hour)
	wantErr(t, "the same key stored a moment later by another hub", err, store.ErrExists)
	// Concurrent enqueues of one key store one message.
	var wg sync.WaitGroup
	var mu sync.Mutex
	stored := 0
	for range 8 {
		wg.Go(func() {
			_, err := s.EnqueueNotification(ctx, note("ops", "receipts.broken/pve-b", at.Add(2*time.Hour)), time.Hour)
			if err != nil && !errors.Is(err, store.ErrExists) {
				t.Error(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				stored++
			}
		})
	}
	wg.Wait()
	if stored != 1 {
		t.Fatalf("8 concurrent enqueues of one key: %d stored; want 1", stored)
	}
}

func testOutboxLease(t *testing.T, s store.Store) {
	ctx := t.Context()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	id, err := s.EnqueueNotification(ctx, note("ops", "k", at), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.ClaimNotifications(ctx, "hub-1", at, time.Minute, 10); err != nil || len(got) != 1 {
		t.Fatalf("first claim: got %+v, %v", got, err)
	}
	// hub-1 stopped mid-send: once its lease has run out another claims it.
	if got, _ := s.ClaimNotifications(ctx, "hub-2", at.Add(59*time.Second), time.Minute, 10); len(got) != 0 {
		t.Fatalf("claim while the lease holds: got %+v; want none", got)
	}
	got, err := s.ClaimNotifications(ctx, "hub-2", at.Add(time.Minute), time.Minute, 10)
	if err != nil || len(got) != 1 || got[0].ID != id || got[0].Attempts != 2 || got[0].LeaseOwner != "hub-2" {
		t.Fatalf("claim after the lease ran out: got %+v, %v; want %d leased to hub-2 on its second attempt", got, err, id)
	}
	// hub-1 comes back and reports its failure: the lease is no longer its.
	wantErr(t, "RetryNotification by the expired holder", s.RetryNotification(ctx, id, "hub-1", at, "timeout", false), store.ErrConflict)
	_, err = s.ClaimNotifications(ctx, "", at, time.Minute, 10)
	wantErr(t, "a claim without an owner", err, store.ErrInvalid)
	_, err = s.ClaimNotifications(ctx, "hub-1", at, 0, 10)
	wantErr(t, "a claim without a lease", err, store.ErrInvalid)
}

func testOutboxClaimRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const n = 40
	for i := range n {
		if _, err := s.EnqueueNotification(ctx, note("ops", fmt.Sprint("k", i), at), 0); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[int64]string{}
	var wg sync.WaitGroup
	for c := range 4 {
		owner := fmt.Sprint("hub-", c)
		wg.Go(func() {
			for {
				got, err := s.ClaimNotifications(ctx, owner, at, time.Hour, 3)
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, g := range got {
					if prev, ok := seen[g.ID]; ok {
						t.Errorf("notification %d claimed by %s and %s under one lease", g.ID, prev, owner)
					}
					seen[g.ID] = owner
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("claimed %d notifications; want all %d", len(seen), n)
	}
}

func testOutboxPrune(t *testing.T, s store.Store) {
	ctx := t.Context()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var ids []int64
	for i := range 3 {
		id, err := s.EnqueueNotification(ctx, note("ops", fmt.Sprint("k", i), at.Add(time.Duration(i)*time.Hour)), 0)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// 0 delivered, 1 pending, 2 delivered but new.
	if _, err := s.ClaimNotifications(ctx, "hub-1", at.Add(3*time.Hour), time.Minute, 10); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{ids[0], ids[2]} {
		if err := s.AckNotification(ctx, id, at.Add(3*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.PruneNotifications(ctx, at.Add(2*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("PruneNotifications: got %d, %v; want 1 (the old delivered one; pending ones stay)", n, err)
	}
	left, _ := s.Notifications(ctx, 0, 10)
	if len(left) != 2 || left[0].ID != ids[1] || left[1].ID != ids[2] {
		t.Fatalf("after pruning: got %+v; want %d and %d", left, ids[1], ids[2])
	}
}
