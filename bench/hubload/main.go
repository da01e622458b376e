// Command hubload is the hub's load generator: N simulated agents
// against one hub running as a subprocess (this binary again, with
// -serve), on loopback, over plain HTTP.
//
// Each agent enrolls, sends a full report (realistic size: -guests
// guests with managed config and sync status), then once per -interval
// (spread evenly, each agent at its own phase) sends a heartbeat naming
// its report's hash, or, with probability -change, a changed full report.
// With -longpoll each agent also holds GET …/desired?after=G&wait=5m, as
// real agents do. Agents connect from different source addresses of
// 127.0.0.0/8 so that 10,000s of them do not exhaust one address's
// ephemeral ports.
//
// It prints the sustained request rate, p50/p90/p99/max latency of
// reports and heartbeats, errors, and the hub's RSS before and after the
// agents connected (per agent). With -propagation it instead measures,
// with every agent long-polling, the time from each host's desired PUT to
// its agent's fetch of the new generation (p50/p99).
//
// With -replicas N (N > 1) the hub is N replica processes on one
// PostgreSQL database (-pg URL, or a throwaway cluster this command
// starts and removes, as the tests do: PostgreSQL's server binaries must
// be installed); agent i talks to replica i mod N, and each desired PUT
// goes through another replica than its agent's, so propagation crosses
// replicas (LISTEN/NOTIFY). -compare runs the load and the propagation
// against one SQLite hub and against -replicas PostgreSQL replicas in the
// same run and prints each figure as a ratio, with the load average.
//
//	go run ./bench/hubload -agents 10000 -interval 60s -duration 120s -longpoll
//	go run ./bench/hubload -agents 1000 -propagation
//	go run ./bench/hubload -compare -replicas 3 -agents 1000 -interval 2s -duration 20s
//
// It is a benchmark, not a test: it asserts nothing.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	_ "net/http/pprof" // -serve: profiles at /debug/pprof on the hub's listener
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/pgtest"
	"github.com/steward-pve/steward/internal/hub/store/postgres"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/wire"
)

