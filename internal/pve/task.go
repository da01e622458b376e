package pve

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/steward-pve/steward/internal/backoff"
)

// WaitOptions controls WaitTask's polling: the first poll comes after
// Initial, each later one after twice the previous interval, capped at Max
// (minus up to 10% jitter). Zero fields mean the defaults, 200ms and 2s.
type WaitOptions struct {
	Initial time.Duration
	Max     time.Duration
}

// Default polling intervals of WaitTask.
const (
	DefaultWaitInitial = 200 * time.Millisecond
	DefaultWaitMax     = 2 * time.Second
)

// TaskResult is a task that stopped successfully. ExitStatus is "OK" or
// "WARNINGS: n"; Warnings is n.
type TaskResult struct {
	ExitStatus string
	Warnings   int
}

var warningsRE = regexp.MustCompile(`^WARNINGS: (\d+)$`)

// ParseExitStatus interprets a stopped task's exit status as PVE does
// (pve-common PVE::Tools::upid_status_is_error): "OK" and "WARNINGS: n"
// are success; anything else, including "", is failure and comes back as
// a *TaskError carrying the text unchanged.
func ParseExitStatus(upid UPID, exit string) (TaskResult, error) {
	if exit == "OK" {
		return TaskResult{ExitStatus: exit}, nil
	}
	if m := warningsRE.FindStringSubmatch(exit); m != nil {
		n, err := strconv.Atoi(m[1])
		if err == nil {
			return TaskResult{ExitStatus: exit, Warnings: n}, nil
		}
	}
	return TaskResult{}, &TaskError{UPID: upid, ExitStatus: exit}
}

// WaitTask polls the task's status on its own node (upid.Node) until it
// stops, and returns its result: success for "OK" and "WARNINGS: n", a
// *TaskError with PVE's exact text otherwise. Retryable read failures
// (IsRetryable) are polled through; any other failure, or ctx ending,
// returns at once (with ctx's error wrapped). WaitTask blocks; it is safe
// to call from several goroutines.
func (c *Client) WaitTask(ctx context.Context, upid UPID, o WaitOptions) (TaskResult, error) {
	if upid.IsZero() {
		return TaskResult{}, errors.New("pve: WaitTask of a zero UPID")
	}
	if err := checkNode(upid.Node); err != nil {
		return TaskResult{}, err
	}
	initial, limit := o.Initial, o.Max
	if initial <= 0 {
		initial = DefaultWaitInitial
	}
	if limit <= 0 {
		limit = DefaultWaitMax
	}
	if limit < initial {
		limit = initial
	}
	// Doubling polls, capped, each shortened by up to 10% jitter.
	poll := backoff.Policy{Initial: initial, Max: limit, Multiplier: 2, Jitter: 0.1}
	var lastErr error
	for attempt := 1; ; attempt++ {
		st, err := c.TaskStatus(ctx, upid.Node, upid)
		switch {
		case err == nil && !st.Running():
			return ParseExitStatus(upid, st.ExitStatus)
		case err == nil:
			lastErr = nil
		case IsRetryable(err) && ctx.Err() == nil:
			lastErr = err
			c.log.Debug("pve: task status read failed, will retry", "upid", upid.String(), "err", err)
		default:
			return TaskResult{}, fmt.Errorf("pve: wait for task %s: %w", upid, err)
		}
		if err := c.sleep(ctx, poll.Delay(attempt, c.jitter)); err != nil {
			if lastErr != nil {
				return TaskResult{}, fmt.Errorf("pve: wait for task %s: %w (last poll: %v)", upid, err, lastErr)
			}
			return TaskResult{}, fmt.Errorf("pve: wait for task %s: %w", upid, err)
		}
	}
}
