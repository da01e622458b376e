// Command gen writes steward's command reference, docs/commands.md, from
// the CLI's own help (cli.WriteReference). Run it from the repository root
// after changing a command, a flag or a help text:
//
//	go run ./docs/gen            # or: go generate ./internal/cli
//
// internal/cli's TestCommandReferenceIsCurrent fails while the committed
// file differs from what this writes.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/steward-pve/steward/internal/atomicfile"
	"github.com/steward-pve/steward/internal/cli"
)

func main() {
	out := flag.String("o", "docs/commands.md", "file to write")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "docs/gen:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	var b bytes.Buffer
	if err := cli.WriteReference(&b); err != nil {
		return err
	}
	if err := atomicfile.Write(out, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing %s (run from the repository root, or pass -o): %w", out, err)
	}
	return nil
}