func main() {
	var (
		serve       = flag.Bool("serve", false, "run the hub (internal: the parent starts this)")
		dataDir     = flag.String("data", "", "-serve: the hub's data directory")
		flushEvery  = flag.Duration("flush", hub.DefaultFlushInterval, "-serve: the hub's heartbeat flush interval")
		agents      = flag.Int("agents", 1000, "simulated agents")
		interval    = flag.Duration("interval", 60*time.Second, "each agent's report interval")
		duration    = flag.Duration("duration", 60*time.Second, "measured run time (after enrollment and a first report from every agent)")
		guests      = flag.Int("guests", 20, "guests per report (sets the report size)")
		change      = flag.Float64("change", 0.05, "probability that a tick sends a changed full report instead of a heartbeat")
		longpoll    = flag.Bool("longpoll", false, "each agent also holds a desired long-poll")
		propagation = flag.Bool("propagation", false, "measure PUT-desired-to-fetch with every agent long-polling")
		enrollConc  = flag.Int("enroll-concurrency", 32, "concurrent enrollments")
		replicas    = flag.Int("replicas", 1, "hub replicas; more than 1 puts them on PostgreSQL")
		pgURL       = flag.String("pg", "", "with -replicas > 1: an empty PostgreSQL database's URL (default: a throwaway cluster)")
		compare     = flag.Bool("compare", false, "run load and propagation against one SQLite hub and -replicas PostgreSQL replicas, and print ratios")
		profile     = flag.String("profile", "", "directory to save a CPU profile of replica 0 (10s, during the load) for each setup")
		storeURL    = flag.String("store", "", "-serve: a postgres:// URL (default: SQLite in -data)")
	)
	flag.Parse()
	if *serve {
		if err := runServe(*dataDir, *storeURL, *flushEvery); err != nil {
			log.Fatal(err)
		}
		return
	}
	cfg := loadConfig{agents: *agents, interval: *interval, duration: *duration, guests: *guests, change: *change,
		longpoll: *longpoll, enrollConc: *enrollConc, flush: *flushEvery, profile: *profile}
	if *compare {
		if err := runCompare(cfg, max(*replicas, 2), *pgURL); err != nil {
			log.Fatal(err)
		}
		return
	}
	hs, err := startSet(*replicas, *pgURL, *flushEvery)
	if err != nil {
		log.Fatal(err)
	}
	defer hs.stop()
	if *propagation {
		_, err = runPropagation(cfg, hs)
	} else {
		_, err = runLoad(cfg, hs)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// runServe runs the hub on a free loopback port and prints
// "READY URL TOKEN" once it serves. On SQLite it makes the operator
// token; on PostgreSQL (a replica) the parent made it and passes it in
// $HUBLOAD_TOKEN.
func runServe(dir, storeURL string, flush time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var st store.Store
	opt := hub.Options{Logger: slog.New(slog.DiscardHandler), FlushInterval: flush}
	tok := os.Getenv("HUBLOAD_TOKEN")
	if storeURL != "" {
		ps, err := postgres.Open(ctx, storeURL, postgres.Options{})
		if err != nil {
			return err
		}
		st, opt.Notifier = ps, ps.Notifier()
	} else {
		ss, err := sqlite.Open(ctx, filepath.Join(dir, "hub.db"), sqlite.Options{})
		if err != nil {
			return err
		}
		st = ss
		tok = hub.NewToken("stwo_")
		if err := st.CreateOperator(ctx, "bench", store.HashToken(tok)); err != nil {
			return err
		}
	}
	defer st.Close()
	h := hub.New(st, opt)
	mux := http.NewServeMux()
	mux.Handle("/debug/pprof/", http.DefaultServeMux)
	mux.Handle("/", h.Handler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := h.HTTPServer(nil) // steward hub's limits
	srv.Handler = mux
	fmt.Printf("READY http://%s %s\n", ln.Addr(), tok)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	h.Shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	h.Close()
	return nil
}

// client is one simulated agent's HTTP client, bound to its own source
// address.
func client(i int) *http.Client {
	src := &net.TCPAddr{IP: net.IPv4(127, byte(1+i/60000), byte(i/250%240), byte(2+i%250))}
	d := &net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 2, IdleConnTimeout: 10 * time.Minute}}
}

type hubProc struct {
	url, token string
	cmd        *exec.Cmd
}

func startHub(flush time.Duration, storeURL, token string) (*hubProc, error) {
	dir, err := os.MkdirTemp("", "hubload-")
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-serve", "-data", dir, "-flush", flush.String(), "-store", storeURL)
	cmd.Env = append(os.Environ(), "HUBLOAD_TOKEN="+token)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("the hub did not start: %w", err)
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "READY" {
		return nil, fmt.Errorf("the hub said %q", line)
	}
	go io.Copy(io.Discard, out)
	return &hubProc{url: f[1], token: f[2], cmd: cmd}, nil
}

// rssKiB reads the hub process's resident set size.
func (h *hubProc) rssKiB() int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

// cpu returns the hub process's CPU time so far (user + system).
func (h *hubProc) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", h.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

func (h *hubProc) stop() {
	h.cmd.Process.Signal(syscall.SIGTERM)
	h.cmd.Wait()
}

// hubSet is the hub under load: one process (SQLite) or several
// replicas on one PostgreSQL database.
type hubSet struct {
	label string
	procs []*hubProc
	token string
	pg    *pgtest.Cluster // the throwaway cluster this command started, if any
	pgDir string          // its directory, to find its processes
}

// startSet starts one SQLite hub (n <= 1) or n replicas on PostgreSQL.
func startSet(n int, pgURL string, flush time.Duration) (*hubSet, error) {
	if n <= 1 {
		h, err := startHub(flush, "", "")
		if err != nil {
			return nil, err
		}
		return &hubSet{label: "sqlite x1", procs: []*hubProc{h}, token: h.token}, nil
	}
	hs := &hubSet{label: fmt.Sprintf("postgres x%d", n), token: hub.NewToken("stwo_")}
	ctx := context.Background()
	if pgURL == "" {
		c, err := pgtest.Start(ctx)
		if err != nil {
			return nil, err
		}
		hs.pg, hs.pgDir = c, c.Dir
		if pgURL, err = c.CreateDatabase(ctx); err != nil {
			c.Stop()
			return nil, err
		}
	}
	// Migrate and make the operator once, before the replicas start.
	st, err := postgres.Open(ctx, pgURL, postgres.Options{})
	if err != nil {
		hs.stop()
		return nil, err
	}
	err = st.CreateOperator(ctx, "bench", store.HashToken(hs.token))
	st.Close()
	if err != nil {
		hs.stop()
		return nil, err
	}
	for range n {
		h, err := startHub(flush, pgURL, hs.token)
		if err != nil {
			hs.stop()
			return nil, err
		}
		hs.procs = append(hs.procs, h)
	}
	return hs, nil
}

func (hs *hubSet) stop() {
	for _, h := range hs.procs {
		h.stop()
	}
	if hs.pg != nil {
		hs.pg.Stop()
	}
}

// url is the replica agent i talks to.
func (hs *hubSet) url(i int) string { return hs.procs[i%len(hs.procs)].url }

func (hs *hubSet) rssKiB() (n int) {
	for _, h := range hs.procs {
		n += h.rssKiB()
	}
	return n
}

func (hs *hubSet) cpu() (d time.Duration) {
	for _, h := range hs.procs {
		d += h.cpu()
	}
	return d
}

// pgCPU is the CPU time of the throwaway PostgreSQL server (the
// postmaster, its live backends and the reaped ones), 0 without one.
func (hs *hubSet) pgCPU() time.Duration {
	if hs.pgDir == "" {
		return 0
	}
	ents, _ := os.ReadDir("/proc")
	master := ""
	stats := map[string][]string{} // pid -> stat fields after the command name
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		st := string(b)
		if !strings.Contains(st, "(postgres)") {
			continue
		}
		stats[e.Name()] = strings.Fields(st[strings.LastIndexByte(st, ')')+2:])
		if cl, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline"); bytes.Contains(cl, []byte(hs.pgDir)) {
			master = e.Name()
		}
	}
	ticks := func(f []string, from, to int) (n int64) {
		for i := from; i <= to && i < len(f); i++ {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			n += v
		}
		return n
	}
	var total int64
	for pid, f := range stats {
		switch {
		case pid == master:
			total += ticks(f, 11, 14) // utime stime cutime cstime
		case len(f) > 1 && f[1] == master:
			total += ticks(f, 11, 12)
		}
	}
	return time.Duration(total) * 10 * time.Millisecond
}

