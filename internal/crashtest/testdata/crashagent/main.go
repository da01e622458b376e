// Command crashagent is `steward` with a crash hook, for the crash tests
// only (it lives under testdata so no build of ./... includes it).
// STEWARD_CRASHTEST_AT="point:n" kills the process with SIGKILL the n-th
// time the named crash point is reached; everything else is steward's own
// command line.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/steward-pve/steward/internal/cli"
	"github.com/steward-pve/steward/internal/crashpoint"
)

func main() {
	if point, nth, ok := strings.Cut(os.Getenv("STEWARD_CRASHTEST_AT"), ":"); ok {
		n, err := strconv.Atoi(nth)
		if err != nil || n < 1 {
			fmt.Fprintln(os.Stderr, "crashagent: bad STEWARD_CRASHTEST_AT")
			os.Exit(3)
		}
		var hits atomic.Int64
		crashpoint.SetHook(func(name string) {
			if name == point && hits.Add(1) == int64(n) {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
		})
	}
	if err := cli.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !cli.Silent(err) {
			fmt.Fprintln(os.Stderr, "steward:", err)
		}
		os.Exit(cli.ExitCode(err))
	}
}
