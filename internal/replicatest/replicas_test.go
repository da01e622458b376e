package replicatest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/agent"
	"github.com/steward-pve/steward/internal/allowedsigners"
	"github.com/steward-pve/steward/internal/backoff"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store/pgtest"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/proctest"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/sim/simtest"
	"github.com/steward-pve/steward/internal/wire"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// replica is one `steward hub` process; its address stays the same
// across restarts.
type replica struct {
	t    *testing.T
	bin  string
	args []string
	addr string // host:port, known once it served

	p *proctest.Proc // the running (or last) process
}

// start runs the replica and waits until it serves.
func (r *replica) start() {
	r.t.Helper()
	listen := "127.0.0.1:0"
	if r.addr != "" {
		listen = r.addr
	}
	r.p = proctest.Start(r.t, "hub replica", r.bin, nil, append(append([]string{"hub"}, r.args...), "--listen", listen)...)
	r.addr = r.p.Line(r.t, `URL: +https://(\S+)`)
}

// kill SIGKILLs the replica (its whole process group) and waits for it.
func (r *replica) kill() {
	if r.p != nil {
		r.p.Kill(syscall.SIGKILL)
	}
}

func (r *replica) url() string { return "https://" + r.addr }

// output is what the replica's current (or last) process printed.
func (r *replica) output() string { return r.p.Out.String() }

