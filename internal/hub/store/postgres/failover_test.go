package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/pgtest"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
	"github.com/steward-pve/steward/internal/wire"
)

// node is one hub replica serving on a fixed loopback address.
type node struct {
	t    *testing.T
	db   string
	addr string

	mu  sync.Mutex
	st  *Store
	h   *hub.Server
	srv *http.Server
}

// start starts the replica (again) on its address; it may run on any
// goroutine, so it reports failures with t.Error.
func (n *node) start() {
	var ln net.Listener
	var err error
	for range 50 { // the address of a killed replica can take a moment to free
		if ln, err = net.Listen("tcp", n.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		n.t.Errorf("restarting the replica on %s: %v", n.addr, err)
		return
	}
	st, err := Open(n.t.Context(), n.db, Options{})
	if err != nil {
		ln.Close()
		n.t.Errorf("restarting the replica: %v", err)
		return
	}
	h := hub.New(st, hub.Options{Notifier: st.Notifier(), Recheck: 500 * time.Millisecond})
	srv := &http.Server{Handler: h.Handler()}
	go srv.Serve(ln)
	n.mu.Lock()
	n.st, n.h, n.srv, n.addr = st, h, srv, ln.Addr().String()
	n.mu.Unlock()
}

// kill stops the replica as a crash looks from outside: its listener and
// every connection close at once, held long-polls get no answer.
func (n *node) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return
	}
	n.srv.Close()
	n.h.Shutdown()
	n.st.Close()
	n.srv = nil
}

func (n *node) url() string { n.mu.Lock(); defer n.mu.Unlock(); return "http://" + n.addr }

// fleetClient talks to whichever replica answers, moving to the next on
// a connection error or a 5xx.
type fleetClient struct {
	c     *http.Client
	nodes []*node
}

