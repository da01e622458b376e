package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

func init() { register(newContextCmd) }

// ContextJSON is one login context as `steward context list -o json`
// shows it. The token is never shown.
type ContextJSON struct {
	Name        string `json:"name"`
	Current     bool   `json:"current"`
	Hub         string `json:"hub"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

func newContextCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "context",
		Short: "List, switch and remove login contexts (hubs logged in to)",
		Long: `A context is one hub an operator logged in to (steward login): its URL,
pinned certificate fingerprint and operator token, kept in the config file.
Operator commands use the current context unless --context names another.`,
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the login contexts; the current one is marked *",
		Long: `list shows every login context. With -o json or -o yaml it prints
{"contexts": [{"name", "current", "hub", "fingerprint"}]}, sorted by name;
tokens are never printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(cmd)
			if err != nil {
				return err
			}
			path, err := configPath(cmd)
			if err != nil {
				return err
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			out := struct {
				Contexts []ContextJSON `json:"contexts"`
			}{Contexts: []ContextJSON{}}
			for _, n := range cfg.names() {
				c := cfg.Contexts[n]
				out.Contexts = append(out.Contexts, ContextJSON{Name: n, Current: n == cfg.Current, Hub: c.Hub, Fingerprint: c.Fingerprint})
			}
			return writeOutput(stdout, format, out, func(w io.Writer) error {
				if len(out.Contexts) == 0 {
					fmt.Fprintf(w, "No contexts in %s: log in with steward login --hub URL\n", path)
					return nil
				}
				tw := newTable(w)
				fmt.Fprintln(tw, "CURRENT\tNAME\tHUB\tFINGERPRINT")
				for _, c := range out.Contexts {
					mark := ""
					if c.Current {
						mark = "*"
					}
					fp := c.Fingerprint
					if fp == "" {
						fp = "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", mark, c.Name, c.Hub, fp)
				}
				return tw.Flush()
			})
		},
	}
	addLoginFileFlag(list, "")
	addOutputFlag(list)

	use := &cobra.Command{
		Use:   "use NAME",
		Short: "Make a login context the current one",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return editConfig(cmd, args[0], func(cfg *opConfig) { cfg.Current = args[0] }, stdout,
				fmt.Sprintf("Now using context %q", args[0]))
		},
	}
	addLoginFileFlag(use, "")

	rm := &cobra.Command{
		Use:   "rm NAME",
		Short: "Forget a login context and its token (the token stays valid on the hub)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return editConfig(cmd, args[0], func(cfg *opConfig) {
				delete(cfg.Contexts, args[0])
				if cfg.Current == args[0] {
					cfg.Current = ""
				}
			}, stdout, fmt.Sprintf("Removed context %q", args[0]))
		},
	}
	addLoginFileFlag(rm, "")
	cmd.AddCommand(list, use, rm)
	return cmd
}

// editConfig applies edit to the config when it has context name, saves
// it and prints done.
func editConfig(cmd *cobra.Command, name string, edit func(*opConfig), stdout io.Writer, done string) error {
	path, err := configPath(cmd)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	if cfg.Contexts[name] == nil {
		return fmt.Errorf("no context %q in %s: `steward context list` shows them", name, path)
	}
	edit(cfg)
	if err := saveConfig(path, cfg); err != nil {
		return err
	}
	fmt.Fprintln(stdout, done)
	return nil
}
