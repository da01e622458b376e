// Package store defines the hub's Store: everything the hub keeps about
// its fleet (hosts and their tokens, operator tokens, desired documents
// with their generations, last reports, signed jobs, pending signatures,
// journal receipts, the operator audit log, the fleet's event log, and the
// outbox of notifications waiting for delivery).
//
// The hub owns the interface; implementations (sqlite, later PostgreSQL)
// live in their own packages and all pass the conformance suite in
// storetest. The store holds no secret: tokens reach it only as their
// HashToken, so a copy of the database does not let anyone act as a host
// or an operator.
//
// Unless a method says otherwise, every method is safe for concurrent use,
// may block on I/O (bounded by ctx), returns an error wrapping ErrNotFound
// when the host, token or job it names does not exist, and changes nothing
// when it returns an error.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/wire"
)

// Errors, wrapped with context by implementations; test with errors.Is.
var (
	// ErrNotFound: the host, token or job named does not exist (or, for
	// tokens, is expired, used or revoked: the caller cannot tell which,
	// by design).
	ErrNotFound = errors.New("store: not found")
	// ErrExists: a record with that key exists already.
	ErrExists = errors.New("store: already exists")
	// ErrConflict: an If-Match generation did not match the current one;
	// the caller reads the document again and retries.
	ErrConflict = errors.New("store: generation conflict")
	// ErrNewerSchema: the database was written by a newer steward; this
	// one refuses to touch it.
	ErrNewerSchema = errors.New("store: database schema is newer than this steward")
	// ErrInvalid: an argument is malformed (empty host id, bad hash ...).
	ErrInvalid = errors.New("store: invalid argument")
	// ErrLastOperator: revoking this operator token would leave the hub
	// with none, and nobody could use the operator API again; create
	// another token first.
	ErrLastOperator = errors.New("store: the last valid operator token cannot be revoked")
)

// Chain errors of AppendReceipts are wire.ErrChainGap and
// wire.ErrChainBroken (wrapped).

// AnyGeneration as PutDesired's ifMatch skips the optimistic check.
const AnyGeneration int64 = -1

// MaxHostIDLen bounds a host id.
const MaxHostIDLen = 253

// HashToken returns what the store keeps of a bearer token: the hex
// SHA-256 of it. Tokens are high-entropy random strings, so a plain hash
// suffices (no salt, no slow KDF), and lookups by hash need no
// constant-time compare.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// CheckHostID reports whether id can name a host: 1..MaxHostIDLen bytes
// of letters, digits, '-', '_' and '.' (what a node name or host id
// holds; nothing that needs escaping in a URL path).
func CheckHostID(id string) error {
	if id == "" || len(id) > MaxHostIDLen {
		return fmt.Errorf("%w: host id %q must be 1..%d characters", ErrInvalid, id, MaxHostIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%w: host id %q: character %q not allowed (letters, digits, '-', '_', '.')", ErrInvalid, id, c)
		}
	}
	return nil
}

// CheckHash reports whether h is a HashToken result.
func CheckHash(what, h string) error {
	if len(h) != 64 {
		return fmt.Errorf("%w: %s must be a hex SHA-256 (64 characters), got %d", ErrInvalid, what, len(h))
	}
	for i := 0; i < len(h); i++ {
		if !('0' <= h[i] && h[i] <= '9' || 'a' <= h[i] && h[i] <= 'f') {
			return fmt.Errorf("%w: %s must be lowercase hex", ErrInvalid, what)
		}
	}
	return nil
}

// CheckNotification reports whether n can be enqueued.
func CheckNotification(n Notification) error {
	switch {
	case n.Sink == "" || len(n.Sink) > 100:
		return fmt.Errorf("%w: a notification needs a sink name of 1..100 bytes", ErrInvalid)
	case n.Key == "" || len(n.Key) > 1000:
		return fmt.Errorf("%w: a notification needs a key of 1..1000 bytes", ErrInvalid)
	case len(n.Body) == 0 || len(n.Body) > MaxNotificationBody:
		return fmt.Errorf("%w: a notification body must be 1..%d bytes", ErrInvalid, MaxNotificationBody)
	case n.CreatedAt.IsZero():
		return fmt.Errorf("%w: a notification needs its creation time", ErrInvalid)
	}
	return nil
}

