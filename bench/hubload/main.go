// Command hubload is the hub's load generator: N simulated agents
// against one hub (or several replicas on one PostgreSQL database), on
// loopback, as real agents talk to it: TLS pinned to the hub's
// certificate fingerprint and HTTP/2, one connection per agent carrying
// its reports and its desired long-poll (each agent is a
// internal/hubclient Client of its own, dialing from its own address in
// 127.0.0.0/8, so 10,000s of agents do not exhaust one address's ports).
//
// The hub is a built `steward hub` process (-hub steward, the default:
// this command builds ./cmd/steward unless -steward names a binary), so
// that hub and load generator each have their own open-file limit and
// the hub's RSS, CPU and descriptors are its own; or, with -hub inproc,
// a hub in this process (both ends of every connection then count
// against one limit).
//
// Each agent enrolls (a join token from the operator API), sends a full
// report (-guests guests: realistic size, managed and unmanaged), then
// at its own phase once per -interval sends a heartbeat naming its
// report's hash or, with probability -change, a changed full report (as
// the agent does: the full report only when its content changed). With
// -longpoll (default) it holds GET …/desired?after=G&wait=5m, a new one a
// second after each answer. Two probes send GET /healthz once a second
// each on their own connections: the latency of a request the hub does
// nothing for, at the same moment (the same-run baseline for latency).
//
// It starts by raising its open-file limit (RLIMIT_NOFILE) soft to hard
// and printing it with the load average and GOMAXPROCS, and refuses, before
// starting anything, a number of agents the limit cannot hold.
//
// Modes:
//
//	go run ./bench/hubload -agents 10000 -interval 60s -duration 60s [-propagation]
//	go run ./bench/hubload -fleet        # bench/hubload-fleet: 1k, 10k, the most the limit allows, propagation, a rate ramp
//	go run ./bench/hubload -compare -replicas 3 -agents 2000 -interval 1s   # bench/replicas
//
// It is a benchmark, not a test: it asserts nothing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

var pidSelf = os.Getpid()

type config struct {
	hub, steward  string
	agents        int
	interval, dur time.Duration
	guests        int
	change        float64
	longpoll      bool
	propagation   bool
	conc          int
	replicas      int
	pgURL         string
	compare       bool
	profile       string
	fleet         bool
	points        string
	rampRates     string
	rampDur       time.Duration
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		log.SetFlags(0)
		log.Fatal("hubload: ", err)
	}
}

