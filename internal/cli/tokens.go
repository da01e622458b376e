package cli

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/hub"
)

func init() { register(newTokensCmd) }

func newTokensCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "Create, list and revoke operator tokens",
		Long: `Operator tokens let people and scripts use the hub's operator API (every command
but agent, hub, sim and op). The hub keeps only a hash of each; a token's secret is
shown once, when it is created. Names are unique and stay taken once revoked.`,
	}
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an operator token and print it (once)",
		Long: `create makes an operator token named NAME (whose or what it is: alice, ci-deploy)
and prints its secret, which the hub does not keep: give it to its owner, who logs
in with it (steward login --hub URL --token-file FILE). -o json|yaml prints
{"name", "token", "created_at"}.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, c, err := operatorOutput(cmd)
			if err != nil {
				return err
			}
			var out hub.NewTokenJSON
			if err := c.JSON(cmd.Context(), http.MethodPost, "/v1/tokens", nil, map[string]string{"name": args[0]}, &out); err != nil {
				return fmt.Errorf("tokens create: %w", err)
			}
			return writeOutput(stdout, format, out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Operator token %q (shown only now; the hub keeps only its hash):\n  %s\n", out.Name, out.Token)
				return err
			})
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the operator tokens (never their secrets)",
		Long: `list shows every operator token: name, when it was created, last used and revoked.
-o json|yaml prints {"tokens": [{"name", "created_at", "last_used", "revoked_at"}]}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, c, err := operatorOutput(cmd)
			if err != nil {
				return err
			}
			var out struct {
				Tokens []hub.TokenJSON `json:"tokens"`
			}
			if err := c.JSON(cmd.Context(), http.MethodGet, "/v1/tokens", nil, nil, &out); err != nil {
				return fmt.Errorf("tokens list: %w", err)
			}
			if out.Tokens == nil {
				out.Tokens = []hub.TokenJSON{}
			}
			return writeOutput(stdout, format, out, func(w io.Writer) error {
				tw := newTable(w)
				fmt.Fprintln(tw, "NAME\tCREATED\tLAST USED\tSTATE")
				for _, t := range out.Tokens {
					state := "valid"
					if t.RevokedAt != nil {
						state = "revoked " + t.RevokedAt.UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.CreatedAt.UTC().Format(time.RFC3339), timeOrDash(t.LastUsed), state)
				}
				return tw.Flush()
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke an operator token at once",
		Long: `revoke invalidates the operator token NAME at once. The hub refuses to revoke its
last valid token (create another first). -o json|yaml prints {"name", "status"}.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, c, err := operatorOutput(cmd)
			if err != nil {
				return err
			}
			var out struct {
				Name   string `json:"name"`
				Status string `json:"status"`
			}
			if err := c.JSON(cmd.Context(), http.MethodPost, "/v1/tokens/"+url.PathEscape(args[0])+"/revoke", nil, nil, &out); err != nil {
				return fmt.Errorf("tokens revoke: %w", err)
			}
			return writeOutput(stdout, format, out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Operator token %q revoked.\n", out.Name)
				return err
			})
		},
	}
	for _, c := range []*cobra.Command{create, list, revoke} {
		addOperatorFlags(c)
		addOutputFlag(c)
		cmd.AddCommand(c)
	}
	return cmd
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