// Host is what the hub knows about one host.
type Host struct {
	ID        string
	CreatedAt time.Time
	// EnrolledAt is zero until the host enrolled with a join token.
	EnrolledAt time.Time
	// RevokedAt is non-zero once an operator revoked the host's token;
	// a new join token lets it enroll again.
	RevokedAt     time.Time
	Blocked       bool
	BlockedReason string
	// LastSeen is when the host last reported or sent a heartbeat (zero:
	// never).
	LastSeen time.Time
	// ReportHash is the hash of the last full report (empty: none).
	ReportHash string
	// DesiredGeneration is the generation of the host's current desired
	// document (0: none).
	DesiredGeneration int64
	// JobsWaiting is true while a job of the host is waiting (the
	// control envelope says so without reading the jobs).
	JobsWaiting bool
}

// Operator is a named operator token (its hash only).
type Operator struct {
	Name      string
	CreatedAt time.Time
	RevokedAt time.Time // zero while valid
	// LastUsed is when the token last authenticated a request, as
	// TouchOperator recorded it (zero: never).
	LastUsed time.Time
}

// Desired is one generation of a host's desired document.
type Desired struct {
	Host       string
	Generation int64 // 0: the host has no document (Document is nil)
	Document   []byte
	Author     string // the operator who stored it
	CreatedAt  time.Time
}

// Report is the last full report of a host, byte for byte as received.
type Report struct {
	Host       string
	Body       []byte
	Hash       string
	ReceivedAt time.Time
}

// Job states. A job is waiting until its agent reports a final result;
// a held result leaves it waiting.
const (
	JobWaiting  = "waiting"
	JobDone     = wire.JobDone
	JobFailed   = wire.JobFailed
	JobRejected = wire.JobRejected
)

// Job is a signed job, its payload kept byte for byte.
type Job struct {
	Host    string
	ID      string // wire.JobID(Payload)
	Payload []byte // the signed payload as uploaded, unaltered
	// Signatures are the armored SSHSIG signatures of Payload as
	// uploaded, unaltered, in upload order.
	Signatures [][]byte
	Uploader   string
	UploadedAt time.Time
	State      string // JobWaiting, JobDone, JobFailed, JobRejected
	// Result is the agent's last report on the job (a held result
	// included); nil before the first.
	Result    *wire.JobResult
	UpdatedAt time.Time
}

// MaxJobSignatures bounds the signatures one job holds (the agent refuses
// a job with more).
const MaxJobSignatures = 16

// SignerKey identifies the key that made an armored SSHSIG signature: its
// SHA256 fingerprint (the certificate's key for a certificate), the
// identity the agent counts distinct signers by; for a signature that
// does not parse, "bytes:" and the hex SHA-256 of its bytes.
func SignerKey(sig []byte) string {
	if fp, err := signedop.SignerFingerprint(sig); err == nil {
		return fp
	}
	sum := sha256.Sum256(sig)
	return "bytes:" + hex.EncodeToString(sum[:])
}

// MergeSignatures returns have followed by each of add whose SignerKey
// is not yet among them (copied), and how many it appended: what
// AddJobSignatures stores, computed inside its transaction.
func MergeSignatures(have, add [][]byte) ([][]byte, int) {
	seen := map[string]bool{}
	out := make([][]byte, 0, len(have)+len(add))
	for _, s := range have {
		seen[SignerKey(s)] = true
		out = append(out, s)
	}
	n := 0
	for _, s := range add {
		k := SignerKey(s)
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, append([]byte{}, s...))
		n++
	}
	return out, n
}

