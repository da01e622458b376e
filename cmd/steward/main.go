// Command steward is declarative, pull-based control of Proxmox VE guests.
//
// One binary carries every part of steward as a subcommand: the simulator
// (steward sim), the agent, and the operator commands. main only parses,
// runs and exits; everything else lives under internal/.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/steward-pve/steward/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.RunIO(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !cli.Silent(err) {
			fmt.Fprintln(os.Stderr, "steward:", err)
		}
		os.Exit(cli.ExitCode(err))
	}
}
