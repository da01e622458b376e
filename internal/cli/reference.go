package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Regenerate docs/commands.md after changing a command, a flag or a help
// text (TestCommandReferenceIsCurrent fails until it is):
//
//go:generate go run ../../docs/gen -o ../../docs/commands.md

// Tree returns steward's command tree as Run builds it, with cobra's help
// and completion commands added (Run adds them when it executes), for
// generators of documentation and shell completions. Its commands write to
// io.Discard; running them is not its purpose.
func Tree() *cobra.Command {
	root := newRoot(io.Discard, io.Discard)
	root.InitDefaultHelpFlag()
	root.InitDefaultVersionFlag()
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	return root
}

// WriteReference writes the command reference (docs/commands.md) in
// Markdown, generated from the command tree's own help: every command with
// its usage, help text and flags, each flag with its environment variable
// and default. The output depends only on the source: a default derived
// from the home directory or an XDG directory of whoever runs it is
// written as ~ or $XDG_..._HOME.
func WriteReference(w io.Writer) error {
	root := Tree()
	var b strings.Builder
	b.WriteString("# Command reference\n\n")
	b.WriteString("<!-- Generated from steward's own help by `go generate ./internal/cli` (or\n" +
		"`go run ./docs/gen`); do not edit by hand. -->\n\n")
	b.WriteString("Every flag of a command can also be set from the environment, as the column\n" +
		"\"environment\" shows (`--pve-url` is `STEWARD_PVE_URL`); a flag on the command\n" +
		"line wins. Exit status 64 means a usage error for every command.\n\n")
	var all []*cobra.Command
	var walk func(c *cobra.Command, depth int)
	walk = func(c *cobra.Command, depth int) {
		if c.Hidden {
			return
		}
		all = append(all, c)
		fmt.Fprintf(&b, "%s- [%s](#%s)\n", strings.Repeat("  ", depth), c.CommandPath(), anchor(c.CommandPath()))
		for _, sub := range c.Commands() {
			walk(sub, depth+1)
		}
	}
	walk(root, 0)
	for _, c := range all {
		writeCommand(&b, c)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// anchor is the id GitHub gives a heading's text.
func anchor(heading string) string {
	return strings.ToLower(strings.ReplaceAll(heading, " ", "-"))
}

func writeCommand(b *strings.Builder, c *cobra.Command) {
	fmt.Fprintf(b, "\n## %s\n\n", c.CommandPath())
	fmt.Fprintf(b, "%s\n", mdEscape(c.Short))
	if long := strings.TrimSpace(c.Long); long != "" {
		fmt.Fprintf(b, "\n```text\n%s\n```\n", long)
	}
	if c.Runnable() {
		fmt.Fprintf(b, "\n```text\n%s\n```\n", c.UseLine())
	}
	if len(c.Aliases) > 0 {
		fmt.Fprintf(b, "\nAliases: `%s`\n", strings.Join(c.Aliases, "`, `"))
	}
	if ex := dedent(c.Example); ex != "" {
		fmt.Fprintf(b, "\nExamples:\n\n```sh\n%s\n```\n", ex)
	}
	var rows []string
	env := c.Runnable() && c.HasParent() // bindEnv runs for subcommands only
	c.NonInheritedFlags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Name == "help" {
			return
		}
		rows = append(rows, flagRow(f, env))
	})
	writeFlagTable(b, "", rows)
	var inherited []string
	c.InheritedFlags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Name == "help" || f.Name == "version" {
			return
		}
		inherited = append(inherited, flagRow(f, env))
	})
	if c.HasParent() {
		writeFlagTable(b, "Flags it takes from "+c.Parent().CommandPath()+":\n", inherited)
	}
	var subs []string
	for _, sub := range c.Commands() {
		if !sub.Hidden {
			subs = append(subs, fmt.Sprintf("- [%s](#%s): %s\n", sub.CommandPath(), anchor(sub.CommandPath()), mdEscape(sub.Short)))
		}
	}
	if len(subs) > 0 {
		b.WriteString("\nSubcommands:\n\n")
		for _, s := range subs {
			b.WriteString(s)
		}
	}
}

// writeFlagTable writes rows as one table under heading (may be empty).
func writeFlagTable(b *strings.Builder, heading string, rows []string) {
	if len(rows) == 0 {
		return
	}
	if heading != "" {
		b.WriteString("\n" + heading)
	}
	b.WriteString("\n| flag | environment | default | meaning |\n|---|---|---|---|\n")
	for _, r := range rows {
		b.WriteString(r)
	}
}

func flagRow(f *pflag.Flag, env bool) string {
	name := "--" + f.Name
	if f.Shorthand != "" {
		name = "-" + f.Shorthand + ", " + name
	}
	varname, usage := pflag.UnquoteUsage(f)
	if varname != "" {
		name += " " + varname
	}
	envName := ""
	if env && f.Name != "version" {
		envName = "`" + EnvName(f.Name) + "`"
	}
	def := ""
	if !zeroDefault(f) {
		def = "`" + strings.ReplaceAll(portableDefault(f.DefValue), "|", `\|`) + "`"
	}
	return fmt.Sprintf("| `%s` | %s | %s | %s |\n", name, envName, def, cellEscape(usage))
}

// zeroDefault reports whether f's default is its type's zero value, which
// the reference leaves blank (as cobra's help does).
func zeroDefault(f *pflag.Flag) bool {
	switch f.DefValue {
	case "", "false", "0", "0s", "[]", "<nil>":
		return true
	}
	return false
}

// portableDefault replaces, in a flag's default, the parts that depend on
// who generates the reference: the home directory and XDG base directories.
func portableDefault(v string) string {
	for _, x := range []string{"XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"} {
		if d := os.Getenv(x); d != "" && strings.HasPrefix(v, d) {
			return "$" + x + strings.TrimPrefix(v, d)
		}
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" && home != "/" && strings.HasPrefix(v, home) {
		return "~" + strings.TrimPrefix(v, home)
	}
	return v
}

// dedent trims blank lines around s and the indentation all its lines
// share (cobra prints examples indented; the reference shows them flush).
func dedent(s string) string {
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	var prefix string
	set := false
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		ind := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		if !set {
			prefix, set = ind, true
			continue
		}
		n := 0
		for n < len(prefix) && n < len(ind) && prefix[n] == ind[n] {
			n++
		}
		prefix = prefix[:n]
	}
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, prefix)
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// mdEscape keeps text that reads as HTML (<state-dir>) from vanishing in
// rendered Markdown.
func mdEscape(s string) string {
	return strings.NewReplacer("<", "&lt;", ">", "&gt;").Replace(s)
}

// cellEscape makes s safe inside one Markdown table cell.
func cellEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "<", "&lt;", ">", "&gt;").Replace(s)
}