// CheckAddSignatures is AddJobSignatures' argument check, shared by the
// implementations.
func CheckAddSignatures(payload []byte, signatures [][]byte) error {
	switch {
	case len(payload) == 0:
		return fmt.Errorf("%w: empty job payload", ErrInvalid)
	case len(signatures) == 0:
		return fmt.Errorf("%w: no signature to add", ErrInvalid)
	}
	for i, s := range signatures {
		if len(s) == 0 {
			return fmt.Errorf("%w: signature %d is empty", ErrInvalid, i+1)
		}
	}
	return nil
}

// ReceiptHead is where a host's receipt chain ends.
type ReceiptHead struct {
	Seq  uint64 // 0: no receipt yet
	Hash string // wire.ZeroHash when Seq is 0
}

// AuditEntry is one operator action.
type AuditEntry struct {
	ID     int64 // assigned by AppendAudit, increasing
	Time   time.Time
	Actor  string // operator name
	Action string // "desired.put", "host.revoke", ...
	Host   string // empty when the action names no host
	Detail string
}

// AuditQuery selects operator audit entries: every field set must match.
type AuditQuery struct {
	Host   string // the entry's host, exactly
	Actor  string // a substring of the operator's name
	Action string // a substring of the action ("block" matches host.block)
	// From and To bound the entry's time, both included (zero: open).
	From, To time.Time
	// Before is the paging cursor: only ids below it (0: from the newest).
	Before int64
	Limit  int // at most this many (at least 1 is read)
}

// Event types of the fleet's event log.
const (
	EventHostEnrolled   = "host.enrolled"
	EventHostRevoked    = "host.revoked"
	EventHostStatus     = "host.status" // a report whose status summary changed
	EventHostSilent     = "host.silent" // no report nor heartbeat for 2 poll intervals
	EventHostReturned   = "host.returned"
	EventHostBlocked    = "host.blocked"
	EventHostUnblocked  = "host.unblocked"
	EventDesiredChanged = "desired.changed"
	EventJobUploaded    = "job.uploaded"
	EventJobDone        = "job.done"
	EventJobRejected    = "job.rejected"
	EventJobFailed      = "job.failed"
	EventReceiptsBroken = "receipts.broken" // a gap or a broken hash chain
)

// Event is one entry of the fleet's event log.
type Event struct {
	ID     int64 // assigned by AppendEvent, increasing
	Time   time.Time
	Type   string // one of the Event* constants
	Host   string // empty when the event names no host
	Actor  string // the operator who caused it; empty for agents and the hub
	Detail string
}

// Session is a dashboard login: an operator token exchanged for a
// session cookie. The store keeps the cookie's HashToken only.
type Session struct {
	Operator  string // the operator token's name
	CreatedAt time.Time
	ExpiresAt time.Time
}

// PendingWait is a pending action of a host and when the host first
// reported it.
type PendingWait struct {
	Host    string
	Since   time.Time
	Pending wire.Pending
}