func run(args []string, stdout io.Writer) error {
	var c config
	fs := flag.NewFlagSet("hubload", flag.ContinueOnError)
	fs.StringVar(&c.hub, "hub", "steward", `the hub: "steward" (a built steward hub process) or "inproc" (in this process)`)
	fs.StringVar(&c.steward, "steward", "", "-hub steward: the steward binary (default: build ./cmd/steward)")
	fs.IntVar(&c.agents, "agents", 1000, "simulated agents")
	fs.DurationVar(&c.interval, "interval", 60*time.Second, "each agent's report interval")
	fs.DurationVar(&c.dur, "duration", 60*time.Second, "measured time (after every agent enrolled)")
	fs.IntVar(&c.guests, "guests", 20, "guests per report (sets the report size)")
	fs.Float64Var(&c.change, "change", 0.05, "probability that a tick sends a changed full report instead of a heartbeat")
	fs.BoolVar(&c.longpoll, "longpoll", true, "each agent holds a desired long-poll")
	fs.BoolVar(&c.propagation, "propagation", false, "after the load, measure PUT desired to every long-polling agent's fetch")
	fs.IntVar(&c.conc, "enroll-concurrency", 32, "concurrent enrollments")
	fs.IntVar(&c.replicas, "replicas", 1, "hub replicas; more than 1 puts them on PostgreSQL")
	fs.StringVar(&c.pgURL, "pg", "", "with -replicas > 1: an empty PostgreSQL database's URL (default: a throwaway cluster)")
	fs.BoolVar(&c.compare, "compare", false, "run load and propagation against one SQLite hub and -replicas PostgreSQL replicas, and print ratios")
	fs.StringVar(&c.profile, "profile", "", "directory for CPU profiles of the hub (replica 0) during the measured load")
	fs.BoolVar(&c.fleet, "fleet", false, "the fleet run: -points, propagation at the first, a rate ramp at the last, one table")
	fs.StringVar(&c.points, "points", "1000,10000,max", `-fleet: fleet sizes, ascending; "max": the most the open-file limits allow`)
	fs.StringVar(&c.rampRates, "ramp", "1000,2000,4000", "-fleet: request rates (per second) to push the largest fleet to, until one is not sustained; empty: none")
	fs.DurationVar(&c.rampDur, "ramp-duration", 15*time.Second, "-fleet: measured time of each ramp step")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.hub != "steward" && c.hub != "inproc" {
		return fmt.Errorf(`-hub %q: want "steward" or "inproc"`, c.hub)
	}
	if c.hub == "inproc" && (c.replicas > 1 || c.compare || c.profile != "") {
		return errors.New("-hub inproc is one SQLite hub without profiles: -replicas, -compare and -profile need -hub steward")
	}
	if c.agents < 1 || c.interval <= 0 || c.dur <= 0 || c.conc < 1 || c.guests < 0 {
		return errors.New("-agents and -enroll-concurrency must be at least 1, -interval and -duration positive")
	}

	soft, hard, err := raiseNoFile()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "hubload: GOMAXPROCS %d (%d CPUs); open files (RLIMIT_NOFILE): %d, hard %d; load average %s\n",
		runtime.GOMAXPROCS(0), runtime.NumCPU(), soft, hard, loadavg())
	perAgent := 1
	if c.hub == "inproc" {
		perAgent = 2
	}
	need := c.agents
	if c.fleet {
		pts, err := parsePoints(c.points, maxAgents(soft, perAgent))
		if err != nil {
			return err
		}
		need = pts[len(pts)-1]
	}
	if err := checkAgents(need, soft, perAgent, "this process"); err != nil {
		return err
	}

	exe := ""
	if c.hub == "steward" {
		if exe = c.steward; exe == "" {
			dir, err := os.MkdirTemp("", "hubload-bin-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			if exe, err = buildSteward(dir); err != nil {
				return err
			}
		}
	}
	switch {
	case c.compare:
		return runCompare(c, exe, stdout)
	case c.fleet:
		return runFleet(c, exe, soft, stdout)
	}
	hs, err := startChecked(exe, c.replicas, c.pgURL, c.agents)
	if err != nil {
		return err
	}
	defer hs.stop()
	f, err := newFleet(hs, c.interval, c.guests, c.change, c.longpoll, c.conc)
	if err != nil {
		return err
	}
	defer f.stop()
	rss0 := hs.rssKiB()
	t0 := time.Now()
	if err := f.grow(c.agents); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "[%s] %d agents enrolled and reported in %v (report %d bytes, %d guests)\n", hs.label, c.agents, time.Since(t0).Round(time.Millisecond), len(f.agents[0].body), c.guests)
	prof := profileDuring(f, c.profile, hs.label, c.dur)
	m := f.measure(c.dur, hs.label)
	prof()
	if hs.separate() {
		fmt.Fprintf(stdout, "[%s]   hub RSS: %d MiB before enrolling; %.1f KiB per connected agent\n", hs.label, rss0/1024, float64(m.rssKiB-rss0)/float64(c.agents))
	}
	if c.propagation {
		if _, _, _, _, err := f.propagation(hs.label, 1); err != nil {
			return err
		}
	}
	return nil
}

// startChecked starts the hub set and checks that each hub process's
// open-file limit holds its share of agents.
func startChecked(exe string, replicas int, pgURL string, agents int) (*hubSet, error) {
	hs, err := startSet(exe, replicas, pgURL)
	if err != nil {
		return nil, err
	}
	if hs.separate() {
		l, err := hs.noFile()
		if err == nil {
			err = checkAgents((agents+len(hs.procs)-1)/len(hs.procs), l, 1, "the hub process")
		}
		if err != nil {
			hs.stop()
			return nil, err
		}
	}
	return hs, nil
}

// parsePoints reads -points: ascending fleet sizes, "max" being most.
func parsePoints(s string, most int) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		n := most
		if p != "max" {
			v, err := strconv.Atoi(p)
			if err != nil || v < 1 {
				return nil, fmt.Errorf("-points: %q is neither a number of agents nor max", p)
			}
			n = v
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			if p == "max" {
				continue // the limit allows no more than the last point
			}
			return nil, fmt.Errorf("-points %q: sizes must ascend", s)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("-points is empty")
	}
	return out, nil
}

