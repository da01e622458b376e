// Package cli implements steward's command line: one file per subcommand,
// each building its dependencies from flags and calling into internal
// packages. Flags are the source of truth; every flag can also be set from
// the environment as STEWARD_<FLAG_NAME> (--hub-url → STEWARD_HUB_URL),
// and, for a command with a --config flag, from a YAML file whose keys
// are flag names (precedence: flag, environment, file, default).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// UsageError marks an error caused by how steward was invoked; it exits
// ExitUsage.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Exit statuses. ExitUsage is sysexits' EX_USAGE, so that a mistyped flag
// is never read as `steward agent --once`'s ExitChanged.
const (
	ExitFailure = 1
	ExitChanged = 2
	ExitUsage   = 64
)

// ExitStatus is a result that is not a failure but still sets the process
// exit status, such as ExitChanged from `steward agent --once`. main
// prints nothing for it (see Silent).
type ExitStatus struct {
	Code   int
	Reason string // for tests and logs
}

func (e *ExitStatus) Error() string { return e.Reason }

// Silent reports whether err only carries an exit status and is not to be
// printed as an error.
func Silent(err error) bool {
	var es *ExitStatus
	return errors.As(err, &es)
}

// ExitCode maps an error returned by Run to a process exit status: 0 for
// nil, ExitUsage for a UsageError, an ExitStatus's code, else ExitFailure.
func ExitCode(err error) int {
	var ue *UsageError
	var es *ExitStatus
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		return ExitUsage
	case errors.As(err, &es):
		return es.Code
	}
	return ExitFailure
}

// Run executes the steward command line in args, writing normal output to
// stdout and diagnostics to stderr, with no input (a command that would
// prompt reads end of input, which answers no). It returns when the
// command finishes or ctx is cancelled.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return RunIO(ctx, args, strings.NewReader(""), stdout, stderr)
}

// RunIO is Run with stdin, from which commands read answers to prompts
// (`steward login` asks to trust the hub's certificate and for a token).
// When stdin is a terminal, a secret is read without echo.
func RunIO(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err != nil && isCobraUsage(err) {
		return &UsageError{Err: err}
	}
	return err
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "steward",
		Short:         "Declarative, pull-based control of Proxmox VE guests",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindEnv(cmd); err != nil {
				return err
			}
			return applyConfigFile(cmd)
		},
	}
	for _, add := range subcommands {
		root.AddCommand(add(stdout, stderr))
	}
	// steward --version prints what `steward version` prints.
	root.Version = versionLine(readBuildInfo())
	root.SetVersionTemplate("{{.Version}}\n")
	return root
}

// subcommands is filled by each subcommand file's init, so adding a command
// touches only its own file.
var subcommands []func(stdout, stderr io.Writer) *cobra.Command

func register(f func(stdout, stderr io.Writer) *cobra.Command) { subcommands = append(subcommands, f) }

// EnvName returns the environment variable that sets flag name.
func EnvName(flag string) string {
	return "STEWARD_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// bindEnv sets every flag the user did not pass from its environment
// variable, if that is set. A bad value is an error naming the variable.
func bindEnv(cmd *cobra.Command) error {
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" || f.Annotations[noEnvAnnotation] != nil {
			return
		}
		v, ok := os.LookupEnv(EnvName(f.Name))
		if !ok {
			return
		}
		if err := cmd.Flags().Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("environment %s: %w", EnvName(f.Name), err))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return &UsageError{Err: err}
	}
	return nil
}

func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "accepts ", "requires at least", "required flag"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}
