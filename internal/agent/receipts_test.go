package agent

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/wire"
)

// chainHub keeps one host's receipt chain as the hub does: a batch must
// continue it (receipts it holds already are skipped), else 409
// chain_gap naming where it ends.
type chainHub struct {
	mu    sync.Mutex
	chain []wire.Receipt
	posts int
}

func (c *chainHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.posts++
	var rs wire.Receipts
	if err := json.NewDecoder(r.Body).Decode(&rs); err != nil || rs.Validate() != nil {
		http.Error(w, "bad", http.StatusBadRequest)
		return
	}
	have := uint64(len(c.chain))
	prev := wire.ZeroHash
	if have > 0 {
		prev = c.chain[have-1].Hash
	}
	var fresh []wire.Receipt
	for _, rc := range rs.Receipts {
		if rc.Seq <= have {
			continue // held already
		}
		fresh = append(fresh, rc)
	}
	if _, _, err := wire.VerifyChain(have, prev, fresh); err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		json.NewEncoder(w).Encode(wire.Error{Code: "chain_gap", Error: fmt.Sprintf("%v (the hub holds up to seq %d; send from %d)", err, have, have+1)})
		return
	}
	c.chain = append(c.chain, fresh...)
	last := c.chain[len(c.chain)-1]
	json.NewEncoder(w).Encode(map[string]any{"seq": last.Seq, "hash": last.Hash})
}

func (c *chainHub) truncate(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.chain = c.chain[:n]
}

func (c *chainHub) held() []wire.Receipt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]wire.Receipt(nil), c.chain...)
}

func beginEvent(i int) journal.Event {
	op := &journal.Op{ID: fmt.Sprintf("op-%d", i), Source: "reconcile", Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC),
		Action: action.Action{Op: action.SetConfig, VMID: 100 + i, Kind: guest.QEMU, Params: map[string]string{"cores": "2"}}}
	return journal.Event{Type: "begin", Time: op.Time, OpID: op.ID, Op: op}
}

// TestReceiptsShipIncrementallyAndResendAfterAGap: receipts are chained,
// shipped from the last acknowledged one (remembered across a restart),
// and a hub that lost receipts gets them again from where its chain ends.
func TestReceiptsShipIncrementallyAndResendAfterAGap(t *testing.T) {
	hub := &chainHub{}
	web := httptest.NewServer(hub)
	t.Cleanup(web.Close)
	c, err := hubclient.New(hubclient.Options{URL: web.URL, Token: "stwh_x"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	r, err := openReceipts(dir, "pve", log, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		r.record(beginEvent(i))
	}
	if err := r.ship(t.Context(), c, wire.Version); err != nil {
		t.Fatal(err)
	}
	if got := hub.held(); len(got) != 3 || got[2].Op != "op-3" {
		t.Fatalf("hub holds %d receipts; want 3", len(got))
	}
	// Restart: the acknowledgement is durable; only new receipts go.
	r.close()
	if r, err = openReceipts(dir, "pve", log, nil); err != nil {
		t.Fatal(err)
	}
	r.record(beginEvent(4))
	if got := r.unacked(); len(got) != 1 || got[0].Seq != 4 {
		t.Fatalf("after a restart unacked = %+v; want only seq 4", got)
	}
	if err := r.ship(t.Context(), c, wire.Version); err != nil {
		t.Fatal(err)
	}
	// The hub loses receipts 3 and 4 (a restored backup): the next
	// shipment is refused with a gap, and the one after resends from 3.
	hub.truncate(2)
	r.record(beginEvent(5))
	if err := r.ship(t.Context(), c, wire.Version); err != nil {
		t.Fatalf("after the gap answer: %v; want shipping to resume from the hub's position", err)
	}
	if err := r.ship(t.Context(), c, wire.Version); err != nil {
		t.Fatal(err)
	}
	got := hub.held()
	if _, _, err := wire.VerifyChain(0, wire.ZeroHash, got); err != nil || len(got) != 5 {
		t.Fatalf("hub chain: %d receipts, %v; want 5 verified", len(got), err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, ReceiptsAckFile))
	if !strings.Contains(string(b), `"seq":5`) {
		t.Errorf("ack file %s; want seq 5", b)
	}
	// A torn tail (a crash mid-append) is cut off at open; the chain
	// continues from the last whole receipt.
	r.close()
	f, _ := os.OpenFile(filepath.Join(dir, ReceiptsFile), os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{9, 0, 0, 0, 1, 2})
	f.Close()
	if r, err = openReceipts(dir, "pve", log, nil); err != nil {
		t.Fatalf("a torn tail: %v; want it repaired", err)
	}
	r.record(beginEvent(6))
	if err := r.ship(t.Context(), c, wire.Version); err != nil {
		t.Fatal(err)
	}
	if got := hub.held(); len(got) != 6 {
		t.Errorf("hub holds %d receipts after the repair; want 6", len(got))
	}
	r.close()
}
