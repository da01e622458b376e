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
//	go run ./bench/hubload -agents 10000 -interval 60s -duration 120s -longpoll
//	go run ./bench/hubload -agents 1000 -propagation
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
	)
	flag.Parse()
	if *serve {
		if err := runServe(*dataDir, *flushEvery); err != nil {
			log.Fatal(err)
		}
		return
	}
	if err := run(*agents, *interval, *duration, *guests, *change, *longpoll, *propagation, *enrollConc, *flushEvery); err != nil {
		log.Fatal(err)
	}
}

// runServe runs the hub on a free loopback port and prints
// "READY URL TOKEN" once it serves.
func runServe(dir string, flush time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "hub.db"), sqlite.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	tok := hub.NewToken("stwo_")
	if err := st.CreateOperator(ctx, "bench", store.HashToken(tok)); err != nil {
		return err
	}
	h := hub.New(st, hub.Options{Logger: slog.New(slog.DiscardHandler), FlushInterval: flush})
	mux := http.NewServeMux()
	mux.Handle("/debug/pprof/", http.DefaultServeMux)
	mux.Handle("/", h.Handler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
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

func startHub(flush time.Duration) (*hubProc, error) {
	dir, err := os.MkdirTemp("", "hubload-")
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-serve", "-data", dir, "-flush", flush.String())
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

type agent struct {
	id    string
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
	req.Header.Set("Authorization", "Bearer "+token)
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

func run(n int, interval, duration time.Duration, guests int, change float64, longpoll, propagation bool, enrollConc int, flush time.Duration) error {
	ctx := context.Background()
	h, err := startHub(flush)
	if err != nil {
		return err
	}
	defer h.stop()
	op := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	rss0 := h.rssKiB()

	// Enroll every agent and send its first report.
	t0 := time.Now()
	as := make([]*agent, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var setupErr atomic.Value
	for range enrollConc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				a, err := enroll(ctx, h, op, i, guests)
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
		return fmt.Errorf("enrolling: %w", err)
	}
	report0 := len(as[0].body)
	fmt.Printf("setup: %d agents enrolled and reported in %v (report %d bytes, %d guests); hub at %s (pprof at /debug/pprof/)\n", n, time.Since(t0).Round(time.Millisecond), report0, guests, h.url)
	rss1 := h.rssKiB()

	if propagation {
		return measurePropagation(ctx, h, op, as, rss0)
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var polls sync.WaitGroup
	if longpoll {
		for _, a := range as {
			polls.Go(func() { pollLoop(runCtx, h, a, nil) })
		}
	}
	var hb, full hist
	var errs, reqs atomic.Int64
	cpu0 := h.cpu()
	start := time.Now()
	end := start.Add(duration)
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
				code, _, err := do(runCtx, a.c, "POST", h.url+"/v1/agent/hosts/"+a.id+path, a.token, body)
				d := time.Since(t1)
				reqs.Add(1)
				if err != nil || code != 200 {
					errs.Add(1)
					continue
				}
				if isFull {
					full.add(d)
				} else {
					hb.add(d)
				}
			}
		})
	}
	agentsWG.Wait()
	elapsed := time.Since(start)
	cpu := h.cpu() - cpu0
	rss2 := h.rssKiB()
	held := scrape(ctx, h, op, "steward_hub_long_polls_held")
	connected := scrape(ctx, h, op, "steward_hub_connected_agents")
	cancel()
	polls.Wait()

	fmt.Printf("load: %d agents, interval %v, %v measured, long-polls %v (held at the end: %s), connected: %s\n", n, interval, elapsed.Round(time.Millisecond), longpoll, held, connected)
	fmt.Printf("rate: %.1f requests/s sustained (target %.1f/s), errors %d\n", float64(reqs.Load())/elapsed.Seconds(), float64(n)/interval.Seconds(), errs.Load())
	fmt.Printf("hub CPU: %v in %v (%.0f%% of one core), %v per request (a machine-load-independent figure)\n", cpu, elapsed.Round(time.Millisecond),
		100*cpu.Seconds()/elapsed.Seconds(), (cpu / time.Duration(max(reqs.Load(), 1))).Round(time.Microsecond))
	fmt.Printf("heartbeat latency: %s\n", hb.summary())
	fmt.Printf("report latency:    %s\n", full.summary())
	fmt.Printf("hub RSS: %d MiB idle, %d MiB enrolled, %d MiB under load; %.1f KiB per connected agent\n",
		rss0/1024, rss1/1024, rss2/1024, float64(rss2-rss0)/float64(n))
	return nil
}

