package cli

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
)

func init() { register(newNotifyCmd) }

func newNotifyCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "notify",
		Short: "Work with the hub's notifications",
		Long: `The hub sends notifications (webhook, Slack/Mattermost, ntfy, e-mail) by the
rules of its --notify-config file; the sinks and their secrets live there,
on the hub.`,
	}
	var wait time.Duration
	test := &cobra.Command{
		Use:   "test SINK",
		Short: "Send a test message through one of the hub's sinks",
		Long: `test asks the hub to send a test message through the sink named SINK in its
notification config, through its outbox as any notification, and waits up to
--wait for the outcome: delivered, or the sink's error (the hub retries a
failing sink with backoff; the message stays queued after --wait). It exits
non-zero unless the message was delivered. -o json|yaml prints the outbox
entry.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, c, err := operatorOutput(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var sent struct {
				ID int64 `json:"id"`
			}
			if err := c.JSON(ctx, http.MethodPost, "/v1/notifications/test", nil, map[string]string{"sink": args[0]}, &sent); err != nil {
				return fmt.Errorf("notify test: %w", err)
			}
			deadline := time.Now().Add(wait)
			var n hub.NotificationJSON
			for {
				var out struct {
					Notifications []hub.NotificationJSON `json:"notifications"`
				}
				q := url.Values{"after": {strconv.FormatInt(sent.ID-1, 10)}, "limit": {"1"}}
				if err := c.JSON(ctx, http.MethodGet, "/v1/notifications", q, nil, &out); err != nil {
					return fmt.Errorf("notify test: reading the outcome: %w", err)
				}
				if len(out.Notifications) == 1 && out.Notifications[0].ID == sent.ID {
					n = out.Notifications[0]
				}
				if n.State != store.OutboxPending && n.State != "" || !time.Now().Before(deadline) {
					break
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(250 * time.Millisecond):
				}
			}
			if err := writeOutput(stdout, format, n, func(w io.Writer) error {
				switch n.State {
				case store.OutboxDelivered:
					_, err := fmt.Fprintf(w, "Test message %d delivered through sink %q.\n", sent.ID, args[0])
					return err
				case store.OutboxDead:
					_, err := fmt.Fprintf(w, "Test message %d to sink %q was refused: %s\n", sent.ID, args[0], n.LastError)
					return err
				}
				_, err := fmt.Fprintf(w, "Test message %d to sink %q is not delivered yet (%d attempts; last error: %s); the hub keeps retrying.\n", sent.ID, args[0], n.Attempts, orDash(n.LastError))
				return err
			}); err != nil {
				return err
			}
			if n.State != store.OutboxDelivered {
				return fmt.Errorf("notify test: the test message to %q was not delivered", args[0])
			}
			return nil
		},
	}
	test.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to wait for the outcome")
	addOperatorFlags(test)
	addOutputFlag(test)
	cmd.AddCommand(test)
	return cmd
}
