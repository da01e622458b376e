package main

import (
	"io"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestCheckAgentsNamesTheLimit(t *testing.T) {
	if err := checkAgents(19800, 20000, 1, "the hub process"); err != nil {
		t.Fatalf("19800 agents under 20000 descriptors: %v", err)
	}
	err := checkAgents(19801, 20000, 1, "the hub process")
	if err == nil || !strings.Contains(err.Error(), "20000") || !strings.Contains(err.Error(), "at most 19800") || !strings.Contains(err.Error(), "the hub process") {
		t.Fatalf("19801 agents under 20000 descriptors: got %v; want a refusal naming the limit, the process and the most it holds", err)
	}
	if err := checkAgents(9901, 20000, 2, "this process"); err == nil {
		t.Fatal("9901 agents with both connection ends in a 20000-descriptor process: accepted")
	}
}

// An impossible number of agents is refused before anything starts (no
// hub is built or started: the error comes back at once, naming the
// limit).
func TestRunRefusesAgentsBeyondTheLimit(t *testing.T) {
	soft, _, err := raiseNoFile()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-hub", "inproc", "-agents", strconv.Itoa(maxAgents(soft, 2) + 1)},
		{"-hub", "steward", "-steward", "/nonexistent/steward", "-agents", strconv.Itoa(maxAgents(soft, 1) + 1)},
		{"-hub", "steward", "-steward", "/nonexistent/steward", "-fleet", "-points", "10," + strconv.Itoa(maxAgents(soft, 1)+1)},
	} {
		err := run(args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "open-file limit") || !strings.Contains(err.Error(), strconv.FormatUint(soft, 10)) {
			t.Errorf("run %v: got %v; want a refusal naming the open-file limit %d", args, err, soft)
		}
	}
}

func TestParsePoints(t *testing.T) {
	got, err := parsePoints("1000, 10000,max", 19800)
	if err != nil || len(got) != 3 || got[0] != 1000 || got[1] != 10000 || got[2] != 19800 {
		t.Fatalf("parsePoints: got %v, %v", got, err)
	}
	if got, err := parsePoints("1000,max", 800); err != nil || len(got) != 1 {
		t.Fatalf("max below the last point: got %v, %v; want it dropped", got, err)
	}
	for _, bad := range []string{"", "10000,1000", "x", "0"} {
		if _, err := parsePoints(bad, 19800); err == nil {
			t.Errorf("parsePoints(%q): accepted", bad)
		}
	}
}

// Each simulated agent holds one connection (TLS, HTTP/2) for its
// enrollment, reports, heartbeats and long-poll, from its own source
// address, as a real agent does; propagation reaches every agent.
func TestOneConnectionPerAgent(t *testing.T) {
	hs, err := startSet("", 1, "")
	if err != nil {
		t.Fatal(err)
	}
	defer hs.stop()
	const n = 12
	f, err := newFleet(hs, 50*time.Millisecond, 4, 0.3, true, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer f.stop()
	if err := f.grow(n); err != nil {
		t.Fatal(err)
	}
	// Every agent reports a few times while its long-poll is held.
	for done := false; !done; {
		done = f.heldPolls() == n
		for _, a := range f.agents {
			done = done && a.ticks.Load() >= 3
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, _, _, _, err := f.propagation("test", 1); err != nil {
		t.Fatal(err)
	}
	conns := hs.in.connsFrom()
	for _, a := range f.agents {
		if got := conns[sourceAddr(a.i).String()]; got != 1 {
			t.Errorf("agent %d (%s): %d connections; want 1 (%d reports and heartbeats, a long-poll, a propagated generation %d)",
				a.i, sourceAddr(a.i), got, a.ticks.Load(), a.gen.Load())
		}
		if a.gen.Load() < 1 {
			t.Errorf("agent %d holds generation %d after the propagation", a.i, a.gen.Load())
		}
	}
}
