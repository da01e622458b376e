package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/wire"
)

// Each simulated agent is a hubclient.Client of its own (the agent's
// transport: TLS pinned to the hub's fingerprint, HTTP/2, pings on idle
// connections), dialing from its own loopback address, so it holds one
// connection for its reports and its long-poll, as a real agent does.

// sourceAddr is agent i's source address in 127.0.0.0/8 (127.1.0.2 on);
// probes use 127.250.x.y.
func sourceAddr(i int) net.IP {
	return net.IPv4(127, byte(1+i/60000), byte(i/250%240), byte(2+i%250))
}

// newClient returns a hub client with the agent's transport, dialing
// from src; token may be empty.
func newClient(base, fingerprint, token string, src net.IP) (*hubclient.Client, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return hubclient.New(hubclient.Options{URL: base, Fingerprint: fingerprint, Token: token, DialContext: d.DialContext, UserAgent: "hubload"})
}

// simAgent is one simulated agent.
type simAgent struct {
	i     int
	id    string
	c     *hubclient.Client // with its host token
	gen   atomic.Int64      // desired generation held
	ticks atomic.Int64      // reports and heartbeats sent since enrolling

	// Touched by its report loop only (and enroll before it starts).
	v    int // report version: a changed report bumps it
	body []byte
	hash string
}

// setReport builds the agent's report, version a.v.
func (a *simAgent) setReport(guests int) {
	a.body, _ = wire.EncodeReport(report(a.id, guests, a.v))
	a.hash = hub.ReportHash(a.body)
}

// report builds a realistic report of host with n guests (two thirds
// managed, with their managed config and sync status; a third unmanaged,
// with the observed config an import would adopt); v varies it.
func report(host string, n, v int) wire.Report {
	r := wire.Report{Host: host, Time: time.Now().UTC().Truncate(time.Second), DesiredGeneration: int64(v),
		Facts: wire.Facts{Node: host, AgentVersion: "hubload"}}
	for i := range n {
		vmid := 100 + i
		kind := "qemu"
		if i%3 == 0 {
			kind = "lxc"
		}
		g := wire.Guest{VMID: vmid, Kind: kind, Name: fmt.Sprintf("guest-%d-%d", vmid, v), Status: "running",
			Digest: fmt.Sprintf("%040x", vmid*7919+v)}
		if i%3 != 2 {
			g.Config = map[string]string{"cores": "2", "memory": "4096", "onboot": "1", "name": fmt.Sprintf("guest-%d", vmid),
				"net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1", "tags": "prod;web", "description": "managed by steward\n"}
			r.Sync = append(r.Sync, wire.Sync{VMID: vmid, Phase: wire.PhaseInSync})
		} else {
			g.Observed = map[string]string{"cores": "4", "sockets": "1", "memory": "8192", "name": fmt.Sprintf("legacy-%d", vmid),
				"boot": "order=scsi0;net0", "scsi0": fmt.Sprintf("local-lvm:vm-%d-disk-0,size=32G", vmid), "scsihw": "virtio-scsi-single",
				"net0": "virtio=BC:24:11:00:00:02,bridge=vmbr0", "ostype": "l26", "tags": "legacy", "description": "imported by hand years ago"}
		}
		r.Guests = append(r.Guests, g)
	}
	return r
}

// hist collects latencies.
type hist struct {
	mu sync.Mutex
	d  []time.Duration
}

func (h *hist) add(d time.Duration) { h.mu.Lock(); h.d = append(h.d, d); h.mu.Unlock() }

// q returns the p quantile (0 without samples).
func (h *hist) q(p float64) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.d) == 0 {
		return 0
	}
	slices.Sort(h.d)
	return h.d[min(len(h.d)-1, int(p*float64(len(h.d))))]
}

func (h *hist) n() int { h.mu.Lock(); defer h.mu.Unlock(); return len(h.d) }

func (h *hist) summary() string {
	if h.n() == 0 {
		return "no samples"
	}
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	return fmt.Sprintf("n=%d p50=%v p90=%v p99=%v max=%v", h.n(), r(h.q(0.5)), r(h.q(0.9)), r(h.q(0.99)), r(h.q(1)))
}

// window collects what the requests started within it measured.
type window struct {
	start time.Time
	hb    hist // heartbeats
	rep   hist // full reports
	probe hist // GET /healthz probes: the floor at the same moment
	reqs  atomic.Int64
	fulls atomic.Int64
	errs  atomic.Int64
	perrs atomic.Int64 // long-poll errors

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
}

