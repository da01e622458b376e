package cli

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Version is set at build time with -ldflags "-X .../internal/cli.Version=v1.2.3".
var Version = "dev"

func init() { register(newVersionCmd) }

func newVersionCmd(stdout, _ io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print steward's version and the commit it was built from",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runVersion(stdout)
		},
	}
}

func runVersion(w io.Writer) error {
	_, err := fmt.Fprintln(w, versionLine(readBuildInfo()))
	return err
}

func readBuildInfo() *debug.BuildInfo {
	bi, _ := debug.ReadBuildInfo()
	return bi
}

// versionLine is what `steward version` and `steward --version` print:
// the version, the commit the binary was built from and whether the tree
// had uncommitted changes (the build info's vcs.revision and vcs.modified,
// which `go build` records in a git checkout), the Go version and the
// platform. bi may be nil.
func versionLine(bi *debug.BuildInfo) string {
	commit := "commit unknown"
	if bi != nil {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			commit = "commit " + rev
			if modified == "true" {
				commit += " with uncommitted changes"
			}
		}
	}
	return fmt.Sprintf("steward %s (%s) %s %s/%s", Version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
