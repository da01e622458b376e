package replicatest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/alert"
	"github.com/steward-pve/steward/internal/hub/store/pgtest"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/proctest"
	"github.com/steward-pve/steward/internal/wire"
)

// delivery is one webhook request that verified: which replica sent it
// (each replica's config points the sink at its own path) and what.
type delivery struct {
	from string
	id   int64
	key  string
}

// notifyReceiver is the webhook endpoint of the replicas' "ops" sink. It
// verifies every request's HMAC and timestamp. While hold is set it
// answers nothing: it reports the request on held and keeps it open
// until the sender goes away.
type notifyReceiver struct {
	key  []byte
	held chan delivery

	mu   sync.Mutex
	hold bool
	got  []delivery // answered 200
	bad  []string
}

func (h *notifyReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var b alert.WebhookBody
	err := alert.VerifyWebhook(h.key, r.Header, body, time.Now(), 5*time.Minute)
	if err == nil {
		err = json.Unmarshal(body, &b)
	}
	d := delivery{from: strings.TrimPrefix(r.URL.Path, "/"), id: b.ID, key: b.Key()}
	h.mu.Lock()
	if err != nil {
		h.bad = append(h.bad, err.Error())
		h.mu.Unlock()
		http.Error(w, "refused", http.StatusUnauthorized)
		return
	}
	if h.hold {
		h.mu.Unlock()
		h.held <- d
		<-r.Context().Done() // the sender died (or gave up)
		return
	}
	h.got = append(h.got, d)
	h.mu.Unlock()
}

func (h *notifyReceiver) deliveries() ([]delivery, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]delivery(nil), h.got...), append([]string(nil), h.bad...)
}

var enqueuedRe = regexp.MustCompile(`(?m)^steward_hub_notifications_enqueued_total\{outcome="(queued|deduplicated)"\} (\d+)$`)