// enter registers a request starting now; false once the window closed.
func (w *window) enter() bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	w.inflight.Add(1)
	return true
}

// close stops taking requests and waits for those in flight.
func (w *window) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.inflight.Wait()
}

// fleet is the simulated agents against one hub set.
type fleet struct {
	hs       *hubSet
	guests   int
	change   float64
	longpoll bool
	conc     int
	ops      []*hubclient.Client // an operator client per replica

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	interval atomic.Int64 // ns
	mu       sync.Mutex
	rephase  chan struct{} // closed when the interval changes

	agents []*simAgent
	win    atomic.Pointer[window]
	sink   atomic.Pointer[chan fetched] // propagation: each new generation fetched
}

type fetched struct {
	i  int
	at time.Time
}

// probes is how many GET /healthz probes run beside the agents, each on
// its own connection, one request a second.
const probes = 2

func newFleet(hs *hubSet, interval time.Duration, guests int, change float64, longpoll bool, conc int) (*fleet, error) {
	f := &fleet{hs: hs, guests: guests, change: change, longpoll: longpoll, conc: conc, rephase: make(chan struct{})}
	f.interval.Store(int64(interval))
	for i, u := range hs.urls {
		c, err := newClient(u, hs.fingerprint, hs.token, net.IPv4(127, 251, 0, byte(2+i)))
		if err != nil {
			return nil, err
		}
		f.ops = append(f.ops, c)
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	for k := range probes {
		c, err := newClient(hs.url(k), hs.fingerprint, "", net.IPv4(127, 250, 0, byte(2+k)))
		if err != nil {
			return nil, err
		}
		f.wg.Go(func() { f.probeLoop(c) })
	}
	return f, nil
}

// stop ends every agent and probe and waits for them.
func (f *fleet) stop() {
	f.cancel()
	f.wg.Wait()
}

// setInterval changes every agent's report interval; each picks a new
// phase within it at once.
func (f *fleet) setInterval(d time.Duration) {
	f.interval.Store(int64(d))
	f.mu.Lock()
	close(f.rephase)
	f.rephase = make(chan struct{})
	f.mu.Unlock()
}

func (f *fleet) phase() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rephase
}

// grow enrolls agents until the fleet has n, conc at a time, each
// sending its first report and then running (reports and long-polls).
func (f *fleet) grow(n int) error {
	from := len(f.agents)
	if n <= from {
		return nil
	}
	as := make([]*simAgent, n-from)
	var next atomic.Int64
	var wg sync.WaitGroup
	var first atomic.Value
	for range min(f.conc, n-from) {
		wg.Go(func() {
			for f.ctx.Err() == nil {
				k := int(next.Add(1)) - 1
				if k >= len(as) {
					return
				}
				a, err := f.enroll(from + k)
				if err != nil {
					first.CompareAndSwap(nil, err)
					f.cancel()
					return
				}
				as[k] = a
				f.wg.Go(func() { f.reportLoop(a) })
				if f.longpoll {
					f.wg.Go(func() { f.pollLoop(a) })
				}
			}
		})
	}
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return fmt.Errorf("enrolling agent: %w", err)
	}
	f.agents = append(f.agents, as...)
	return nil
}

func (f *fleet) op(i int) *hubclient.Client { return f.ops[i%len(f.ops)] }

// enroll makes a join token for agent i (through another replica than
// its own), enrolls it and sends its first report.
func (f *fleet) enroll(i int) (*simAgent, error) {
	ctx, cancel := context.WithTimeout(f.ctx, time.Minute)
	defer cancel()
	a := &simAgent{i: i, id: fmt.Sprintf("pve-%05d", i)}
	var jt struct {
		JoinToken string `json:"join_token"`
	}
	if err := f.op(i+1).JSON(ctx, http.MethodPost, "/v1/hosts/"+a.id+"/join-token", nil, nil, &jt); err != nil {
		return nil, fmt.Errorf("join token for %s: %w", a.id, err)
	}
	c, err := newClient(f.hs.url(i), f.hs.fingerprint, "", sourceAddr(i))
	if err != nil {
		return nil, err
	}
	er, err := c.Enroll(ctx, jt.JoinToken)
	if err != nil {
		return nil, fmt.Errorf("enrolling %s: %w", a.id, err)
	}
	a.c = c.WithToken(er.Token)
	a.setReport(f.guests)
	if _, err := a.c.Report(ctx, a.id, a.body); err != nil {
		return nil, fmt.Errorf("first report of %s: %w", a.id, err)
	}
	return a, nil
}