// buildSteward builds the steward command (without the race detector:
// the replicas are the system under test, not this process).
func buildSteward(t *testing.T) string {
	bin, err := proctest.Build(t.TempDir(), "steward", "github.com/steward-pve/steward/cmd/steward")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// host is one Proxmox host: its simulator and its agent.
type host struct {
	name   string
	sim    *simtest.Server
	cancel context.CancelFunc
	done   chan error
}

const (
	hosts  = 50
	rounds = 4
	disk0  = "local-lvm:vm-101-disk-0,size=8G"
)

func fleetYAML(name string, round int) string {
	return fmt.Sprintf("apiVersion: steward/v1\nkind: Fleet\nhosts:\n  %s:\n    guests:\n      101:\n        kind: qemu\n        config: {cores: %d}\n", name, round+1)
}

// TestReplicasEndToEnd: three hub replicas (processes) on one PostgreSQL
// database, fifty real agents (in-process, each against its own
// simulator) listing all three URLs. Desired state changes four times,
// each round through every replica; each host gets a signed job. During
// round 3 one replica is SIGKILLed for good and, after it, another is
// SIGKILLed and restarted on its address. Every agent converges to the
// last generation; the hub holds exactly the four generations of every
// host; every job is done on the hub and ran exactly once on its host's
// simulator.
//
// The agents run in this process (agent.New, the agent's real code and
// state directory), not as fifty processes: fifty agent processes and
// fifty simulator processes would outweigh what is under test, the hub
// replicas and the agents' failover, on a two-core machine.
func TestReplicasEndToEnd(t *testing.T) {
	t0 := time.Now()
	phase := func(what string) { t.Logf("%6.1fs %s", time.Since(t0).Seconds(), what) }
	bin := buildSteward(t)
	db := pgtest.NewDatabase(t)
	phase("steward built, database made")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	// Replica 0 makes the certificate; 1 and 2 serve the same one, so
	// agents pin one fingerprint for all three.
	tlsDir := t.TempDir()
	common := []string{"--store", db, "--poll-interval", "1s", "--report-budget", "0"}
	reps := make([]*replica, 3)
	reps[0] = &replica{t: t, bin: bin, args: append(common, "--data-dir", tlsDir)}
	reps[0].start()
	t.Cleanup(func() {
		for _, r := range reps {
			r.kill()
		}
	})
	fp := regexp.MustCompile(`Fingerprint: (\S+)`).FindStringSubmatch(reps[0].output())
	if fp == nil {
		t.Fatalf("replica 0 printed no fingerprint:\n%s", reps[0].output())
	}
	// Replica 0 (the one with a data directory) wrote the first operator
	// token there.
	b, err := os.ReadFile(filepath.Join(tlsDir, "admin-token"))
	if err != nil {
		t.Fatalf("replica 0 made no operator token: %v\n%s", err, reps[0].output())
	}
	tok := []string{"", strings.TrimSpace(string(b))}
	for i := 1; i < 3; i++ {
		reps[i] = &replica{t: t, bin: bin, args: append(common, "--tls-cert", filepath.Join(tlsDir, "tls.crt"), "--tls-key", filepath.Join(tlsDir, "tls.key"))}
		reps[i].start()
	}
	urls := make([]string, 3)
	for i, r := range reps {
		urls[i] = r.url()
	}
	all := strings.Join(urls, ",")
	op, err := hubclient.New(hubclient.Options{URL: all, Fingerprint: fp[1], Token: tok[1]})
	if err != nil {
		t.Fatal(err)
	}
	// opAt talks to one replica first (each operator call names the
	// replica it goes through), moving on only when it is down.
	opAt := func(i int) *hubclient.Client {
		c, err := hubclient.New(hubclient.Options{URL: strings.Join(append(urls[i%3:], urls[:i%3]...), ","), Fingerprint: fp[1], Token: tok[1]})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	// The hosts: a simulator each with guest 101 (managed) and 102 (the
	// signed job destroys it), and an agent enrolled through replica
	// i%3 that lists all three replicas.
	env := signedoptest.NewEnv(t)
	signers, err := allowedsigners.Parse(strings.NewReader(env.AllowedSigners))
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(&proctest.Buffer{}, nil))
	hs := make([]*host, hosts)
	for i := range hs {
		h := &host{name: fmt.Sprintf("pve-%02d", i), done: make(chan error, 1)}
		hs[i] = h
		h.sim = simtest.Start(t, sim.Options{TaskDuration: time.Millisecond})
		for _, g := range []sim.GuestSpec{
			{VMID: 101, Kind: guest.QEMU, Name: "web", Config: map[string]string{"cores": "1", "scsi0": disk0}},
			{VMID: 102, Kind: guest.QEMU, Name: "scratch", Config: map[string]string{"cores": "1"}},
		} {
			if err := h.sim.Sim.AddGuest(g); err != nil {
				t.Fatal(err)
			}
		}
		var jt struct {
			JoinToken string `json:"join_token"`
		}
		if err := opAt(i).JSON(ctx, http.MethodPost, "/v1/hosts/"+h.name+"/join-token", nil, nil, &jt); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		client, e, err := agent.Connect(ctx, agent.ConnectOptions{StateDir: dir, URL: all, Fingerprint: fp[1], JoinToken: jt.JoinToken, Logger: logger})
		if err != nil {
			t.Fatalf("%s: enrolling: %v", h.name, err)
		}
		hb, err := agent.NewHub(agent.HubOptions{Client: client, Host: e.Host, Wait: 20 * time.Second, RequestTimeout: 20 * time.Second,
			Backoff: backoff.Policy{Initial: 50 * time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: 0.5}, MinInterval: time.Second, Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		ptok, err := pve.ParseToken(h.sim.Token)
		if err != nil {
			t.Fatal(err)
		}
		pc, err := pve.New(pve.Options{URL: h.sim.URL, Token: ptok, HTTPClient: h.sim.Client})
		if err != nil {
			t.Fatal(err)
		}
		a, err := agent.New(agent.Config{Node: h.sim.Sim.Node(), PVE: pc, TaskUser: ptok.ID, StateDir: dir, Hub: hb, Signers: signers,
			Interval: time.Second, TaskWait: pve.WaitOptions{Initial: time.Millisecond, Max: 5 * time.Millisecond}, Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		actx, acancel := context.WithCancel(context.Background())
		h.cancel = acancel
		go func() { h.done <- a.Run(actx) }()
	}
	t.Cleanup(func() {
		for _, h := range hs {
			h.cancel()
			if err := <-h.done; err != nil {
				t.Errorf("%s: agent.Run: %v", h.name, err)
			}
		}
	})

	// put stores round's document for host i through replica start,
	// expecting generation round. A PUT whose answer was lost with a
	// killed replica may have committed: the retry's 412 is then checked
	// to be this very document.
	put := func(i, round, start int) error {
		name := hs[i].name
		for attempt := 0; ; attempt++ {
			c := opAt(start + attempt)
			resp, err := c.Do(ctx, hubclient.Request{Method: http.MethodPut, Path: "/v1/hosts/" + name + "/desired", Body: []byte(fleetYAML(name, round)),
				Header: http.Header{"Content-Type": {"application/yaml"}, "If-Match": {strconv.Itoa(round - 1)}}})
			if err == nil && resp.Status == http.StatusOK {
				return nil
			}
			if err == nil && resp.Status == http.StatusPreconditionFailed {
				var d struct {
					Generation int64 `json:"generation"`
				}
				if err := c.JSON(ctx, http.MethodGet, "/v1/hosts/"+name+"/desired", nil, nil, &d); err == nil && d.Generation == int64(round) {
					return nil
				}
			}
			if err == nil {
				err = resp.Err(http.MethodPut, "desired")
			}
			if attempt >= 20 || ctx.Err() != nil {
				return fmt.Errorf("round %d PUT %s: %w", round, name, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	putRound := func(round int) {
		var wg sync.WaitGroup
		errs := make([]error, hosts)
		for i := range hs {
			wg.Go(func() { errs[i] = put(i, round, round+i) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	}
	converged := func(round int) func() bool {
		want := strconv.Itoa(round + 1)
		return func() bool {
			for _, h := range hs {
				if g, ok := h.sim.Sim.Guest(101); !ok || g.Config["cores"] != want {
					return false
				}
			}
			return true
		}
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("gave up waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	phase("3 replicas serving, 50 agents enrolled and running")
	putRound(1)
	eventually("every agent at round 1", converged(1))
	phase("every agent at round 1")

	// A signed job per host (destroy guest 102 at its config digest),
	// uploaded through every replica in turn.
	jobIDs := make([]string, hosts)
	for i, h := range hs {
		g, _ := h.sim.Sim.Guest(102)
		p, err := signedop.NewPayload(h.name, action.Action{Op: action.Destroy, VMID: 102, Kind: guest.QEMU,
			Params: map[string]string{"purge": "1", "destroy-unreferenced-disks": "1"}, Digest: g.Digest}, time.Now().Add(-time.Minute), time.Hour, "replicas test")
		if err != nil {
			t.Fatal(err)
		}
		payload := p.Canonical()
		var out struct {
			ID string `json:"id"`
		}
		if err := opAt(i).JSON(ctx, http.MethodPost, "/v1/hosts/"+h.name+"/jobs", nil, hub.JobJSON{Payload: payload, Signatures: [][]byte{env.Sign(payload, env.Alice.Signer)}}, &out); err != nil {
			t.Fatalf("%s: uploading the job: %v", h.name, err)
		}
		jobIDs[i] = out.ID
	}
	putRound(2)

	// Round 3 with the failures in flight: replica 0 SIGKILLed for good,
	// then replica 1 SIGKILLed and restarted on its address.
	var chaos sync.WaitGroup
	chaos.Go(func() {
		reps[0].kill()
		reps[1].kill()
	})
	putRound(3)
	chaos.Wait()
	reps[1].start()
	putRound(4)
	phase("rounds 2-4 stored, replica 0 killed, replica 1 killed and restarted")

	eventually("every agent at round 4", converged(4))
	phase("every agent at round 4")
	for i, h := range hs {
		eventually(h.name+"'s job done on the hub and its report at generation 4", func() bool {
			var js struct {
				Jobs []hub.JobJSON `json:"jobs"`
			}
			var hj hub.HostJSON
			if op.JSON(ctx, http.MethodGet, "/v1/hosts/"+h.name+"/jobs", nil, nil, &js) != nil ||
				op.JSON(ctx, http.MethodGet, "/v1/hosts/"+h.name, nil, nil, &hj) != nil {
				return false
			}
			rep, err := wire.DecodeReport(hj.Report)
			return err == nil && rep.DesiredGeneration == rounds && len(js.Jobs) == 1 && js.Jobs[0].ID == jobIDs[i] && js.Jobs[0].State == wire.JobDone
		})
	}

	phase("every job done on the hub, every report at generation 4")

	// No generation lost or stored twice, each holding its round's
	// document; every job ran exactly once; the managed guest was only
	// ever written with the rounds' values.
	for _, h := range hs {
		var hist struct {
			History []struct {
				Generation int64           `json:"generation"`
				Document   json.RawMessage `json:"document"`
			} `json:"history"`
		}
		if err := op.JSON(ctx, http.MethodGet, "/v1/hosts/"+h.name+"/desired/history", nil, nil, &hist); err != nil {
			t.Fatal(err)
		}
		if len(hist.History) != rounds {
			t.Fatalf("%s: %d generations on the hub; want %d (none lost, none twice)", h.name, len(hist.History), rounds)
		}
		for _, d := range hist.History {
			if want := fmt.Sprintf(`"cores":"%d"`, d.Generation+1); !strings.Contains(string(d.Document), want) {
				t.Errorf("%s: generation %d holds %s; want round %d's document (%s)", h.name, d.Generation, d.Document, d.Generation, want)
			}
		}
		destroys := 0
		for _, m := range h.sim.Sim.Mutations() {
			switch {
			case m.VMID == 102 && m.Op == "destroy":
				destroys++
			case m.VMID == 102:
				t.Errorf("%s: unexpected mutation of guest 102: %+v", h.name, m)
			case m.VMID == 101 && m.Op == "config":
				if c, err := strconv.Atoi(m.Params["cores"]); err != nil || c < 2 || c > rounds+1 {
					t.Errorf("%s: guest 101 written with %v; want a round's cores", h.name, m.Params)
				}
			default:
				t.Errorf("%s: unexpected mutation: %+v", h.name, m)
			}
		}
		if destroys != 1 {
			t.Errorf("%s: the signed destroy ran %d times; want exactly once", h.name, destroys)
		}
		if _, ok := h.sim.Sim.Guest(102); ok {
			t.Errorf("%s: guest 102 still exists", h.name)
		}
	}
	// The restarted replica serves on its own (agents need not move back
	// to it: they stay on the replica that answers).
	only1, err := hubclient.New(hubclient.Options{URL: urls[1], Fingerprint: fp[1], Token: tok[1]})
	if err != nil {
		t.Fatal(err)
	}
	if err := only1.JSON(ctx, http.MethodGet, "/v1/hosts", nil, nil, nil); err != nil {
		t.Fatalf("the restarted replica: %v", err)
	}
}
