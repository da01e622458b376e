// Package alert sends the hub's notifications: events that need a person
// (a host gone silent, drift on a guest in observe mode, a destructive
// change waiting for signatures, a failed operation, a rejected job, a
// frozen or blocked host, a broken journal receipt chain) routed by rules
// to sinks (a signed JSON webhook, a Slack or Mattermost incoming webhook,
// ntfy, e-mail over SMTP with STARTTLS).
//
// # Delivery
//
// Emit turns an Alert into one outbox message per sink its rules name
// (store.Store's EnqueueNotification): the message is durable before Emit
// returns, so a hub that stops or crashes afterwards loses nothing. The
// Dispatcher claims due messages under a lease, sends each and
// acknowledges it; a failed send is retried with capped exponential
// backoff and jitter (Retry), one the sink refused for good (an HTTP 4xx
// other than 408 and 429) or that kept failing for GiveUpAfter is given
// up (state dead, counted). A hub that dies mid-send leaves the claim to
// run out and the message to be claimed again: delivery is at least
// once, and several hubs on one PostgreSQL store share the outbox without
// sending a message twice except after such a lost lease.
//
// # Dedup
//
// Every Alert has a key: its event and what it is about (host, guest,
// job). A message whose sink and key were enqueued within the rule's
// dedup window (default DefaultDedup) is dropped, so a flapping guest
// sends one message per window, not one per report. After the window,
// the same condition seen again sends again (a reminder).
//
// This package owns no goroutine but Run's, which its caller owns.
package alert

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Events an Alert can carry (the names rules use).
const (
	// HostSilent: no report nor heartbeat for SilentIntervals poll
	// intervals.
	HostSilent = "host.silent"
	// GuestDrift: a guest in observe mode differs from its desired
	// state (a report's drift_observed phase).
	GuestDrift = "guest.drift"
	// PendingWaiting: a destructive action has waited for signatures for
	// longer than PendingAfter.
	PendingWaiting = "pending.waiting"
	// OpFailed: an operation failed (an action of a report with an
	// error, or a signed job whose result is failed).
	OpFailed = "op.failed"
	// JobRejected: the agent refused a signed job.
	JobRejected = "job.rejected"
	// HostFrozen: the host's local freeze file stops every mutation.
	HostFrozen = "host.frozen"
	// HostBlocked: an operator blocked the host.
	HostBlocked = "host.blocked"
	// ReceiptsBroken: the host's journal receipts left a gap or broke
	// their hash chain.
	ReceiptsBroken = "receipts.broken"
	// Test: a test message (steward notify test).
	Test = "test"
)

// Events lists every event a rule may name.
var Events = []string{HostSilent, GuestDrift, PendingWaiting, OpFailed, JobRejected, HostFrozen, HostBlocked, ReceiptsBroken}

// Alert is one thing that needs a person. It is what the outbox holds
// (as JSON) and what a webhook receives.
type Alert struct {
	Event string    `json:"event"`
	Host  string    `json:"host,omitempty"`
	VMID  int       `json:"vmid,omitempty"`
	Time  time.Time `json:"time"`
	// Subject tells apart alerts of one event on one guest (a job id, an
	// op); part of the key.
	Subject string `json:"subject,omitempty"`
	Summary string `json:"summary"`
	Detail  string `json:"detail,omitempty"`
}

// Key is what dedup compares: event, host, guest and subject.
func (a Alert) Key() string {
	parts := []string{a.Event, a.Host}
	if a.VMID != 0 {
		parts = append(parts, strconv.Itoa(a.VMID))
	}
	if a.Subject != "" {
		parts = append(parts, a.Subject)
	}
	return strings.Join(parts, "/")
}

// Title is a one-line heading: "steward: host.silent on pve-a guest 101".
func (a Alert) Title() string {
	t := "steward: " + a.Event
	if a.Host != "" {
		t += " on " + a.Host
	}
	if a.VMID != 0 {
		t += fmt.Sprintf(" guest %d", a.VMID)
	}
	return t
}

// Text is the message body chat and e-mail sinks send.
func (a Alert) Text() string {
	var b strings.Builder
	b.WriteString(a.Summary)
	if a.Detail != "" {
		b.WriteString("\n" + a.Detail)
	}
	fmt.Fprintf(&b, "\n(%s at %s)", a.Key(), a.Time.UTC().Format(time.RFC3339))
	return b.String()
}