// heldPolls sums the long-polls every replica holds.
func (hs *hubSet) heldPolls(ctx context.Context, c *http.Client) int {
	n := 0
	for _, h := range hs.procs {
		v, _ := strconv.Atoi(scrape(ctx, h.url, c, "steward_hub_long_polls_held"))
		n += v
	}
	return n
}

type agent struct {
	id    string
	url   string // the replica it talks to
	token string
	c     *http.Client
	body  []byte
	hash  string
	gen   int64
	rep   wire.Report
}

func do(ctx context.Context, c *http.Client, method, url, token string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// report builds a realistic report of host with n guests; v varies it.
func report(host string, n, v int) wire.Report {
	r := wire.Report{Host: host, Time: time.Now().UTC().Truncate(time.Second), Facts: wire.Facts{Node: host, AgentVersion: "bench"}}
	for i := range n {
		vmid := 100 + i
		kind := "qemu"
		if i%3 == 0 {
			kind = "lxc"
		}
		r.Guests = append(r.Guests, wire.Guest{VMID: vmid, Kind: kind, Name: fmt.Sprintf("guest-%d-%d", vmid, v), Status: "running",
			Digest: fmt.Sprintf("%040x", vmid*7919+v),
			Config: map[string]string{"cores": "2", "memory": "4096", "onboot": "1", "name": fmt.Sprintf("guest-%d", vmid),
				"net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1", "tags": "prod;web", "description": "managed by steward\n"}})
		r.Sync = append(r.Sync, wire.Sync{VMID: vmid, Phase: wire.PhaseInSync})
	}
	return r
}

// hist collects latencies.
type hist struct {
	mu sync.Mutex
	d  []time.Duration
}

func (h *hist) add(d time.Duration) { h.mu.Lock(); h.d = append(h.d, d); h.mu.Unlock() }

func (h *hist) summary() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.d) == 0 {
		return "no samples"
	}
	slices.Sort(h.d)
	q := func(p float64) time.Duration { return h.d[min(len(h.d)-1, int(p*float64(len(h.d))))] }
	return fmt.Sprintf("n=%d p50=%v p90=%v p99=%v max=%v", len(h.d), q(0.50).Round(10*time.Microsecond),
		q(0.90).Round(10*time.Microsecond), q(0.99).Round(10*time.Microsecond), h.d[len(h.d)-1].Round(10*time.Microsecond))
}

