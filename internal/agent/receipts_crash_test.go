package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/wire"
)

// realHub is the hub itself (SQLite store, in process, plain HTTP on
// loopback) with host "pve" enrolled: the receipts a test ships are
// checked by the code that checks them in production.
type realHub struct {
	st    *sqlite.Store
	agent *hubclient.Client
}

func startRealHub(t *testing.T) *realHub {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	opTok := hub.NewToken("stwo_")
	if err := st.CreateOperator(ctx, "alice", store.HashToken(opTok)); err != nil {
		t.Fatal(err)
	}
	srv := hub.New(st, hub.Options{})
	web := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { srv.Shutdown(); web.Close(); st.Close() })
	op, err := hubclient.New(hubclient.Options{URL: web.URL, Token: opTok})
	if err != nil {
		t.Fatal(err)
	}
	var jt struct {
		JoinToken string `json:"join_token"`
	}
	if err := op.JSON(ctx, http.MethodPost, "/v1/hosts/pve/join-token", nil, nil, &jt); err != nil {
		t.Fatal(err)
	}
	anon, _ := hubclient.New(hubclient.Options{URL: web.URL})
	enr, err := anon.Enroll(ctx, jt.JoinToken)
	if err != nil {
		t.Fatal(err)
	}
	c, err := hubclient.New(hubclient.Options{URL: web.URL, Token: enr.Token})
	if err != nil {
		t.Fatal(err)
	}
	return &realHub{st: st, agent: c}
}

