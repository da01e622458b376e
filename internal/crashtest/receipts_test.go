package crashtest

import (
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/steward-pve/steward/internal/crashpoint"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/proctest"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/wire"
)

// TestReceiptsCrash kills the built agent with SIGKILL in the two windows
// of a journal receipt: a journal record durable and its receipt not yet
// written (before-receipt), and the receipt durable but not yet shipped
// (after-receipt). After a restart the hub holds every receipt of the
// interrupted op exactly once, in one chain that verifies with no gap and
// no break, and no receipts.broken event.
func TestReceiptsCrash(t *testing.T) {
	t.Parallel()
	for _, point := range []string{crashpoint.BeforeReceipt, crashpoint.AfterReceipt} {
		// The first tick journals the gate's decisions, then the config
		// write's begin, task and end, then the start's: the n-th record
		// is each of the first kinds.
		for hits := 1; hits <= 5; hits++ {
			t.Run(fmt.Sprintf("%s:%d", point, hits), func(t *testing.T) {
				t.Parallel()
				receiptsCrash(t, point, hits)
			})
		}
	}
}

func receiptsCrash(t *testing.T, point string, hits int) {
	e := &e2e{t: t, dir: t.TempDir(), hubAddr: "127.0.0.1:0"}
	e.startSim()
	e.simControl("/_sim/guests", sim.GuestSpec{VMID: 101, Kind: guest.QEMU, Name: "web", Config: map[string]string{"cores": "1", "memory": "1024"}})
	joinToken := e.startOperatorHub()
	e.putDesired("apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve:\n    guests:\n      101: {kind: qemu, state: running, config: {cores: 2}}\n")

	tokenFile := e.pveTokenFile()
	state := filepath.Join(e.dir, "state")
	e.agentArgs = []string{"agent", "--node", "pve", "--state-dir", state, "--pve-url", e.simURL, "--pve-fingerprint", e.simFP,
		"--pve-token-file", tokenFile, "--task-poll", "5ms", "--task-poll-max", "20ms", "--log-level", "debug"}

	// The first tick's hits-th journal record kills the agent at the
	// point.
	e.agent = start(t, "agent", []string{fmt.Sprintf("STEWARD_CRASHTEST_AT=%s:%d", point, hits)},
		append(e.agentArgs, "--hub", "https://"+e.hubAddr, "--hub-fingerprint", e.hubFP, "--join-token", joinToken)...)
	<-e.agent.Done()
	if ee, ok := e.agent.Err().(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("agent was not killed at %s: %v\n%s", point, e.agent.Err(), e.logs())
	}
	killed := e.agent.Out.String()

	e.agent = start(t, "agent", nil, e.agentArgs...)
	var h hub.HistoryJSON
	proctest.Eventually(t, "101 converged and every op's end on the hub", func() bool {
		if e.status(guest.QEMU, 101) != "running" || e.config(guest.QEMU, 101, "cores") != "2" {
			return false
		}
		if err := e.op.JSON(t.Context(), http.MethodGet, "/v1/hosts/pve/history", nil, nil, &h); err != nil {
			t.Fatal(err)
		}
		ended := 0
		for _, en := range h.Entries {
			if en.Type == "operation" && en.Result == nil {
				return false
			}
			if en.Type == "operation" && en.Result.OK {
				ended++
			}
		}
		return ended >= 2 // config and start
	}, func() string { return "--- killed agent:\n" + killed + "\n" + e.logs() })
	e.agent.Kill(syscall.SIGTERM)
	e.hub.Kill(syscall.SIGTERM)

	st, err := sqlite.Open(t.Context(), filepath.Join(e.dir, "hub", "hub.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rs, err := st.Receipts(t.Context(), "pve", 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := wire.VerifyChain(0, wire.ZeroHash, rs); err != nil {
		t.Fatalf("the hub's chain: %v", err)
	}
	if b := wire.Breaks(rs); len(b) != 0 {
		t.Fatalf("the hub's chain has breaks %+v; want none", b)
	}
	// Every op the journal began has one begin and one end receipt (the
	// interrupted one included: recovery ends it), and every task and end
	// follows its op's begin.
	begins, ends := map[string]int{}, map[string]int{}
	for _, rc := range rs {
		switch rc.Type {
		case wire.ReceiptBegin:
			begins[rc.Op]++
		case wire.ReceiptTask, wire.ReceiptEnd:
			if begins[rc.Op] != 1 {
				t.Errorf("receipt %d (%s of op %s) without its op's begin before it", rc.Seq, rc.Type, rc.Op)
			}
			if rc.Type == wire.ReceiptEnd {
				ends[rc.Op]++
			}
		}
	}
	if len(begins) < 2 {
		for _, rc := range rs {
			t.Logf("%d %s %s %+v %+v", rc.Seq, rc.Type, rc.Op, rc.Action, rc.Result)
		}
		t.Fatalf("the hub holds begins %v; want the interrupted op and the rest", begins)
	}
	for op, n := range begins {
		if n != 1 || ends[op] != 1 {
			t.Errorf("op %s: %d begin and %d end receipts on the hub; want 1 each", op, n, ends[op])
		}
	}
	evs, err := st.Events(t.Context(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Type == store.EventReceiptsBroken {
			t.Errorf("event %s: %s; want no receipts.broken", ev.Type, ev.Detail)
		}
	}
	if point == crashpoint.BeforeReceipt && !strings.Contains(e.agent.Out.String(), "made the receipts of journal records a restart kept") {
		t.Errorf("the restarted agent did not say it made the missing receipt:\n%s", e.agent.Out.String())
	}
}