// p99 returns the 99th percentile of the samples (0 without any).
func (h *hist) p99() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.d) == 0 {
		return 0
	}
	slices.Sort(h.d)
	return h.d[min(len(h.d)-1, int(0.99*float64(len(h.d))))]
}

type loadConfig struct {
	agents             int
	interval, duration time.Duration
	guests             int
	change             float64
	longpoll           bool
	enrollConc         int
	flush              time.Duration
	profile            string
}

// result is what one setup measured.
type result struct {
	rate, reportRate float64       // requests/s and full reports/s sustained
	hbP99, repP99    time.Duration // latency
	cpuPerReq        time.Duration // hub CPU (all replicas) per request
	pgPerReq         time.Duration // PostgreSQL server CPU per request
	errors           int64
	propP99          time.Duration
}

// enrollAll enrolls every agent and sends its first report.
func enrollAll(ctx context.Context, cfg loadConfig, hs *hubSet, op *http.Client) ([]*agent, error) {
	t0 := time.Now()
	as := make([]*agent, cfg.agents)
	var next atomic.Int64
	var wg sync.WaitGroup
	var setupErr atomic.Value
	for range cfg.enrollConc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= cfg.agents {
					return
				}
				a, err := enroll(ctx, hs, op, i, cfg.guests)
				if err != nil {
					setupErr.Store(err)
					return
				}
				as[i] = a
			}
		})
	}
	wg.Wait()
	if err, _ := setupErr.Load().(error); err != nil {
		return nil, fmt.Errorf("enrolling: %w", err)
	}
	fmt.Printf("[%s] setup: %d agents enrolled and reported in %v (report %d bytes, %d guests); hub at %s (pprof at /debug/pprof/)\n",
		hs.label, cfg.agents, time.Since(t0).Round(time.Millisecond), len(as[0].body), cfg.guests, hs.url(0))
	return as, nil
}

