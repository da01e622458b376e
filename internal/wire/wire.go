// Package wire holds the messages the agent and the hub exchange, and
// their JSON encoding. It is a leaf of pure types: it does no I/O and
// imports no steward package that does, so the agent, the hub and the
// operator commands share one definition of what crosses the network.
//
// # Messages
//
//   - Report: what an agent saw, decided and did on its host in one tick
//     (host facts, every guest with its run state, lock and managed config,
//     the sync status of every managed guest with its reason, actions run,
//     destructive actions waiting for signatures with their payload bytes,
//     and signed jobs refused).
//   - JobResult: the fate of one signed job (done, failed, rejected, held),
//     so the hub can clear it.
//   - Control: the hub's answer to a report (poll interval, desired
//     generation, whether jobs wait, whether the host is blocked).
//   - Desired: a host's desired-state document with its generation.
//   - Receipt: one journal record shipped to the hub, hash-chained to the
//     one before it.
//
// # Encoding
//
// JSON as encoding/json writes it for these types: field names are
// snake_case, absent optional fields are omitted, times are RFC 3339,
// byte strings (signed payloads) are standard base64. The golden files in
// testdata/ pin the bytes; STEWARD_UPDATE_GOLDEN=1 regenerates them after
// an intended change.
//
// Decoding is strict: a message must be one JSON value of its type, no
// larger than its Max*Size, with no unknown field and nothing after it,
// and must pass its Validate method; an error names the message and the
// field. A message from a newer steward with fields this one does not
// know is therefore refused rather than half understood: new fields go
// with a new wire version.
//
// # Versions
//
// Version is the newest wire version this steward reads and writes. A
// hub names the version it reads in the VersionHeader of every answer to
// an agent (a hub that names none reads version 1); an agent sends the
// fields of a later version (marked "wire version N" in their doc) only
// to a hub that names N or later, so agents can be upgraded before or
// after their hub. Control.HubVersion carries the header to the agent.
//
//   - 1: the first.
//   - 2: Guest.Observed.
//   - 3: Sync.Provenance.
//   - 4: Pending.Quorum and JobResult.Quorum (how many signers of which
//     role an action needs, and who signed a held job already).
//   - 5: Receipt type ReceiptBreak (a new segment of the receipt chain).
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Version is the newest wire version this package reads and writes.
const Version = 5

// VersionHeader is the HTTP header in which a hub names the wire version
// it reads.
const VersionHeader = "Steward-Wire-Version"

// Size limits of encoded messages. A peer that sends more is refused
// before anything is decoded.
const (
	MaxReportSize     = 8 << 20 // a report of a host with thousands of guests
	MaxControlSize    = 4 << 10
	MaxDesiredSize    = 4 << 20
	MaxJobResultsSize = 1 << 20
	MaxReceiptsSize   = 4 << 20
)

// Limits on counts and lengths inside messages.
const (
	MaxGuests     = 100_000 // guests in one report
	MaxItems      = 10_000  // actions, pending, rejected, job results or receipts in one message
	MaxTextLen    = 64 << 10
	MaxParams     = 1_000 // parameters of one action
	MaxVMID       = 999_999_999
	MaxPayloadLen = 64 << 10 // a signed payload (signedop.MaxPayloadSize)
)

// ErrTooLarge is returned (wrapped) for a message over its size limit.
var ErrTooLarge = errors.New("wire: message too large")

// decode strictly decodes one JSON value of type T from b.
func decode[T any](what string, b []byte, max int) (T, error) {
	var v T
	if len(b) > max {
		return v, fmt.Errorf("%w: %s is %d bytes; at most %d accepted", ErrTooLarge, what, len(b), max)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, fmt.Errorf("wire: decoding %s: %w", what, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return v, fmt.Errorf("wire: decoding %s: data after the JSON value", what)
	}
	return v, nil
}

// encode is json.Marshal; the types here always marshal.
func encode(what string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("wire: encoding %s: %w", what, err)
	}
	return b, nil
}

// FieldError is a message that decoded but holds a bad value; Path names
// the field (for example "guests[3].vmid").
type FieldError struct {
	Message string // "report", "control", ...
	Path    string
	Msg     string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("wire: %s: %s: %s", e.Message, e.Path, e.Msg)
}

// checker collects the first FieldError of a message.
type checker struct {
	msg string
	err error
}

func (c *checker) fail(path, format string, args ...any) {
	if c.err == nil {
		c.err = &FieldError{Message: c.msg, Path: path, Msg: fmt.Sprintf(format, args...)}
	}
}

func (c *checker) text(path, s string, required bool) {
	switch {
	case required && s == "":
		c.fail(path, "required")
	case len(s) > MaxTextLen:
		c.fail(path, "%d bytes; at most %d", len(s), MaxTextLen)
	}
}

func (c *checker) count(path string, n, max int) {
	if n > max {
		c.fail(path, "%d entries; at most %d", n, max)
	}
}

func (c *checker) vmid(path string, id int) {
	if id < 1 || id > MaxVMID {
		c.fail(path, "vmid %d out of range 1..%d", id, MaxVMID)
	}
}

func (c *checker) kind(path, k string, required bool) {
	switch k {
	case "qemu", "lxc":
	case "":
		if required {
			c.fail(path, "required (qemu or lxc)")
		}
	default:
		c.fail(path, "unknown kind %q (want qemu or lxc)", k)
	}
}

func (c *checker) oneOf(path, s string, allowed ...string) {
	for _, a := range allowed {
		if s == a {
			return
		}
	}
	c.fail(path, "%q is not one of %q", s, allowed)
}

func (c *checker) params(path string, m map[string]string) {
	c.count(path, len(m), MaxParams)
	for k, v := range m {
		c.text(path+"["+k+"]", k, true)
		c.text(path+"["+k+"]", v, false)
	}
}
