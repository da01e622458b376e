package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// fdSpare is the descriptors a process keeps beside one per agent
// connection: the listener, the store's files, operator and probe
// connections, the profile listener, pipes.
const fdSpare = 200

// raiseNoFile raises this process's RLIMIT_NOFILE soft limit to the hard
// one (Go does so at start on Linux too; done here so that the limit is
// certain and printed) and returns the limit now in effect.
func raiseNoFile() (soft, hard uint64, err error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, 0, fmt.Errorf("reading the open-file limit: %w", err)
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, 0, fmt.Errorf("raising the open-file limit to %d: %w", l.Max, err)
		}
	}
	return l.Cur, l.Max, nil
}

// maxAgents is how many agents a process with limit descriptors holds
// with perAgent descriptors each (1: one end of each agent's connection;
// 2: hub and agents in one process, both ends).
func maxAgents(limit uint64, perAgent int) int {
	if limit <= fdSpare {
		return 0
	}
	return int(limit-fdSpare) / perAgent
}

// checkAgents refuses, before anything starts, a number of agents that a
// process with limit descriptors cannot hold (one connection per agent;
// perAgent descriptors each in that process), naming the limit.
func checkAgents(agents int, limit uint64, perAgent int, who string) error {
	if m := maxAgents(limit, perAgent); agents > m {
		return fmt.Errorf("%d agents need %d open files in %s (%d per agent, one per connection end, plus %d spare), but its open-file limit (RLIMIT_NOFILE, hard) is %d: at most %d agents here; raise the hard limit (ulimit -Hn, LimitNOFILE=) to go further",
			agents, agents*perAgent+fdSpare, who, perAgent, fdSpare, limit, m)
	}
	return nil
}

// procNoFile reads the soft open-file limit of process pid.
func procNoFile(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				return strconv.ParseUint(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("/proc/%d/limits names no open-file limit", pid)
}

// procFDs counts the open descriptors of process pid (-1 if unknown).
func procFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// procRSSKiB reads the resident set size of process pid.
func procRSSKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
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

// procCPU returns the CPU time of process pid so far (user + system).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
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

// loadavg is /proc/loadavg's three averages.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// machineCPU returns the machine's busy and total CPU time so far, from
// /proc/stat (every process, this one and the hub included).
func machineCPU() (busy, total time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	var all, idle int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		all += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	tick := 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(all-idle) * tick, time.Duration(all) * tick
}