// saveProfile saves a CPU profile of replica 0 over secs seconds.
func saveProfile(ctx context.Context, hs *hubSet, dir string, secs int) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Print(err)
		return
	}
	c := &http.Client{}
	code, b, err := do(ctx, c, "GET", fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", hs.url(0), secs), "", nil)
	if err != nil || code != 200 {
		log.Printf("profiling %s: %d %v", hs.label, code, err)
		return
	}
	path := filepath.Join(dir, strings.ReplaceAll(hs.label, " ", "-")+".pprof")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		log.Print(err)
		return
	}
	fmt.Printf("[%s] CPU profile of replica 0: %s (go tool pprof -top %s)\n", hs.label, path, path)
}
func runLoad(cfg loadConfig, hs *hubSet) (result, error) {
	ctx := context.Background()
	op := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	rss0 := hs.rssKiB()
	as, err := enrollAll(ctx, cfg, hs, op)
	if err != nil {
		return result{}, err
	}
	n, interval, duration, guests, change, longpoll := cfg.agents, cfg.interval, cfg.duration, cfg.guests, cfg.change, cfg.longpoll
	rss1 := hs.rssKiB()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var polls sync.WaitGroup
	if longpoll {
		for _, a := range as {
			polls.Go(func() { pollLoop(runCtx, a, nil) })
		}
	}
	var hb, full hist
	var errs, reqs, fulls atomic.Int64
	cpu0, pg0 := hs.cpu(), hs.pgCPU()
	start := time.Now()
	end := start.Add(duration)
	var profWG sync.WaitGroup
	if cfg.profile != "" {
		profWG.Go(func() { saveProfile(ctx, hs, cfg.profile, max(1, min(10, int(duration.Seconds())-1))) })
	}
	var agentsWG sync.WaitGroup
	for _, a := range as {
		agentsWG.Go(func() {
			// Each agent at its own phase in the interval.
			t := start.Add(time.Duration(rand.Int64N(int64(interval))))
			v := 1
			for t.Before(end) {
				time.Sleep(time.Until(t))
				t = t.Add(interval)
				var path string
				var body []byte
				isFull := rand.Float64() < change
				if isFull {
					a.rep = report(a.id, guests, v)
					v++
					a.body, _ = wire.EncodeReport(a.rep)
					a.hash = hub.ReportHash(a.body)
					path, body = "/report", a.body
				} else {
					path, body = "/heartbeat", fmt.Appendf(nil, `{"hash":%q}`, a.hash)
				}
				t1 := time.Now()
				code, _, err := do(runCtx, a.c, "POST", a.url+"/v1/agent/hosts/"+a.id+path, a.token, body)
				d := time.Since(t1)
				reqs.Add(1)
				if err != nil || code != 200 {
					errs.Add(1)
					continue
				}
				if isFull {
					fulls.Add(1)
					full.add(d)
				} else {
					hb.add(d)
				}
			}
		})
	}
	agentsWG.Wait()
	elapsed := time.Since(start)
	cpu, pgc := hs.cpu()-cpu0, hs.pgCPU()-pg0
	rss2 := hs.rssKiB()
	held := hs.heldPolls(ctx, op)
	cancel()
	polls.Wait()
	profWG.Wait()

	nreq := max(reqs.Load(), 1)
	res := result{rate: float64(reqs.Load()) / elapsed.Seconds(), reportRate: float64(fulls.Load()) / elapsed.Seconds(),
		hbP99: hb.p99(), repP99: full.p99(), cpuPerReq: cpu / time.Duration(nreq), pgPerReq: pgc / time.Duration(nreq), errors: errs.Load()}
	fmt.Printf("[%s] load: %d agents, interval %v, %v measured, long-polls %v (held at the end: %d)\n", hs.label, n, interval, elapsed.Round(time.Millisecond), longpoll, held)
	fmt.Printf("[%s] rate: %.1f requests/s sustained (target %.1f/s; %.1f full reports/s), errors %d\n", hs.label, res.rate, float64(n)/interval.Seconds(), res.reportRate, errs.Load())
	fmt.Printf("[%s] hub CPU (all replicas): %v in %v (%.0f%% of one core), %v per request; PostgreSQL server CPU %v per request\n", hs.label, cpu, elapsed.Round(time.Millisecond),
		100*cpu.Seconds()/elapsed.Seconds(), res.cpuPerReq.Round(time.Microsecond), res.pgPerReq.Round(time.Microsecond))
	fmt.Printf("[%s] heartbeat latency: %s\n", hs.label, hb.summary())
	fmt.Printf("[%s] report latency:    %s\n", hs.label, full.summary())
	fmt.Printf("[%s] hub RSS (all replicas): %d MiB idle, %d MiB enrolled, %d MiB under load; %.1f KiB per connected agent\n",
		hs.label, rss0/1024, rss1/1024, rss2/1024, float64(rss2-rss0)/float64(n))
	return res, nil
}

func runPropagation(cfg loadConfig, hs *hubSet) (time.Duration, error) {
	ctx := context.Background()
	op := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	rss0 := hs.rssKiB()
	as, err := enrollAll(ctx, cfg, hs, op)
	if err != nil {
		return 0, err
	}
	return measurePropagation(ctx, hs, op, as, rss0)
}