// profileDuring saves a CPU profile of the hub's replica 0 over most of
// the next window of d, when dir is set; the returned func waits for it.
func profileDuring(f *fleet, dir, label string, d time.Duration) func() {
	if dir == "" || !f.hs.separate() {
		return func() {}
	}
	secs := max(1, min(30, int(d.Seconds())-2))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			log.Print(err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+30)*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", f.hs.procs[0].pprof, secs), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Printf("profiling the hub: %v", err)
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			log.Printf("profiling the hub: %d %v", resp.StatusCode, err)
			return
		}
		path := filepath.Join(dir, strings.ReplaceAll(label, " ", "-")+".pprof")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			log.Print(err)
			return
		}
		fmt.Printf("[%s] CPU profile of the hub (%ds): %s (go tool pprof -top %s)\n", label, secs, path, path)
	}()
	return func() { <-done }
}

// runCompare measures one SQLite hub and n PostgreSQL replicas in the
// same run, the same load, one after the other, and prints ratios.
func runCompare(c config, exe string, stdout io.Writer) error {
	n := max(c.replicas, 2)
	fmt.Fprintf(stdout, "compare: %d agents, interval %v, %v, change %.2f\n", c.agents, c.interval, c.dur, c.change)
	type res struct {
		m    measurement
		prop time.Duration
	}
	var rs [2]res
	for i, reps := range []int{1, n} {
		hs, err := startChecked(exe, reps, c.pgURL, c.agents)
		if err != nil {
			return err
		}
		err = func() error {
			defer hs.stop()
			f, err := newFleet(hs, c.interval, c.guests, c.change, true, c.conc)
			if err != nil {
				return err
			}
			defer f.stop()
			if err := f.grow(c.agents); err != nil {
				return err
			}
			prof := profileDuring(f, c.profile, hs.label, c.dur)
			rs[i].m = f.measure(c.dur, hs.label)
			prof()
			_, rs[i].prop, _, _, err = f.propagation(hs.label, 1)
			return err
		}()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "load average %s after %s\n", loadavg(), hs.label)
	}
	a, b := rs[0], rs[1]
	ratio := func(x, y float64) string {
		if y == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2fx", x/y)
	}
	d := func(x time.Duration) string { return x.Round(10 * time.Microsecond).String() }
	pg := fmt.Sprintf("postgres x%d", n)
	fmt.Fprintf(stdout, "\n%-28s %14s %14s %10s\n", "figure", "sqlite x1", pg, "pg/sqlite")
	fmt.Fprintf(stdout, "%-28s %14.1f %14.1f %10s\n", "requests/s sustained", a.m.rate, b.m.rate, ratio(b.m.rate, a.m.rate))
	fmt.Fprintf(stdout, "%-28s %14.1f %14.1f %10s\n", "full reports/s", a.m.fullRate, b.m.fullRate, ratio(b.m.fullRate, a.m.fullRate))
	fmt.Fprintf(stdout, "%-28s %14s %14s %10s\n", "heartbeat p99", d(a.m.hbP99), d(b.m.hbP99), ratio(b.m.hbP99.Seconds(), a.m.hbP99.Seconds()))
	fmt.Fprintf(stdout, "%-28s %14s %14s %10s\n", "report p99", d(a.m.repP99), d(b.m.repP99), ratio(b.m.repP99.Seconds(), a.m.repP99.Seconds()))
	fmt.Fprintf(stdout, "%-28s %14s %14s %10s\n", "healthz probe p99", d(a.m.probeP99), d(b.m.probeP99), ratio(b.m.probeP99.Seconds(), a.m.probeP99.Seconds()))
	fmt.Fprintf(stdout, "%-28s %14s %14s %10s\n", "propagation p99", d(a.prop), d(b.prop), ratio(b.prop.Seconds(), a.prop.Seconds()))
	fmt.Fprintf(stdout, "%-28s %14s %14s %10s\n", "hub CPU per request", d(a.m.cpuPerReq), d(b.m.cpuPerReq), ratio(b.m.cpuPerReq.Seconds(), a.m.cpuPerReq.Seconds()))
	fmt.Fprintf(stdout, "%-28s %14s %14s %10s\n", "PostgreSQL CPU per request", "-", d(b.m.pgPerReq), "")
	fmt.Fprintf(stdout, "%-28s %14d %14d\n", "errors", a.m.errs, b.m.errs)
	fmt.Fprintf(stdout, "load average %s at the end\n", loadavg())
	return nil
}
