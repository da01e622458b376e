package main

import (
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// runFleet is the fleet run (bench/hubload-fleet): one hub, the fleet
// grown through -points (each measured for -duration at -interval, every
// agent long-polling), propagation with the first point's agents, then
// the largest fleet pushed through the -ramp request rates until one is
// not sustained; then one table. The first point is the same-run
// baseline of the scale ratios, the healthz probe that of latency.
func runFleet(c config, exe string, soft uint64, stdout io.Writer) error {
	start := time.Now()
	most := maxAgents(soft, 1)
	pts, err := parsePoints(c.points, most)
	if err != nil {
		return err
	}
	var rates []float64
	for _, r := range strings.Split(c.rampRates, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		v, err := strconv.ParseFloat(r, 64)
		if err != nil || v <= 0 {
			return fmt.Errorf("-ramp: %q is not a request rate", r)
		}
		rates = append(rates, v)
	}
	hs, err := startChecked(exe, c.replicas, c.pgURL, pts[len(pts)-1])
	if err != nil {
		return err
	}
	defer hs.stop()
	hubLimit := soft
	if hs.separate() {
		if hubLimit, err = hs.noFile(); err != nil {
			return err
		}
	} else {
		most = maxAgents(soft, 2)
	}
	f, err := newFleet(hs, c.interval, c.guests, c.change, c.longpoll, c.conc)
	if err != nil {
		return err
	}
	defer f.stop()
	time.Sleep(2 * time.Second) // the hub's first sweep
	rss0 := hs.rssKiB()
	fmt.Fprintf(stdout, "fleet: hub %s (open files %d), points %v, interval %v, %v each, change %.2f, %d guests per report; load average %s\n",
		hs.label, hubLimit, pts, c.interval, c.dur, c.change, c.guests, loadavg())

	type row struct {
		m    measurement
		kind string
	}
	var rows []row
	var prop struct {
		n                 int
		p50, p99, pm, all time.Duration
		err               error
	}
	for k, n := range pts {
		t0 := time.Now()
		if err := f.grow(n); err != nil {
			return err
		}
		label := fmt.Sprintf("%d agents", n)
		fmt.Fprintf(stdout, "[%s] enrolled (each: join token, enroll, first report) in %v; load average %s\n", label, time.Since(t0).Round(time.Millisecond), loadavg())
		prof := func() {}
		if n == 10000 || (k == len(pts)-1 && !contains(pts, 10000)) {
			prof = profileDuring(f, c.profile, label, c.dur)
		}
		m := f.measure(c.dur, label)
		prof()
		rows = append(rows, row{m, "point"})
		if k == 0 && c.longpoll {
			prop.n = n
			prop.p50, prop.p99, prop.pm, prop.all, prop.err = f.propagation(label, 1)
			if prop.err != nil {
				fmt.Fprintf(stdout, "[%s] propagation: %v\n", label, prop.err)
			}
		}
	}
	n := len(f.agents)
	var limit *measurement
	for _, r := range rates {
		iv := time.Duration(float64(n) / r * float64(time.Second))
		f.setInterval(iv)
		time.Sleep(2 * time.Second)
		label := fmt.Sprintf("ramp %.0f/s", r)
		m := f.measure(c.rampDur, label)
		rows = append(rows, row{m, "ramp"})
		if !sustained(m) {
			limit = &rows[len(rows)-1].m
			break
		}
	}

	// The table.
	base := rows[0].m
	d := func(x time.Duration) string {
		switch {
		case x == 0:
			return "-"
		case x < time.Millisecond:
			return x.Round(time.Microsecond).String()
		case x < time.Second:
			return x.Round(100 * time.Microsecond).String()
		}
		return x.Round(10 * time.Millisecond).String()
	}
	ratio := func(x, y time.Duration) string {
		if y <= 0 || x <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", x.Seconds()/y.Seconds())
	}
	cores := float64(runtime.NumCPU())
	fmt.Fprintf(stdout, "\nhubload fleet: %s, TLS + HTTP/2, one connection per agent, every agent long-polling; GOMAXPROCS %d, %d CPUs; finished in %v\n",
		hs.label, runtime.GOMAXPROCS(0), runtime.NumCPU(), time.Since(start).Round(time.Second))
	fmt.Fprintf(stdout, "ratios: p99/probe = heartbeat p99 over the healthz probe's p99 in the same window; x%d = against the %d-agent point\n", base.agents, base.agents)
	fmt.Fprintf(stdout, "%-6s %7s %8s %9s %9s %8s %8s %8s %8s %9s %8s %6s %5s %8s %8s %6s %8s %6s %7s %6s %5s %s\n",
		"", "agents", "interval", "target/s", "done/s", "hb p50", "hb p99", "hb max", "rep p99", "probe p99", "p99/prb", "p99x1", "errs", "hub CPU", "CPU/req", "x1", "KiB/agt", "x1", "fd/agt", "gen", "mach", "load")
	for _, r := range rows {
		m := r.m
		kib := float64(m.rssKiB-rss0) / float64(m.agents)
		kibRatio := "-"
		if b := float64(base.rssKiB-rss0) / float64(base.agents); b > 0 && hs.separate() {
			kibRatio = fmt.Sprintf("%.2fx", kib/b)
		}
		hubCPU, kibS, fds := "-", "-", "-"
		if hs.separate() {
			hubCPU = fmt.Sprintf("%.0f%%", 100*m.hubCPU.Seconds()/m.dur.Seconds())
			kibS, fds = fmt.Sprintf("%.1f", kib), fmt.Sprintf("%.2f", float64(m.fds)/float64(m.agents))
		}
		fmt.Fprintf(stdout, "%-6s %7d %8s %9.1f %9.1f %8s %8s %8s %8s %9s %8s %6s %5d %8s %8s %6s %8s %6s %7s %5.0f%% %4.0f%% %s\n",
			r.kind, m.agents, m.interval.Round(100*time.Millisecond), m.target, m.rate, d(m.hbP50), d(m.hbP99), d(m.hbMax), d(m.repP99), d(m.probeP99),
			ratio(m.hbP99, m.probeP99), ratio(m.hbP99, base.hbP99), m.errs+m.pollErrs, hubCPU, d(m.cpuPerReq), ratio(m.cpuPerReq, base.cpuPerReq),
			kibS, kibRatio, fds, 100*m.genCPU.Seconds()/m.dur.Seconds(), 100*m.machBusy, m.load)
	}
	fmt.Fprintln(stdout, "(hub CPU and gen: % of one core used by the hub and by this load generator in the window; mach: the machine's CPUs busy, every process; errs: failed reports and long-polls)")
	if prop.n > 0 {
		if prop.err != nil {
			fmt.Fprintf(stdout, "propagation with %d agents long-polling: %v\n", prop.n, prop.err)
		} else {
			fmt.Fprintf(stdout, "propagation with %d agents long-polling (PUT desired of each host, 8 at a time, to its agent's fetch): p50 %s, p99 %s, max %s; all %d within %s (goal p99 < 1s: %s)\n",
				prop.n, d(prop.p50), d(prop.p99), d(prop.pm), prop.n, d(prop.all), met(prop.p99 < time.Second))
		}
	}
	for _, r := range rows {
		if r.kind == "point" && r.m.agents == 10000 {
			fmt.Fprintf(stdout, "goal: 10,000 agents at 60s with heartbeat p99 < 100ms: %s (p99 %s at interval %v, %d errors, load average %s)\n",
				met(r.m.hbP99 < 100*time.Millisecond && r.m.errs == 0 && r.m.interval == time.Minute), d(r.m.hbP99), r.m.interval, r.m.errs, r.m.load)
		}
	}
	var best *measurement
	for i := range rows {
		if m := &rows[i].m; sustained(*m) && (best == nil || m.rate > best.rate) {
			best = m
		}
	}
	if best != nil {
		fmt.Fprintf(stdout, "highest sustained rate: %.0f requests/s (%d agents at %v; heartbeat p99 %s; hub CPU %.0f%%, load generator %.0f%% of one core)\n",
			best.rate, best.agents, best.interval.Round(100*time.Millisecond), d(best.hbP99), 100*best.hubCPU.Seconds()/best.dur.Seconds(), 100*best.genCPU.Seconds()/best.dur.Seconds())
	}
	if limit != nil {
		hub, gen := 100*limit.hubCPU.Seconds()/limit.dur.Seconds(), 100*limit.genCPU.Seconds()/limit.dur.Seconds()
		why := fmt.Sprintf("the hub itself (the machine's CPUs were %.0f%% busy, the hub using %.0f%% and this generator %.0f%% of one core): queueing for its store (the store call means above say which)",
			100*limit.machBusy, hub, gen)
		switch {
		case hub+gen >= 85*cores:
			why = fmt.Sprintf("the machine's %.0f cores, all used by the hub (%.0f%% of one core) and this load generator (%.0f%%)", cores, hub, gen)
		case limit.machBusy >= 0.9:
			why = fmt.Sprintf("the machine's CPUs (%.0f%% busy; the hub used %.0f%% and this generator %.0f%% of one core, other processes the rest): re-run on a quiet machine", 100*limit.machBusy, hub, gen)
		}
		fmt.Fprintf(stdout, "not sustained: %.0f requests/s asked, %.0f done, heartbeat p99 %s, %d errors; limited by %s; load average %s\n",
			limit.target, limit.rate, d(limit.hbP99), limit.errs, why, limit.load)
	} else if len(rates) > 0 {
		fmt.Fprintln(stdout, "every ramp rate was sustained: the limit lies beyond the last -ramp rate")
	}
	reach := "100,000 agents fit"
	if min(maxAgents(hubLimit, 1), most) < 100000 {
		reach = "100,000 agents are not reachable here"
	}
	fmt.Fprintf(stdout, "fleet size: one hub process holds at most %d agents under its open-file limit of %d (one descriptor per agent's connection); this load generator at most %d under its own %d: %s\n",
		maxAgents(hubLimit, 1), hubLimit, most, soft, reach)
	return nil
}

// sustained: the fleet's requests were served at (nearly) their rate,
// without errors, none waiting a second.
func sustained(m measurement) bool {
	return m.rate >= 0.95*m.target && m.errs == 0 && m.hbP99 < time.Second
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