// loadavg is /proc/loadavg's three averages.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// runCompare measures one SQLite hub and n PostgreSQL replicas in the
// same run, the same load, one after the other, and prints ratios.
func runCompare(cfg loadConfig, n int, pgURL string) error {
	fmt.Printf("compare: load average %s at start; %d agents, interval %v, %v, change %.2f\n", loadavg(), cfg.agents, cfg.interval, cfg.duration, cfg.change)
	var rs [2]result
	for i, reps := range []int{1, n} {
		hs, err := startSet(reps, pgURL, cfg.flush)
		if err != nil {
			return err
		}
		r, err := runLoad(cfg, hs)
		hs.stop()
		if err != nil {
			return err
		}
		// Propagation on fresh hubs (no load-phase state), every agent
		// long-polling.
		if hs, err = startSet(reps, pgURL, cfg.flush); err != nil {
			return err
		}
		p, err := runPropagation(loadConfig{agents: cfg.agents, guests: cfg.guests, enrollConc: cfg.enrollConc}, hs)
		hs.stop()
		if err != nil {
			return err
		}
		r.propP99 = p
		rs[i] = r
		fmt.Printf("load average %s after %s\n", loadavg(), []string{"sqlite x1", fmt.Sprintf("postgres x%d", n)}[i])
	}
	a, b := rs[0], rs[1]
	ratio := func(x, y float64) string {
		if y == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2fx", x/y)
	}
	d := func(x time.Duration) string { return x.Round(10 * time.Microsecond).String() }
	fmt.Printf("\n%-28s %14s %14s %10s\n", "figure", "sqlite x1", fmt.Sprintf("postgres x%d", n), "pg/sqlite")
	fmt.Printf("%-28s %14.1f %14.1f %10s\n", "requests/s sustained", a.rate, b.rate, ratio(b.rate, a.rate))
	fmt.Printf("%-28s %14.1f %14.1f %10s\n", "full reports/s", a.reportRate, b.reportRate, ratio(b.reportRate, a.reportRate))
	fmt.Printf("%-28s %14s %14s %10s\n", "heartbeat p99", d(a.hbP99), d(b.hbP99), ratio(b.hbP99.Seconds(), a.hbP99.Seconds()))
	fmt.Printf("%-28s %14s %14s %10s\n", "report p99", d(a.repP99), d(b.repP99), ratio(b.repP99.Seconds(), a.repP99.Seconds()))
	fmt.Printf("%-28s %14s %14s %10s\n", "propagation p99", d(a.propP99), d(b.propP99), ratio(b.propP99.Seconds(), a.propP99.Seconds()))
	fmt.Printf("%-28s %14s %14s %10s\n", "hub CPU per request", d(a.cpuPerReq), d(b.cpuPerReq), ratio(b.cpuPerReq.Seconds(), a.cpuPerReq.Seconds()))
	fmt.Printf("%-28s %14s %14s %10s\n", "PostgreSQL CPU per request", "-", d(b.pgPerReq), "")
	fmt.Printf("%-28s %14d %14d\n", "errors", a.errors, b.errors)
	fmt.Printf("load average %s at the end\n", loadavg())
	return nil
}

func enroll(ctx context.Context, hs *hubSet, op *http.Client, i, guests int) (*agent, error) {
	id := fmt.Sprintf("pve-%05d", i)
	code, b, err := do(ctx, op, "POST", hs.url(i+1)+"/v1/hosts/"+id+"/join-token", hs.token, nil)
	if err != nil || code != 200 {
		return nil, fmt.Errorf("join token for %s: %d %s %v", id, code, b, err)
	}
	var jt struct {
		JoinToken string `json:"join_token"`
	}
	json.Unmarshal(b, &jt)
	a := &agent{id: id, url: hs.url(i), c: client(i)}
	code, b, err = do(ctx, a.c, "POST", a.url+"/v1/enroll", "", fmt.Appendf(nil, `{"join_token":%q}`, jt.JoinToken))
	if err != nil || code != 200 {
		return nil, fmt.Errorf("enroll %s: %d %s %v", id, code, b, err)
	}
	var er wire.EnrollResponse
	json.Unmarshal(b, &er)
	a.token = er.Token
	a.rep = report(id, guests, 0)
	a.body, _ = wire.EncodeReport(a.rep)
	a.hash = hub.ReportHash(a.body)
	code, b, err = do(ctx, a.c, "POST", a.url+"/v1/agent/hosts/"+id+"/report", a.token, a.body)
	if err != nil || code != 200 {
		return nil, fmt.Errorf("first report of %s: %d %s %v", id, code, b, err)
	}
	return a, nil
}