func enroll(ctx context.Context, h *hubProc, op *http.Client, i, guests int) (*agent, error) {
	id := fmt.Sprintf("pve-%05d", i)
	code, b, err := do(ctx, op, "POST", h.url+"/v1/hosts/"+id+"/join-token", h.token, nil)
	if err != nil || code != 200 {
		return nil, fmt.Errorf("join token for %s: %d %s %v", id, code, b, err)
	}
	var jt struct {
		JoinToken string `json:"join_token"`
	}
	json.Unmarshal(b, &jt)
	a := &agent{id: id, c: client(i)}
	code, b, err = do(ctx, a.c, "POST", h.url+"/v1/enroll", "", fmt.Appendf(nil, `{"join_token":%q}`, jt.JoinToken))
	if err != nil || code != 200 {
		return nil, fmt.Errorf("enroll %s: %d %s %v", id, code, b, err)
	}
	var er wire.EnrollResponse
	json.Unmarshal(b, &er)
	a.token = er.Token
	a.rep = report(id, guests, 0)
	a.body, _ = wire.EncodeReport(a.rep)
	a.hash = hub.ReportHash(a.body)
	code, b, err = do(ctx, a.c, "POST", h.url+"/v1/agent/hosts/"+id+"/report", a.token, a.body)
	if err != nil || code != 200 {
		return nil, fmt.Errorf("first report of %s: %d %s %v", id, code, b, err)
	}
	return a, nil
}

// pollLoop holds desired long-polls for a until ctx ends; each answer
// with a newer generation is sent on got (if not nil).
func pollLoop(ctx context.Context, h *hubProc, a *agent, got chan<- fetched) {
	for ctx.Err() == nil {
		code, b, err := do(ctx, a.c, "GET", fmt.Sprintf("%s/v1/agent/hosts/%s/desired?after=%d&wait=5m", h.url, a.id, a.gen), a.token, nil)
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

func measurePropagation(ctx context.Context, h *hubProc, op *http.Client, as []*agent, rss0 int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan fetched, len(as))
	var polls sync.WaitGroup
	for _, a := range as {
		polls.Go(func() { pollLoop(ctx, h, a, got) })
	}
	// Wait until the hub holds every long-poll.
	for deadline := time.Now().Add(time.Minute); ; {
		if v, _ := strconv.Atoi(scrape(ctx, h, op, "steward_hub_long_polls_held")); v >= len(as) {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("the hub never held every long-poll")
		}
		time.Sleep(100 * time.Millisecond)
	}
	rssHeld := h.rssKiB()
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
				if code, b, err := do(ctx, op, "PUT", h.url+"/v1/hosts/"+id+"/desired", h.token, []byte(doc)); err != nil || code != 200 {
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
			return fmt.Errorf("only %d of %d agents fetched their new generation in 2 minutes", len(lat.d), len(as))
		}
	}
	all := time.Since(start)
	wg.Wait()
	fmt.Printf("propagation: %d agents long-polling; PUT desired of every host (8 at a time) to each agent's fetch: %s; all %d fetched within %v\n",
		len(as), lat.summary(), len(as), all.Round(time.Millisecond))
	fmt.Printf("hub RSS: %d MiB idle, %d MiB with every long-poll held; %.1f KiB per long-polling agent\n", rss0/1024, rssHeld/1024, float64(rssHeld-rss0)/float64(len(as)))
	cancel()
	polls.Wait()
	return nil
}

// scrape returns the value of one unlabelled metric of the hub.
func scrape(ctx context.Context, h *hubProc, c *http.Client, name string) string {
	_, b, err := do(ctx, c, "GET", h.url+"/metrics", "", nil)
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