// reportLoop sends a's reports: at a random phase within the interval,
// then once per interval, a heartbeat naming the last report's hash or,
// with probability f.change (the content changed), the full report; a
// heartbeat the hub cannot match (report_required) is followed by the
// full report, as the agent does.
func (f *fleet) reportLoop(a *simAgent) {
	iv := time.Duration(f.interval.Load())
	next := time.Now().Add(rand.N(iv))
	for {
		re := f.phase()
		t := time.NewTimer(time.Until(next))
		select {
		case <-f.ctx.Done():
			t.Stop()
			return
		case <-re:
			t.Stop()
			iv = time.Duration(f.interval.Load())
			next = time.Now().Add(rand.N(iv))
			continue
		case <-t.C:
		}
		next = next.Add(iv)
		f.tick(a)
	}
}

func (f *fleet) tick(a *simAgent) {
	w := f.win.Load()
	in := w.enter()
	if in {
		defer w.inflight.Done()
	}
	ctx, cancel := context.WithTimeout(f.ctx, time.Minute)
	defer cancel()
	full := rand.Float64() < f.change
	if full {
		a.v++
		a.setReport(f.guests)
	}
	t0 := time.Now()
	var err error
	if !full {
		_, err = a.c.Heartbeat(ctx, a.id, a.hash)
		if hubclient.IsCode(err, hubclient.CodeReportRequired) {
			full, err = true, nil
		}
	}
	if full && err == nil {
		_, err = a.c.Report(ctx, a.id, a.body)
	}
	d := time.Since(t0)
	a.ticks.Add(1)
	if !in || f.ctx.Err() != nil {
		return
	}
	w.reqs.Add(1)
	switch {
	case err != nil:
		w.errs.Add(1)
	case full:
		w.fulls.Add(1)
		w.rep.add(d)
	default:
		w.hb.add(d)
	}
}

// pollLoop holds a's desired long-poll (wait 5m), as the agent does: a
// new one a second after each answer; each newer generation goes to the
// propagation sink when there is one.
func (f *fleet) pollLoop(a *simAgent) {
	const wait = 5 * time.Minute
	for f.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(f.ctx, wait+wait/16+30*time.Second)
		d, err := a.c.Desired(ctx, a.id, a.gen.Load(), wait)
		cancel()
		at := time.Now()
		if f.ctx.Err() != nil {
			return
		}
		if err != nil {
			if w := f.win.Load(); w != nil {
				w.perrs.Add(1)
			}
		} else if d.Generation > a.gen.Load() {
			a.gen.Store(d.Generation)
			if s := f.sink.Load(); s != nil {
				*s <- fetched{a.i, at}
			}
		}
		select {
		case <-f.ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// probeLoop sends GET /healthz once a second on its own connection: the
// latency of a request the hub does nothing for, at the same moment and
// on the same machine as the agents' (the same-run baseline).
func (f *fleet) probeLoop(c *hubclient.Client) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-t.C:
		}
		w := f.win.Load()
		in := w.enter()
		ctx, cancel := context.WithTimeout(f.ctx, time.Minute)
		t0 := time.Now()
		resp, err := c.Do(ctx, hubclient.Request{Method: http.MethodGet, Path: "/healthz"})
		d := time.Since(t0)
		cancel()
		if !in {
			continue
		}
		if err == nil && resp.Status == http.StatusOK {
			w.probe.add(d)
		}
		w.inflight.Done()
	}
}

// heldPolls sums the long-polls every replica holds (its metric).
func (f *fleet) heldPolls() int {
	n := 0
	for _, c := range f.ops {
		v, _ := strconv.ParseFloat(f.scrape(c, "steward_hub_long_polls_held"), 64)
		n += int(v)
	}
	return n
}

// scrape returns the value of one unlabelled metric of the hub c talks to.
func (f *fleet) scrape(c *hubclient.Client, name string) string {
	ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
	defer cancel()
	resp, err := c.Do(ctx, hubclient.Request{Method: http.MethodGet, Path: "/metrics", MaxResponse: 16 << 20})
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(resp.Body), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v
		}
	}
	return "?"
}

// storeOps are the store calls whose mean latency a window reports: the
// per-request token lookup, the sweep's listing of every host, the
// heartbeat flush and the full report's write.
var storeOps = []string{"HostByToken", "Hosts", "TouchHosts", "PutReport"}