// pollLoop holds desired long-polls for a until ctx ends; each answer
// with a newer generation is sent on got (if not nil).
func pollLoop(ctx context.Context, a *agent, got chan<- fetched) {
	for ctx.Err() == nil {
		code, b, err := do(ctx, a.c, "GET", fmt.Sprintf("%s/v1/agent/hosts/%s/desired?after=%d&wait=5m", a.url, a.id, a.gen), a.token, nil)
		at := time.Now()
		if err != nil || code != 200 {
			if ctx.Err() == nil {
				time.Sleep(time.Second)
			}
			continue
		}
		var d wire.Desired
		if json.Unmarshal(b, &d) == nil && d.Generation > a.gen {
			a.gen = d.Generation
			if got != nil {
				got <- fetched{a.id, at}
			}
		}
	}
}

type fetched struct {
	host string
	at   time.Time
}

func measurePropagation(ctx context.Context, hs *hubSet, op *http.Client, as []*agent, rss0 int) (time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan fetched, len(as))
	var polls sync.WaitGroup
	for _, a := range as {
		polls.Go(func() { pollLoop(ctx, a, got) })
	}
	// Wait until the hub holds every long-poll.
	for deadline := time.Now().Add(time.Minute); ; {
		if hs.heldPolls(ctx, op) >= len(as) {
			break
		}
		if time.Now().After(deadline) {
			return 0, errors.New("the hub never held every long-poll")
		}
		time.Sleep(100 * time.Millisecond)
	}
	rssHeld := hs.rssKiB()
	// PUT every host's document, 8 at a time, as an apply over the fleet
	// would; each host's latency runs from its PUT's start.
	putAt := make(map[string]time.Time, len(as))
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(as) {
					return
				}
				id := as[i].id
				doc := fmt.Sprintf("apiVersion: steward/v1\nkind: Fleet\nhosts:\n  %s:\n    guests:\n      100:\n        kind: lxc\n        config:\n          cores: 4\n", id)
				mu.Lock()
				putAt[id] = time.Now()
				mu.Unlock()
				// Through another replica than the agent's: the wake-up
				// crosses replicas.
				if code, b, err := do(ctx, op, "PUT", hs.url(i+1)+"/v1/hosts/"+id+"/desired", hs.token, []byte(doc)); err != nil || code != 200 {
					log.Printf("PUT %s: %d %s %v", id, code, b, err)
				}
			}
		})
	}
	var lat hist
	timeout := time.After(2 * time.Minute)
	for range as {
		select {
		case f := <-got:
			mu.Lock()
			lat.add(f.at.Sub(putAt[f.host]))
			mu.Unlock()
		case <-timeout:
			return 0, fmt.Errorf("only %d of %d agents fetched their new generation in 2 minutes", len(lat.d), len(as))
		}
	}
	all := time.Since(start)
	wg.Wait()
	fmt.Printf("[%s] propagation: %d agents long-polling; PUT desired of every host (8 at a time) to each agent's fetch: %s; all %d fetched within %v\n",
		hs.label, len(as), lat.summary(), len(as), all.Round(time.Millisecond))
	fmt.Printf("[%s] hub RSS (all replicas): %d MiB idle, %d MiB with every long-poll held; %.1f KiB per long-polling agent\n", hs.label, rss0/1024, rssHeld/1024, float64(rssHeld-rss0)/float64(len(as)))
	cancel()
	polls.Wait()
	return lat.p99(), nil
}

// scrape returns the value of one unlabelled metric of the hub.
func scrape(ctx context.Context, url string, c *http.Client, name string) string {
	_, b, err := do(ctx, c, "GET", url+"/metrics", "", nil)
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v
		}
	}
	return "?"
}