func (f *fleetClient) do(ctx context.Context, start int, method, path, tok string, body []byte, hdr ...string) (int, []byte, error) {
	var last error
	for i := range len(f.nodes) * 20 {
		if ctx.Err() != nil {
			return 0, nil, ctx.Err()
		}
		n := f.nodes[(start+i)%len(f.nodes)]
		req, _ := http.NewRequestWithContext(ctx, method, n.url()+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		for j := 0; j+1 < len(hdr); j += 2 {
			req.Header.Set(hdr[j], hdr[j+1])
		}
		resp, err := f.c.Do(req)
		if err != nil {
			last = err
			time.Sleep(10 * time.Millisecond)
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode >= 500 {
			last = fmt.Errorf("%s %s: %d %s %v", method, path, resp.StatusCode, b, err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		return resp.StatusCode, b, nil
	}
	return 0, nil, fmt.Errorf("no replica answered %s %s: %w", method, path, last)
}

func fleetDoc(host string, round int) []byte {
	return fmt.Appendf(nil, "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  %s:\n    guests:\n      101:\n        kind: lxc\n        config:\n          cores: %d\n", host, round)
}

// TestReplicasFailover: three replicas on one database, agents (protocol
// clients) spread across them; desired changes through each replica, one
// replica killed and another restarted mid-way. Every agent reaches the
// last generation, no generation is lost or stored twice, every job
// result is kept, and a job whose result a replica acknowledged is never
// offered as waiting again by any replica.
func TestReplicasFailover(t *testing.T) {
	db := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	nodes := make([]*node, 3)
	for i := range nodes {
		nodes[i] = &node{t: t, db: db, addr: "127.0.0.1:0"}
		nodes[i].start()
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.kill()
		}
	})
	st := nodes[0].st
	const hosts, rounds = 50, 4
	opTok := hub.NewToken("stwo_")
	if err := st.CreateOperator(ctx, "alice", store.HashToken(opTok)); err != nil {
		t.Fatal(err)
	}
	names := make([]string, hosts)
	toks := make([]string, hosts)
	for i := range hosts {
		names[i], toks[i] = fmt.Sprintf("pve-%02d", i), hub.NewToken("stwh_")
		if err := st.CreateJoinToken(ctx, names[i], store.HashToken("j"+names[i]), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Enroll(ctx, store.HashToken("j"+names[i]), store.HashToken(toks[i])); err != nil {
			t.Fatal(err)
		}
	}
	fc := &fleetClient{c: &http.Client{Timeout: 20 * time.Second}, nodes: nodes}

	// The agents.
	var (
		amu      sync.Mutex
		acked    = map[string]bool{} // job ids whose result a replica acknowledged
		offended []string
	)
	var agents sync.WaitGroup
	agentErr := make([]error, hosts)
	for i := range hosts {
		agents.Go(func() {
			host, tok := names[i], toks[i]
			var gen int64
			jobDone := false
			for ctx.Err() == nil && (gen < rounds || !jobDone) {
				code, b, err := fc.do(ctx, i, "GET", "/v1/agent/hosts/"+host+"/desired?after="+strconv.FormatInt(gen, 10)+"&wait=1s", tok, nil)
				if err != nil || code != 200 {
					agentErr[i] = fmt.Errorf("%s: desired: %d %s %v", host, code, b, err)
					return
				}
				var d wire.Desired
				if err := json.Unmarshal(b, &d); err != nil || d.Generation < gen {
					agentErr[i] = fmt.Errorf("%s: desired went from %d to %s (%v)", host, gen, b, err)
					return
				}
				gen = d.Generation
				code, b, err = fc.do(ctx, i, "GET", "/v1/agent/hosts/"+host+"/jobs", tok, nil)
				if err != nil || code != 200 {
					agentErr[i] = fmt.Errorf("%s: jobs: %d %s %v", host, code, b, err)
					return
				}
				var jobs struct{ Jobs []hub.JobJSON }
				json.Unmarshal(b, &jobs)
				for _, j := range jobs.Jobs {
					amu.Lock()
					if acked[j.ID] {
						offended = append(offended, host+" "+j.ID)
					}
					amu.Unlock()
					res, _ := json.Marshal(wire.JobResults{Host: host, Results: []wire.JobResult{{Job: j.ID, State: wire.JobDone}}})
					code, b, err := fc.do(ctx, i+1, "POST", "/v1/agent/hosts/"+host+"/job-results", tok, res)
					if err != nil || code != 200 {
						agentErr[i] = fmt.Errorf("%s: job result: %d %s %v", host, code, b, err)
						return
					}
					amu.Lock()
					acked[j.ID] = true
					amu.Unlock()
					jobDone = true
				}
			}
			if ctx.Err() != nil {
				agentErr[i] = fmt.Errorf("%s: stopped at generation %d (job done: %v): %w", host, gen, jobDone, ctx.Err())
			}
		})
	}

	// The operator: every round through another replica.
	key := signedoptest.NewKey(t, signedoptest.Ed25519)
	for round := 1; round <= rounds; round++ {
		var puts sync.WaitGroup
		if round == 3 {
			// Mid-round, with PUTs and long-polls in flight.
			puts.Go(func() {
				time.Sleep(5 * time.Millisecond)
				nodes[0].kill() // and stays dead
				nodes[1].kill()
				nodes[1].start() // restarted on its address
			})
		}
		for i, host := range names {
			puts.Go(func() {
				start := round + i
				code, b, err := fc.do(ctx, start, "PUT", "/v1/hosts/"+host+"/desired", opTok, fleetDoc(host, round), "If-Match", strconv.Itoa(round-1))
				if code == http.StatusPreconditionFailed {
					// The PUT committed but its answer was lost with a
					// killed replica: the retry finds its own generation.
					var d wire.Desired
					_, b2, _ := fc.do(ctx, start, "GET", "/v1/hosts/"+host+"/desired", opTok, nil)
					if json.Unmarshal(b2, &d) == nil && d.Generation == int64(round) {
						return
					}
				}
				if err != nil || code != 200 {
					t.Errorf("round %d PUT %s: %d %s %v", round, host, code, b, err)
				}
			})
		}
		puts.Wait()
		if t.Failed() {
			t.FailNow()
		}
		if round == 2 {
			for i, host := range names {
				p, err := signedop.NewPayload(host, action.Action{Op: action.Start, VMID: 101, Kind: guest.LXC}, time.Now(), time.Hour, "failover test")
				if err != nil {
					t.Fatal(err)
				}
				sig, err := signedop.Sign(p.Canonical(), key.Signer)
				if err != nil {
					t.Fatal(err)
				}
				up, _ := json.Marshal(hub.JobJSON{Payload: p.Canonical(), Signatures: [][]byte{sig}})
				code, b, err := fc.do(ctx, i+2, "POST", "/v1/hosts/"+host+"/jobs", opTok, up)
				if err != nil || (code != 200 && code != http.StatusConflict) {
					t.Fatalf("job upload for %s: %d %s %v", host, code, b, err)
				}
			}
		}
	}
	agents.Wait()
	for _, err := range agentErr {
		if err != nil {
			t.Error(err)
		}
	}
	if len(offended) > 0 {
		t.Errorf("jobs offered as waiting after their result was acknowledged: %v", offended)
	}
	st = nodes[2].st
	for _, host := range names {
		hist, err := st.DesiredHistory(context.Background(), host, 100)
		if err != nil || len(hist) != rounds {
			t.Fatalf("%s: %d generations, %v; want exactly %d (none lost, none twice)", host, len(hist), err, rounds)
		}
		for _, d := range hist {
			var doc struct {
				Hosts map[string]struct {
					Guests map[string]struct{ Config map[string]any }
				}
			}
			err := json.Unmarshal(d.Document, &doc)
			if got := fmt.Sprint(doc.Hosts[host].Guests["101"].Config["cores"]); err != nil || got != strconv.FormatInt(d.Generation, 10) {
				t.Fatalf("%s generation %d holds %s; want round %d's document", host, d.Generation, d.Document, d.Generation)
			}
		}
		jobs, err := st.Jobs(context.Background(), host, "")
		if err != nil || len(jobs) != 1 || jobs[0].State != store.JobDone {
			t.Fatalf("%s: jobs %+v, %v; want one, done", host, jobs, err)
		}
	}
}