// TestNotificationsAcrossReplicas: two `steward hub` processes on one
// PostgreSQL database with one notification config (but for the path of
// the webhook, which tells the receiver which replica sent a message).
//
// Dedup: hosts fall silent; both replicas' sweeps see it and raise
// host.silent for each, and the receiver gets one message per host, not
// one per replica. No loss: a host.blocked message is being sent by one
// replica when that replica is SIGKILLed (the receiver holds the request
// open); the other sends it once the lease runs out, with the same
// delivery id.
func TestNotificationsAcrossReplicas(t *testing.T) {
	bin := buildSteward(t)
	db := pgtest.NewDatabase(t)
	rcv := &notifyReceiver{key: []byte("replica-hmac-key"), held: make(chan delivery, 4)}
	srv := httptest.NewServer(rcv)
	defer srv.Close()

	dir := t.TempDir()
	names := []string{"A", "B"}
	cfgs := map[string]string{}
	for _, n := range names {
		cfgs[n] = filepath.Join(dir, "notify-"+n+".yaml")
		if err := os.WriteFile(cfgs[n], []byte(`silent_intervals: 3
sinks:
  ops: {type: webhook, url: "`+srv.URL+`/`+n+`", secret: {value: replica-hmac-key}}
rules:
  - events: [host.silent, host.blocked]
    sinks: [ops]
`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tlsDir := filepath.Join(dir, "a")
	common := []string{"--store", db, "--poll-interval", "1s", "--report-budget", "0", "--notify-lease", "4s"}
	reps := map[string]*replica{
		"A": {t: t, bin: bin, args: append(append([]string{}, common...), "--data-dir", tlsDir, "--notify-config", cfgs["A"])},
	}
	reps["A"].start()
	reps["B"] = &replica{t: t, bin: bin, args: append(append([]string{}, common...), "--notify-config", cfgs["B"],
		"--tls-cert", filepath.Join(tlsDir, "tls.crt"), "--tls-key", filepath.Join(tlsDir, "tls.key"))}
	reps["B"].start()
	fp := regexp.MustCompile(`Fingerprint: (\S+)`).FindStringSubmatch(reps["A"].output())
	tokb, err := os.ReadFile(filepath.Join(tlsDir, "admin-token"))
	if fp == nil || err != nil {
		t.Fatalf("replica A printed no fingerprint or wrote no token (%v):\n%s", err, reps["A"].output())
	}
	opTok := strings.TrimSpace(string(tokb))
	client := func(rep, token string) *hubclient.Client {
		c, err := hubclient.New(hubclient.Options{URL: reps[rep].url(), Fingerprint: fp[1], Token: token})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := t.Context()
	op := map[string]*hubclient.Client{"A": client("A", opTok), "B": client("B", opTok)}
	enqueued := func(rep string) (queued, dedup int) {
		resp, err := op[rep].Do(ctx, hubclient.Request{Method: http.MethodGet, Path: "/metrics"})
		if err != nil || resp.Status != http.StatusOK {
			t.Fatalf("replica %s /metrics: %v %v", rep, resp, err)
		}
		for _, m := range enqueuedRe.FindAllStringSubmatch(string(resp.Body), -1) {
			n, _ := strconv.Atoi(m[2])
			if m[1] == "queued" {
				queued = n
			} else {
				dedup = n
			}
		}
		return queued, dedup
	}

	// Hosts enrolled through A report once through B, then fall silent.
	const n = 4
	for i := range n {
		host := fmt.Sprintf("pve-%d", i)
		var jt struct {
			JoinToken string `json:"join_token"`
		}
		if err := op["A"].JSON(ctx, http.MethodPost, "/v1/hosts/"+host+"/join-token", nil, nil, &jt); err != nil {
			t.Fatal(err)
		}
		var er wire.EnrollResponse
		if err := client("B", "").JSON(ctx, http.MethodPost, "/v1/enroll", nil, map[string]string{"join_token": jt.JoinToken}, &er); err != nil {
			t.Fatal(err)
		}
		body, err := wire.EncodeReport(wire.Report{Host: host, Time: time.Now().UTC(), Facts: wire.Facts{Node: host}, Guests: []wire.Guest{}})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client("B", er.Token).Do(ctx, hubclient.Request{Method: http.MethodPost, Path: "/v1/agent/hosts/" + host + "/report", Body: body})
		if err != nil || resp.Status != http.StatusOK {
			t.Fatalf("%s's report: %v %v", host, resp, err)
		}
	}
	// Each replica raises each host's silence exactly once (queued, or
	// dropped as the other's duplicate); the outbox stores one of each.
	proctest.Eventually(t, "both replicas raising host.silent for every host", func() bool {
		for _, r := range names {
			if q, d := enqueued(r); q+d < n {
				return false
			}
		}
		got, _ := rcv.deliveries()
		return len(got) >= n
	}, func() string {
		qa, da := enqueued("A")
		qb, db := enqueued("B")
		got, bad := rcv.deliveries()
		return fmt.Sprintf("A queued %d, deduplicated %d; B queued %d, deduplicated %d; received %v; refused %v", qa, da, qb, db, got, bad)
	})
	qa, da := enqueued("A")
	qb, dbl := enqueued("B")
	if qa+da != n || qb+dbl != n || qa+qb != n {
		got, _ := rcv.deliveries()
		t.Fatalf("enqueued: A queued %d, deduplicated %d; B queued %d, deduplicated %d; want each replica %d in all and %d queued between them; received %v", qa, da, qb, dbl, n, n, got)
	}
	got, bad := rcv.deliveries()
	keys, ids := map[string]bool{}, map[int64]bool{}
	for _, d := range got {
		if !strings.HasPrefix(d.key, "host.silent/pve-") || keys[d.key] || ids[d.id] {
			t.Fatalf("deliveries %v: want one host.silent per host", got)
		}
		keys[d.key], ids[d.id] = true, true
	}
	if len(got) != n || len(bad) > 0 {
		t.Fatalf("deliveries %v, refused %v; want %d, each once", got, bad, n)
	}

	// No loss: the receiver holds the next message open; the replica
	// sending it is killed mid-send.
	rcv.mu.Lock()
	rcv.hold = true
	rcv.mu.Unlock()
	if err := op["A"].JSON(ctx, http.MethodPost, "/v1/hosts/pve-0/block", nil, map[string]string{"reason": "disk swap"}, nil); err != nil {
		t.Fatal(err)
	}
	var first delivery
	select {
	case first = <-rcv.held:
	case <-ctx.Done():
		t.Fatal("the host.blocked message never reached the receiver")
	}
	rcv.mu.Lock()
	rcv.hold = false
	rcv.mu.Unlock()
	if !strings.HasPrefix(first.key, "host.blocked/pve-0") || reps[first.from] == nil {
		t.Fatalf("held: %+v; want host.blocked from a replica", first)
	}
	reps[first.from].kill()
	survivor := "A"
	if first.from == "A" {
		survivor = "B"
	}
	proctest.Eventually(t, "the host.blocked message sent by the surviving replica", func() bool {
		got, _ := rcv.deliveries()
		return len(got) > n
	}, func() string { got, bad := rcv.deliveries(); return fmt.Sprintf("received %v; refused %v", got, bad) })
	got, bad = rcv.deliveries()
	if len(got) != n+1 || len(bad) > 0 {
		t.Fatalf("deliveries %v, refused %v; want the host.blocked message once more", got, bad)
	}
	if last := got[n]; last.id != first.id || last.key != first.key || last.from != survivor {
		t.Fatalf("after the kill: %+v; want message %d (%s) from replica %s", last, first.id, first.key, survivor)
	}
	// The outbox shows it delivered, after the two attempts (the survivor
	// acknowledges it once it has read the receiver's answer).
	type entry struct {
		ID       int64  `json:"id"`
		State    string `json:"state"`
		Attempts int    `json:"attempts"`
	}
	var out struct {
		Notifications []entry `json:"notifications"`
	}
	proctest.Eventually(t, "the outbox showing every message delivered", func() bool {
		if err := op[survivor].JSON(ctx, http.MethodGet, "/v1/notifications", nil, nil, &out); err != nil {
			t.Fatal(err)
		}
		for _, x := range out.Notifications {
			if x.State != "delivered" {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("outbox: %+v", out.Notifications) })
	for _, x := range out.Notifications {
		if x.ID == first.id && x.Attempts != 2 || x.ID != first.id && x.Attempts != 1 {
			t.Fatalf("outbox: %+v; want message %d after 2 attempts, the others after 1", out.Notifications, first.id)
		}
	}
	if len(out.Notifications) != n+1 {
		t.Fatalf("outbox: %+v; want %d messages", out.Notifications, n+1)
	}
}