// storeStats reads, from replica 0's metrics, the total seconds and count
// of each store call in storeOps.
func (f *fleet) storeStats() map[string][2]float64 {
	out := map[string][2]float64{}
	ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
	defer cancel()
	resp, err := f.ops[0].Do(ctx, hubclient.Request{Method: http.MethodGet, Path: "/metrics", MaxResponse: 16 << 20})
	if err != nil {
		return out
	}
	for _, l := range strings.Split(string(resp.Body), "\n") {
		for _, g := range []string{"go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_goroutines"} {
			if v, ok := strings.CutPrefix(l, g+" "); ok {
				x, _ := strconv.ParseFloat(v, 64)
				out[g] = [2]float64{x}
			}
		}
		for _, op := range storeOps {
			for k, suffix := range []string{"_sum", "_count"} {
				if v, ok := strings.CutPrefix(l, "steward_hub_store_duration_seconds"+suffix+`{op="`+op+`"} `); ok {
					x, _ := strconv.ParseFloat(v, 64)
					e := out[op]
					e[k] = x
					out[op] = e
				}
			}
		}
	}
	return out
}

// measurement is what one window measured.
type measurement struct {
	agents         int
	interval, dur  time.Duration
	target, rate   float64 // requests/s: the fleet's, and completed without error
	fullRate       float64
	errs, pollErrs int64
	hbP50, hbP99   time.Duration
	hbMax, repP99  time.Duration
	probeP99       time.Duration
	hubCPU, genCPU time.Duration // in the window
	machBusy       float64       // the machine's CPUs busy in the window (0..1), every process
	cpuPerReq      time.Duration // hub CPU per request served (agents' and probes')
	pgPerReq       time.Duration
	rssKiB, fds    int
	held           int
	load           string
}

// measure collects a window of d with the fleet as it is.
func (f *fleet) measure(d time.Duration, label string) measurement {
	w := &window{start: time.Now()}
	st0 := f.storeStats()
	cpu0, pg0, gen0 := f.hs.cpu(), f.hs.pgCPU(), procCPU(pidSelf)
	busy0, all0 := machineCPU()
	f.win.Store(w)
	select {
	case <-time.After(d):
	case <-f.ctx.Done():
	}
	el := time.Since(w.start)
	cpu, pgc, gen := f.hs.cpu()-cpu0, f.hs.pgCPU()-pg0, procCPU(pidSelf)-gen0
	busy1, all1 := machineCPU()
	m := measurement{agents: len(f.agents), interval: time.Duration(f.interval.Load()), dur: el, rssKiB: f.hs.rssKiB(), fds: f.hs.fds(), load: loadavg()}
	f.win.Store(nil)
	w.close()
	m.held = f.heldPolls()
	st1 := f.storeStats()
	var ops []string
	for _, op := range storeOps {
		if n := st1[op][1] - st0[op][1]; n > 0 {
			ops = append(ops, fmt.Sprintf("%s %v (x%.0f)", op, time.Duration((st1[op][0]-st0[op][0])/n*float64(time.Second)).Round(time.Microsecond), n))
		}
	}
	m.target = float64(m.agents) / m.interval.Seconds()
	ok := w.reqs.Load() - w.errs.Load()
	m.rate, m.fullRate = float64(ok)/el.Seconds(), float64(w.fulls.Load())/el.Seconds()
	m.errs, m.pollErrs = w.errs.Load(), w.perrs.Load()
	m.hbP50, m.hbP99, m.hbMax, m.repP99, m.probeP99 = w.hb.q(0.5), w.hb.q(0.99), w.hb.q(1), w.rep.q(0.99), w.probe.q(0.99)
	m.hubCPU, m.genCPU = cpu, gen
	if all1 > all0 {
		m.machBusy = float64(busy1-busy0) / float64(all1-all0)
	}
	if n := w.reqs.Load() + int64(w.probe.n()); n > 0 && f.hs.separate() {
		m.cpuPerReq, m.pgPerReq = cpu/time.Duration(n), pgc/time.Duration(n)
	}
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	fmt.Printf("[%s] %d agents, interval %v, %v measured, load average %s\n", label, m.agents, m.interval, el.Round(time.Millisecond), m.load)
	fmt.Printf("[%s]   rate: %.1f requests/s completed (target %.1f/s; %.1f full reports/s); errors %d; long-poll errors %d; long-polls held %d\n",
		label, m.rate, m.target, m.fullRate, m.errs, m.pollErrs, m.held)
	fmt.Printf("[%s]   heartbeat: %s\n", label, w.hb.summary())
	fmt.Printf("[%s]   report:    %s\n", label, w.rep.summary())
	fmt.Printf("[%s]   healthz probe (same moment): %s\n", label, w.probe.summary())
	fmt.Printf("[%s]   store calls, mean (count) in the window, replica 0: %s\n", label, strings.Join(ops, ", "))
	if n := float64(max(m.agents, 1)); st1["go_goroutines"][0] > 0 {
		fmt.Printf("[%s]   replica 0 memory: heap in use %.1f KiB per agent, goroutine stacks %.1f KiB per agent (%.1f goroutines per agent)\n", label,
			st1["go_memstats_heap_inuse_bytes"][0]/1024/n, st1["go_memstats_stack_inuse_bytes"][0]/1024/n, st1["go_goroutines"][0]/n)
	}
	if f.hs.separate() {
		fmt.Printf("[%s]   hub: CPU %v (%.0f%% of one core), %v per request; RSS %d MiB; %d descriptors (%.2f per agent); load generator CPU %.0f%% of one core\n",
			label, cpu.Round(time.Millisecond), 100*cpu.Seconds()/el.Seconds(), r(m.cpuPerReq), m.rssKiB/1024, m.fds, float64(m.fds)/float64(max(m.agents, 1)), 100*gen.Seconds()/el.Seconds())
		fmt.Printf("[%s]   machine: CPUs %.0f%% busy (every process; the hub and this generator are part of it)\n", label, 100*m.machBusy)
		if f.hs.pgDir != "" {
			fmt.Printf("[%s]   PostgreSQL server CPU %v per request\n", label, r(m.pgPerReq))
		}
	} else {
		fmt.Printf("[%s]   hub and load in one process: CPU %.0f%% of one core (both)\n", label, 100*gen.Seconds()/el.Seconds())
	}
	return m
}