// PendingKey identifies a pending action across reports: the hash of
// its payload to sign, or, without one, of the whole action.
func PendingKey(p wire.Pending) string {
	b := p.Payload
	if len(b) == 0 {
		b, _ = json.Marshal(p)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Outbox states of a Notification.
const (
	// OutboxPending: not delivered yet; claimed or waiting for its next
	// attempt.
	OutboxPending = "pending"
	// OutboxDelivered: its sink accepted it.
	OutboxDelivered = "delivered"
	// OutboxDead: the hub gave up on it (the sink refused it for good, or
	// it failed for longer than the hub retries).
	OutboxDead = "dead"
)

// MaxNotificationBody bounds a Notification's Body.
const MaxNotificationBody = 64 << 10

// Notification is one message in the outbox, for one sink. The outbox
// delivers at least once: a message is claimed under a lease, sent, and
// acknowledged; a claim whose lease ran out (its hub stopped or crashed
// mid-send) is claimed again.
type Notification struct {
	ID   int64  // assigned by EnqueueNotification, increasing
	Sink string // the sink's name in the hub's notification config
	// Key identifies what the message is about (event kind, host,
	// guest); EnqueueNotification drops a message whose Sink and Key
	// were enqueued within its dedup window.
	Key       string
	Body      []byte // the message, as the notifier encoded it
	CreatedAt time.Time
	State     string // OutboxPending, OutboxDelivered, OutboxDead
	Attempts  int    // claims so far
	NextAt    time.Time
	// LeaseOwner and LeaseUntil: the claim in force (a pending message
	// whose LeaseUntil has passed is claimable again).
	LeaseOwner string
	LeaseUntil time.Time
	LastError  string
	DoneAt     time.Time // when it was delivered or given up (zero: pending)
}

// Store is the hub's storage. See the package doc for the common contract
// (concurrency, ErrNotFound, nothing changed on error).
type Store interface {
	// CreateJoinToken records a single-use join token (by its hash) for
	// host, valid until expires; it creates the host if it does not
	// exist. ErrExists if the hash is already recorded.
	CreateJoinToken(ctx context.Context, host, tokenHash string, expires time.Time) error
	// Enroll consumes a join token and gives its host the host token
	// hostTokenHash, replacing any earlier one and clearing a revocation.
	// It returns the host id. A join token that is unknown, used or
	// expired is ErrNotFound; exactly one of concurrent Enrolls with the
	// same token succeeds.
	Enroll(ctx context.Context, joinTokenHash, hostTokenHash string) (string, error)
	// HostByToken returns the host whose current, unrevoked token hashes
	// to tokenHash; ErrNotFound otherwise (revocation takes effect at
	// once).
	HostByToken(ctx context.Context, tokenHash string) (Host, error)
	// Host returns one host; ErrNotFound if unknown.
	Host(ctx context.Context, id string) (Host, error)
	// Hosts returns every host, by id.
	Hosts(ctx context.Context) ([]Host, error)
	// RevokeHost invalidates the host's token and unused join tokens.
	RevokeHost(ctx context.Context, id string) error
	// SetBlocked blocks (with a reason) or unblocks a host.
	SetBlocked(ctx context.Context, id string, blocked bool, reason string) error

	// CreateOperator records a named operator token. ErrExists if the
	// name or the hash is taken (a revoked name stays taken).
	CreateOperator(ctx context.Context, name, tokenHash string) error
	// OperatorByToken returns the unrevoked operator whose token hashes
	// to tokenHash; ErrNotFound otherwise.
	OperatorByToken(ctx context.Context, tokenHash string) (Operator, error)
	// Operators returns every operator token record, by name.
	Operators(ctx context.Context) ([]Operator, error)
	// RevokeOperator revokes a named operator token, at once. Revoking
	// the last unrevoked token is ErrLastOperator (checked atomically:
	// of two concurrent revokes of the last two tokens, one fails).
	// Revoking a revoked token changes nothing and is no error.
	RevokeOperator(ctx context.Context, name string) error
	// TouchOperator records that the named token authenticated a request
	// at at; an earlier at than the one stored changes nothing.
	// ErrNotFound for an unknown name.
	TouchOperator(ctx context.Context, name string, at time.Time) error

	// CreateSession records a dashboard session (by its cookie's hash)
	// for the named operator, valid until expires. ErrNotFound if the
	// operator is unknown or revoked; ErrExists if the hash is recorded.
	CreateSession(ctx context.Context, tokenHash, operator string, expires time.Time) error
	// SessionByToken returns the session whose cookie hashes to
	// tokenHash; ErrNotFound if it is unknown, ended, expired at now, or
	// its operator token is revoked (revoking the token ends its sessions
	// at once).
	SessionByToken(ctx context.Context, tokenHash string, now time.Time) (Session, error)
	// DeleteSession ends a session (logout); an unknown hash is no error.
	DeleteSession(ctx context.Context, tokenHash string) error
	// PruneSessions deletes the sessions that expired before before and
	// returns how many.
	PruneSessions(ctx context.Context, before time.Time) (int64, error)

	// PutDesired stores doc as the host's next desired document and
	// returns its generation, one more than the current one, assigned
	// atomically. With ifMatch other than AnyGeneration, it stores only
	// if the current generation equals ifMatch (0: none yet), else
	// ErrConflict. The document is stored as given; the caller validates
	// it.
	PutDesired(ctx context.Context, host string, doc []byte, ifMatch int64, author string) (int64, error)
	// Desired returns the host's current document; Generation 0 and a nil
	// Document when it has none. ErrNotFound only for an unknown host.
	Desired(ctx context.Context, host string) (Desired, error)
	// DesiredHistory returns up to limit generations, newest first.
	DesiredHistory(ctx context.Context, host string, limit int) ([]Desired, error)

	// PutReport stores the host's last full report and its hash, and
	// marks the host seen.
	PutReport(ctx context.Context, host string, body []byte, hash string) error
	// Heartbeat marks the host seen and reports whether hash names the
	// last full report stored (false: the hub wants the full report).
	Heartbeat(ctx context.Context, host, hash string) (bool, error)
	// TouchHosts marks each host seen at its time, in one write (the hub
	// batches heartbeats this way); a time earlier than the one stored
	// changes nothing, and unknown hosts are skipped.
	TouchHosts(ctx context.Context, seen map[string]time.Time) error
	// LastReport returns the host's last full report; ErrNotFound if the
	// host is unknown or has not reported.
	LastReport(ctx context.Context, host string) (Report, error)

	// PutJob stores a signed job (payload and signatures) for host byte
	// for byte, waiting. Its id is wire.JobID(payload). ErrExists if that
	// job is already stored for the host. The store checks no signature:
	// the agent does.
	PutJob(ctx context.Context, host string, payload []byte, signatures [][]byte, uploader string) (Job, error)
	// AddJobSignatures adds signatures to host's waiting job whose
	// payload is payload byte for byte (its id is wire.JobID(payload)),
	// atomically, and returns the job as stored after and how many
	// signatures it added. A signature by a key that already signed the
	// job (SignerKey; for a signature that does not parse, the same
	// bytes), or earlier in the same call, is skipped: adding a signer
	// twice is idempotent, so an upload retried after a lost answer
	// succeeds, and a second signature by one key, which the agent
	// counts once anyway, does not spend the job's room. Adding a
	// signature clears the job's Result: the agent's last word was on
	// fewer signatures, and the next is on these. ErrNotFound if
	// the host has no such job; ErrConflict if the job is no longer
	// waiting (its agent reported it done, failed or rejected: more
	// signatures cannot change it); ErrInvalid for an empty payload, no
	// signatures, or when the job would hold more than MaxJobSignatures.
	// The store checks no signature: the agent does.
	AddJobSignatures(ctx context.Context, host string, payload []byte, signatures [][]byte) (Job, int, error)
	// Job returns one job of host.
	Job(ctx context.Context, host, id string) (Job, error)
	// Jobs returns the host's jobs in upload order; state "" means all,
	// else only jobs in that state.
	Jobs(ctx context.Context, host, state string) ([]Job, error)
	// SetJobResult records an agent's result for one of its jobs: done,
	// failed and rejected are final, held leaves it waiting. Once final, the
	// same state again is accepted and changes nothing (an agent's retry);
	// any other state is ErrConflict. ErrNotFound if the host has no such
	// job.
	SetJobResult(ctx context.Context, host string, r wire.JobResult) error

	// SetPending replaces the host's set of actions waiting for
	// signatures (from its last report). An action the set held already
	// (the same PendingKey) keeps the time it was first reported; a new
	// one is stamped with the store's clock.
	SetPending(ctx context.Context, host string, pending []wire.Pending) error
	// WaitingPending returns the pending actions of every enrolled,
	// unrevoked host first reported at or before before, by host then
	// order: those waiting for signatures since then, as every hub
	// sharing the store sees them.
	WaitingPending(ctx context.Context, before time.Time) ([]PendingWait, error)
	// Pending returns the host's pending actions in the order SetPending
	// was given them.
	Pending(ctx context.Context, host string) ([]wire.Pending, error)
	// PendingCount returns how many actions wait for signatures across
	// every host.
	PendingCount(ctx context.Context) (int, error)

	// AppendReceipts appends journal receipts to the host's chain. They
	// must continue it (wire.VerifyChain): a gap wraps wire.ErrChainGap,
	// a mismatch wire.ErrChainBroken, and then nothing is stored.
	// Receipts already stored with the same hash (an agent's retry) are
	// skipped. A break (wire.ReceiptBreak) is stored as the chain's next
	// receipt; one numbered at or below the head that the store does not
	// hold is a gap (the agent numbers its new segment on from the head),
	// not a broken chain. It returns the new head.
	AppendReceipts(ctx context.Context, host string, rs []wire.Receipt) (ReceiptHead, error)
	// ReceiptHead returns where the host's chain ends.
	ReceiptHead(ctx context.Context, host string) (ReceiptHead, error)
	// Receipts returns up to limit receipts with Seq > after, in order.
	Receipts(ctx context.Context, host string, after uint64, limit int) ([]wire.Receipt, error)

	// AppendAudit records an operator action and returns its id; Time is
	// set by the store when zero.
	AppendAudit(ctx context.Context, e AuditEntry) (int64, error)
	// Audit returns up to limit entries with ID > after, oldest first.
	Audit(ctx context.Context, after int64, limit int) ([]AuditEntry, error)
	// FindAudit returns up to q.Limit entries matching q, newest first
	// (page on with Before set to the last id returned). The store does
	// the filtering: a large log costs the caller no more than the page.
	FindAudit(ctx context.Context, q AuditQuery) ([]AuditEntry, error)

	// AppendEvent records a fleet event and returns its id, greater than
	// every id given before; Time is set by the store when zero.
	AppendEvent(ctx context.Context, e Event) (int64, error)
	// Events returns up to limit events with ID > after, oldest first.
	Events(ctx context.Context, after int64, limit int) ([]Event, error)
	// LastEventID returns the id of the newest event (0: none).
	LastEventID(ctx context.Context) (int64, error)
	// PruneEvents deletes the events older than before and, of the rest,
	// all but the newest keep; it returns how many it deleted. The ids of
	// the events kept do not change.
	PruneEvents(ctx context.Context, before time.Time, keep int) (int64, error)

	// EnqueueNotification stores n as pending (State, Attempts and the
	// lease are ignored; NextAt defaults to CreatedAt, which is required)
	// and returns its id, unless a notification with the same Sink and
	// Key was created after n.CreatedAt-dedup (a later one too: another
	// hub may have read its clock after this one and stored first): then
	// it stores nothing and returns an error wrapping ErrExists. The check and the
	// insert are atomic (two hubs enqueueing one key store one message).
	EnqueueNotification(ctx context.Context, n Notification, dedup time.Duration) (int64, error)
	// ClaimNotifications leases up to limit pending notifications due at
	// now (NextAt <= now, no lease in force), oldest first, to owner
	// until now+lease, counts an attempt on each and returns them. A
	// notification is leased to one claimer at a time, across hubs.
	ClaimNotifications(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]Notification, error)
	// AckNotification marks a pending notification delivered at at
	// (whoever holds its lease: the message went out). Acknowledging a
	// delivered one again changes nothing; ErrNotFound for an unknown id.
	AckNotification(ctx context.Context, id int64, at time.Time) error
	// RetryNotification ends owner's lease on a pending notification
	// after a failed attempt: it is due again at next, with lastErr
	// recorded; dead gives up on it (State OutboxDead, DoneAt next).
	// ErrConflict if owner no longer holds the lease (it ran out and
	// another claim took it, or it was delivered); ErrNotFound for an
	// unknown id.
	RetryNotification(ctx context.Context, id int64, owner string, next time.Time, lastErr string, dead bool) error
	// Notifications returns up to limit notifications with ID > after,
	// oldest first, in any state.
	Notifications(ctx context.Context, after int64, limit int) ([]Notification, error)
	// OutboxDepth returns how many notifications are pending.
	OutboxDepth(ctx context.Context) (int, error)
	// PruneNotifications deletes the delivered and dead notifications
	// created before before (pending ones stay) and returns how many.
	PruneNotifications(ctx context.Context, before time.Time) (int64, error)

	// Close releases the store; no method may be called after it.
	Close() error
}