// chain returns every receipt the hub holds for pve, after checking that
// they form one verified chain (breaks included) from seq 1.
func (h *realHub) chain(t *testing.T) []wire.Receipt {
	t.Helper()
	rs, err := h.st.Receipts(context.Background(), "pve", 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := wire.VerifyChain(0, wire.ZeroHash, rs); err != nil {
		t.Fatalf("the hub's chain does not verify: %v", err)
	}
	return rs
}

// broken returns the details of the hub's receipts.broken events.
func (h *realHub) broken(t *testing.T) []string {
	t.Helper()
	evs, err := h.st.Events(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if e.Type == store.EventReceiptsBroken {
			out = append(out, e.Detail)
		}
	}
	return out
}

// shipAll ships until the hub acknowledges everything.
func shipAll(t *testing.T, r *receipts, c *hubclient.Client) {
	t.Helper()
	for range 10 {
		if len(r.unacked()) == 0 {
			return
		}
		if err := r.ship(t.Context(), c, wire.Version); err != nil {
			t.Fatalf("ship: %v", err)
		}
	}
	t.Fatalf("receipts still unacknowledged after 10 shipments: %d", len(r.unacked()))
}

// logBuf is a slog handler's output, safe for concurrent use.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// agentState is the receipt log and journal of one agent state directory,
// opened as the agent opens them: receipts, the journal with the receipts'
// hook, then catchUp.
type agentState struct {
	r    *receipts
	j    *journal.Journal
	logs *logBuf
}

func openState(t *testing.T, dir string, now func() time.Time) *agentState {
	t.Helper()
	lb := &logBuf{}
	log := slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := openReceipts(dir, "pve", log, now)
	if err != nil {
		t.Fatalf("openReceipts: %v", err)
	}
	j, err := journal.Open(filepath.Join(dir, "journal"), journal.Options{OnRecord: r.record, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	r.catchUp(j)
	return &agentState{r: r, j: j, logs: lb}
}

func (s *agentState) close() {
	s.j.Close()
	s.r.close()
}

// runOp begins and ends op id on vmid.
func runOp(t *testing.T, j *journal.Journal, id string, vmid int) {
	t.Helper()
	op := beginEvent(vmid - 100).Op
	op.ID, op.Time = id, time.Time{}
	if err := j.Begin(*op); err != nil {
		t.Fatal(err)
	}
	if err := j.End(id, journal.Result{OK: true}); err != nil {
		t.Fatal(err)
	}
}

// crashBeforeReceipts appends ops to the journal of dir as a crash between
// each journal fsync and its receipt leaves them: durable in the journal,
// absent from the receipt log.
func crashBeforeReceipts(t *testing.T, dir string, ids ...string) {
	t.Helper()
	j, err := journal.Open(filepath.Join(dir, "journal"), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		runOp(t, j, id, 150+i)
	}
	j.Close()
}

// count returns how many receipts of type typ the hub holds for op.
func count(rs []wire.Receipt, typ, op string) int {
	n := 0
	for _, rc := range rs {
		if rc.Type == typ && rc.Op == op {
			n++
		}
	}
	return n
}

// The crash window between a journal record's fsync and its receipt's: at
// the next start the agent makes the missing receipts from the journal,
// in order, before anything else; the hub holds each exactly once, in one
// verified chain with no break, and the next start makes none again.
func TestReceiptsMadeFromTheJournalAfterACrash(t *testing.T) {
	h := startRealHub(t)
	dir := t.TempDir()
	s := openState(t, dir, nil)
	runOp(t, s.j, "op-a", 101)
	shipAll(t, s.r, h.agent)
	s.close()

	crashBeforeReceipts(t, dir, "op-b", "op-c")

	s = openState(t, dir, nil)
	if !strings.Contains(s.logs.String(), "made the receipts of journal records a restart kept") {
		t.Errorf("catch-up not logged:\n%s", s.logs)
	}
	runOp(t, s.j, "op-d", 104) // recovery and the first tick come after the catch-up
	shipAll(t, s.r, h.agent)
	s.close()

	rs := h.chain(t)
	var order []string
	for _, rc := range rs {
		order = append(order, rc.Type+":"+rc.Op)
	}
	want := "begin:op-a end:op-a begin:op-b end:op-b begin:op-c end:op-c begin:op-d end:op-d"
	if got := strings.Join(order, " "); got != want {
		t.Fatalf("hub chain:\n got %s\nwant %s", got, want)
	}
	if b := h.broken(t); len(b) != 0 {
		t.Errorf("receipts.broken events %q; want none", b)
	}

	// A start with nothing missing makes nothing.
	s = openState(t, dir, nil)
	if got := len(s.r.unacked()); got != 0 {
		t.Errorf("a clean restart made %d receipts; want 0", got)
	}
	s.close()
}

// A crash after the receipt is durable and before (or while) it is
// shipped, the hub's acknowledgement lost: the restarted agent ships it
// again and the hub, which holds it, keeps it once.
func TestReceiptsShippedOnceAfterACrashBeforeTheAck(t *testing.T) {
	h := startRealHub(t)
	dir := t.TempDir()
	s := openState(t, dir, nil)
	runOp(t, s.j, "op-a", 101)
	shipAll(t, s.r, h.agent)
	ack, err := os.ReadFile(filepath.Join(dir, ReceiptsAckFile))
	if err != nil {
		t.Fatal(err)
	}
	runOp(t, s.j, "op-b", 102)
	shipAll(t, s.r, h.agent)
	s.close()
	// The acknowledgement of op-b never became durable.
	if err := os.WriteFile(filepath.Join(dir, ReceiptsAckFile), ack, 0o600); err != nil {
		t.Fatal(err)
	}
	s = openState(t, dir, nil)
	if got := len(s.r.unacked()); got != 2 {
		t.Fatalf("after the lost acknowledgement %d receipts wait; want op-b's 2", got)
	}
	shipAll(t, s.r, h.agent)
	s.close()
	rs := h.chain(t)
	if len(rs) != 4 || count(rs, "begin", "op-b") != 1 || count(rs, "end", "op-b") != 1 {
		t.Fatalf("hub holds %d receipts (%d begins of op-b); want 4, op-b once", len(rs), count(rs, "begin", "op-b"))
	}
}

// Records compacted out of the journal before their receipts were made
// cannot be made: the agent starts a new segment with a break saying
// which, the hub accepts it and reports it, and nothing is invented.
func TestReceiptsBreakWhenTheJournalWasCompactedPastThem(t *testing.T) {
	h := startRealHub(t)
	dir := t.TempDir()
	s := openState(t, dir, nil)
	runOp(t, s.j, "op-a", 101)
	shipAll(t, s.r, h.agent)
	s.close()

	j, err := journal.Open(filepath.Join(dir, "journal"), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	runOp(t, j, "op-b", 102) // records 3 and 4, never receipted
	if err := j.Compact(); err != nil {
		t.Fatal(err)
	}
	runOp(t, j, "op-c", 103) // 5 and 6: still in the journal
	j.Close()

	s = openState(t, dir, nil)
	shipAll(t, s.r, h.agent)
	s.close()
	rs := h.chain(t)
	var order []string
	for _, rc := range rs {
		order = append(order, rc.Type+":"+rc.Op)
	}
	if got, want := strings.Join(order, " "), "begin:op-a end:op-a break: begin:op-c end:op-c"; got != want {
		t.Fatalf("hub chain:\n got %s\nwant %s", got, want)
	}
	if !strings.Contains(rs[2].Reason, "journal records 3 to 4 were compacted") {
		t.Errorf("break reason %q; want it to name records 3 to 4", rs[2].Reason)
	}
	if b := h.broken(t); len(b) != 1 || !strings.Contains(b[0], "break at seq 3") {
		t.Errorf("receipts.broken events %q; want the break at seq 3", b)
	}
	if !strings.Contains(s.logs.String(), "level=ERROR") {
		t.Errorf("no error-level line for the break:\n%s", s.logs)
	}
}

// damage is a way a receipt log can be found at start.
type damage struct {
	name string
	do   func(t *testing.T, path string, data []byte)
}

var damages = []damage{
	{"bit flip in a middle record", func(t *testing.T, path string, data []byte) {
		data[len(data)/3] ^= 0x10
		writeFile(t, path, data)
	}},
	{"a middle record's bytes cut out", func(t *testing.T, path string, data []byte) {
		writeFile(t, path, append(append([]byte(nil), data[:len(data)/3]...), data[len(data)/3+20:]...))
	}},
	{"garbage frame in the middle", func(t *testing.T, path string, data []byte) {
		mid := len(data) / 2
		for mid > 0 && !validFrameAt(data, mid) {
			mid--
		}
		bad := append(append(append([]byte(nil), data[:mid]...), []byte{5, 0, 0, 0, 1, 2, 3, 4, '{', 'x', 'y', 'z', '}'}...), data[mid:]...)
		writeFile(t, path, bad)
	}},
	{"a symlink", func(t *testing.T, path string, data []byte) {
		target := path + ".elsewhere"
		writeFile(t, target, data)
		os.Remove(path)
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
	}},
	{"a directory", func(t *testing.T, path string, data []byte) {
		os.Remove(path)
		if err := os.Mkdir(path, 0o700); err != nil {
			t.Fatal(err)
		}
	}},
	{"a named pipe", func(t *testing.T, path string, data []byte) {
		os.Remove(path)
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
	}},
	{"larger than the limit", func(t *testing.T, path string, data []byte) {
		if err := os.Truncate(path, maxReceiptsOnDisk+1); err != nil { // sparse
			t.Fatal(err)
		}
	}},
	{"missing", func(t *testing.T, path string, data []byte) {
		os.Remove(path)
	}},
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func validFrameAt(data []byte, off int) bool {
	_, ok := receiptFormat.At(data, off)
	return ok
}

// A receipt log damaged in any of these ways does not stop the agent: it
// is set aside (renamed .damaged-TIME, logged at error level), a new
// segment starts with a break naming the damage, the receipts the hub had
// not acknowledged are made again from the journal, and the hub accepts
// the break and reports it.
func TestReceiptsDamagedLogSetAside(t *testing.T) {
	clock := time.Date(2026, 12, 6, 1, 2, 3, 0, time.UTC)
	now := func() time.Time { return clock }
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			h := startRealHub(t)
			dir := t.TempDir()
			s := openState(t, dir, now)
			for i := 1; i <= 4; i++ {
				runOp(t, s.j, fmt.Sprintf("op-%d", i), 100+i)
			}
			shipAll(t, s.r, h.agent)
			runOp(t, s.j, "op-5", 105) // not shipped before the damage
			s.close()
			path := filepath.Join(dir, ReceiptsFile)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			d.do(t, path, data)

			s = openState(t, dir, now)
			defer s.close()
			aside, _ := filepath.Glob(path + ".damaged-*")
			if d.name == "missing" {
				if len(aside) != 0 {
					t.Errorf("set aside %v for a missing log; want nothing to set aside", aside)
				}
			} else if len(aside) != 1 || !strings.HasSuffix(aside[0], ".damaged-20261206T010203Z") {
				t.Fatalf("set aside: %v; want one receipts.damaged-20261206T010203Z", aside)
			} else if !strings.Contains(s.logs.String(), "level=ERROR") || !strings.Contains(s.logs.String(), aside[0]) {
				t.Errorf("no error-level line naming %s:\n%s", aside[0], s.logs)
			}
			runOp(t, s.j, "op-6", 106)
			shipAll(t, s.r, h.agent)
			rs := h.chain(t)
			breaks := wire.Breaks(rs)
			if len(breaks) != 1 || breaks[0].Seq != 9 {
				t.Fatalf("breaks on the hub: %+v; want one at seq 9", breaks)
			}
			if d.name != "missing" && !strings.Contains(breaks[0].Reason, filepath.Base(aside[0])) {
				t.Errorf("break reason %q; want it to name the file set aside", breaks[0].Reason)
			}
			for _, op := range []string{"op-1", "op-4", "op-5", "op-6"} {
				if count(rs, "begin", op) != 1 || count(rs, "end", op) != 1 {
					t.Errorf("hub holds %d begins and %d ends of %s; want 1 each (op-5 rebuilt from the journal)", count(rs, "begin", op), count(rs, "end", op), op)
				}
			}
			if b := h.broken(t); len(b) != 1 || !strings.Contains(b[0], "break at seq 9") {
				t.Errorf("receipts.broken events %q; want the break at seq 9", b)
			}
			// The new log is sound: a restart neither sets it aside nor
			// breaks again.
			s.close()
			s = openState(t, dir, now)
			if got, _ := filepath.Glob(path + ".damaged-*"); len(got) != len(aside) {
				t.Errorf("after a clean restart %v are set aside; want still %v", got, aside)
			}
			if n := len(s.r.unacked()); n != 0 {
				t.Errorf("a clean restart after the break made %d receipts; want 0", n)
			}
		})
	}
}

// The hub holds more than the agent knows it acknowledged (receipts of the
// damaged log shipped, the acknowledgement lost): the new segment is
// numbered on from the hub's head, and nothing the hub holds is rewritten.
func TestReceiptsSegmentNumberedFromTheHubsHead(t *testing.T) {
	h := startRealHub(t)
	dir := t.TempDir()
	s := openState(t, dir, nil)
	runOp(t, s.j, "op-1", 101)
	shipAll(t, s.r, h.agent)
	ack, _ := os.ReadFile(filepath.Join(dir, ReceiptsAckFile))
	runOp(t, s.j, "op-2", 102)
	shipAll(t, s.r, h.agent)
	s.close()
	writeFile(t, filepath.Join(dir, ReceiptsAckFile), ack)
	path := filepath.Join(dir, ReceiptsFile)
	data, _ := os.ReadFile(path)
	data[len(data)/4] ^= 1
	writeFile(t, path, data)

	s = openState(t, dir, nil)
	defer s.close()
	shipAll(t, s.r, h.agent)
	rs := h.chain(t)
	var order []string
	for _, rc := range rs {
		order = append(order, fmt.Sprint(rc.Seq, ":", rc.Type, ":", rc.Op))
	}
	// op-2 is made again from the journal after the break: the hub held
	// it, and the break says receipts after seq 2 may be missing or not.
	if got, want := strings.Join(order, " "), "1:begin:op-1 2:end:op-1 3:begin:op-2 4:end:op-2 5:break: 6:begin:op-2 7:end:op-2"; got != want {
		t.Fatalf("hub chain:\n got %s\nwant %s", got, want)
	}
}

// A hub from before breaks (wire version 4) is sent the receipts before a
// break only; the rest wait, logged once.
func TestReceiptsBreakWaitsForAnUpgradedHub(t *testing.T) {
	h := startRealHub(t)
	dir := t.TempDir()
	s := openState(t, dir, nil)
	runOp(t, s.j, "op-1", 101)
	shipAll(t, s.r, h.agent)
	runOp(t, s.j, "op-2", 102)
	s.close()
	path := filepath.Join(dir, ReceiptsFile)
	data, _ := os.ReadFile(path)
	data[len(data)/4] ^= 1
	writeFile(t, path, data)
	s = openState(t, dir, nil)
	defer s.close()
	for range 2 {
		if err := s.r.ship(t.Context(), h.agent, breakVersion-1); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(h.chain(t)); n != 2 {
		t.Fatalf("a version-4 hub holds %d receipts; want op-1's 2 (the next is a break)", n)
	}
	if n := strings.Count(s.logs.String(), "too old to record a break"); n != 1 {
		t.Errorf("logged the wait %d times; want once", n)
	}
	shipAll(t, s.r, h.agent)
	if rs := h.chain(t); len(rs) != 5 || rs[2].Type != wire.ReceiptBreak || count(rs, "end", "op-2") != 1 {
		t.Errorf("after the upgrade the hub holds %+v; want op-1, the break and op-2", rs)
	}
}

// A damaged acknowledgement file (garbage, a directory) is set aside
// without a break: the hub's gap answer says where its chain ends, and
// shipping goes on from there with nothing lost or repeated.
func TestReceiptsDamagedAckSetAside(t *testing.T) {
	for name, damage := range map[string]func(path string) error{
		"garbage":     func(path string) error { return os.WriteFile(path, []byte("{\"seq\":"), 0o600) },
		"a directory": func(path string) error { os.Remove(path); return os.Mkdir(path, 0o700) },
	} {
		t.Run(name, func(t *testing.T) {
			h := startRealHub(t)
			dir := t.TempDir()
			s := openState(t, dir, nil)
			runOp(t, s.j, "op-1", 101)
			shipAll(t, s.r, h.agent)
			s.close()
			ack := filepath.Join(dir, ReceiptsAckFile)
			if err := damage(ack); err != nil {
				t.Fatal(err)
			}
			s = openState(t, dir, nil)
			defer s.close()
			if got, _ := filepath.Glob(ack + ".damaged-*"); len(got) != 1 {
				t.Fatalf("set aside %v; want the acknowledgement file", got)
			}
			runOp(t, s.j, "op-2", 102)
			shipAll(t, s.r, h.agent)
			rs := h.chain(t)
			if len(rs) != 4 || len(wire.Breaks(rs)) != 0 || count(rs, "begin", "op-1") != 1 || count(rs, "begin", "op-2") != 1 {
				t.Fatalf("hub chain %+v; want op-1 and op-2 once each, no break", rs)
			}
			if b := h.broken(t); len(b) != 0 {
				t.Errorf("receipts.broken events %q; want none", b)
			}
		})
	}
}