// propagation PUTs a new desired document for every agent's host (8 at
// a time, each through another replica than its agent's) with every
// agent long-polling, and measures from each PUT's start to its agent's
// fetch of the new generation.
func (f *fleet) propagation(label string, round int) (p50, p99, pmax, all time.Duration, err error) {
	if !f.longpoll {
		return 0, 0, 0, 0, errors.New("propagation needs the agents' long-polls (-longpoll)")
	}
	for deadline := time.Now().Add(time.Minute); f.heldPolls() < len(f.agents); {
		if time.Now().After(deadline) {
			return 0, 0, 0, 0, fmt.Errorf("the hub holds %d long-polls of %d agents after a minute", f.heldPolls(), len(f.agents))
		}
		time.Sleep(200 * time.Millisecond)
	}
	sink := make(chan fetched, len(f.agents))
	f.sink.Store(&sink)
	defer f.sink.Store(nil)
	putAt := make([]atomic.Int64, len(f.agents))
	var next atomic.Int64
	var wg sync.WaitGroup
	var putErr atomic.Value
	start := time.Now()
	for range 8 {
		wg.Go(func() {
			for f.ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(f.agents) {
					return
				}
				a := f.agents[i]
				doc := fmt.Sprintf("apiVersion: steward/v1\nkind: Fleet\nhosts:\n  %s:\n    guests:\n      100:\n        kind: lxc\n        config:\n          cores: %d\n", a.id, 1+round)
				putAt[i].Store(time.Now().UnixNano())
				ctx, cancel := context.WithTimeout(f.ctx, time.Minute)
				resp, err := f.op(i+1).Do(ctx, hubclient.Request{Method: http.MethodPut, Path: "/v1/hosts/" + url.PathEscape(a.id) + "/desired",
					Body: []byte(doc), Header: http.Header{"Content-Type": {"application/yaml"}}})
				cancel()
				if err == nil {
					err = resp.Err(http.MethodPut, "/v1/hosts/"+a.id+"/desired")
				}
				if err != nil {
					putErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	var lat hist
	timeout := time.After(2 * time.Minute)
	for lat.n() < len(f.agents) {
		select {
		case g := <-sink:
			if t := putAt[g.i].Load(); t != 0 {
				lat.add(g.at.Sub(time.Unix(0, t)))
			}
		case <-timeout:
			wg.Wait()
			if err, _ := putErr.Load().(error); err != nil {
				return 0, 0, 0, 0, fmt.Errorf("PUT desired: %w", err)
			}
			return 0, 0, 0, 0, fmt.Errorf("only %d of %d agents fetched their new generation in 2 minutes", lat.n(), len(f.agents))
		}
	}
	all = time.Since(start)
	wg.Wait()
	fmt.Printf("[%s] propagation: %d agents long-polling; PUT desired of every host (8 at a time) to its agent's fetch: %s; all fetched within %v\n",
		label, len(f.agents), lat.summary(), all.Round(time.Millisecond))
	return lat.q(0.5), lat.q(0.99), lat.q(1), all, nil
}
