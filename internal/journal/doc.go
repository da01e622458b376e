// Package journal is the agent's durable record of every mutation it makes
// to a guest: an op is begun (and the record fsynced) before the mutation
// starts, its PVE task id is recorded as soon as it is known, and its result
// ends it. At start-up the agent resolves every op that was begun and never
// ended before it mutates anything; completed idempotency keys keep an op
// from running twice; create (and clone) records give the agent provenance
// over guests it provisioned itself.
//
// # Files
//
// The journal lives in one file, DIR/journal, created (with DIR) by Open.
// Records are only ever appended. Compaction writes a complete replacement
// next to it (DIR/.journal.tmp*), fsyncs it, renames it over DIR/journal and
// fsyncs DIR, so a crash leaves either the old file or the new one. Stale
// temporary files from a crash during compaction are removed by Open.
//
// # Format (version 1)
//
// All integers are little-endian. A file is a 12-byte header followed by
// zero or more records:
//
//	header  = magic[8] version[4]
//	magic   = "STWDJRNL" (53 54 57 44 4A 52 4E 4C)
//	version = 01 00 00 00
//	record  = length[4] crc[4] payload[length]
//	length  = number of payload bytes, 1 to 16 MiB
//	crc     = CRC-32C (Castagnoli) of the payload bytes
//	payload = type[1] body
//	body    = one JSON object, UTF-8, no trailing newline, field order as
//	          encoding/json writes the Go structs below (so encoding is
//	          byte-for-byte reproducible)
//
// Record types and their JSON bodies:
//
//	1 begin      Op: {"id","time","source","host","action":{"op","vmid","kind","params","digest"},"idem_key","signers","upid","nonce","nonce_expires"}
//	2 task       {"id","upid","time"}: the PVE task id of an in-flight op
//	3 end        {"id","time","result":{"ok","exit_status","error","resolution","remains_digest","retry"}}
//	4 decision   Decision: {"time","vmid","action","class","verdict","reason","signers"}
//	5 completed  {"id","idem_key","vmid","time","result","upid","nonce","nonce_expires"}:
//	             written only by compaction, the summary of an ended op whose
//	             idempotency key is still within retention or whose spent
//	             nonce has not expired
//	6 provenance {"vmid","create_op","failed","time","remains","started"}: written only by
//	             compaction, the create provenance of a guest whose create op
//	             has ended
//	7 snapshot   Snapshot: {"vmid","name","snaptime","description","taken","op","gone"}:
//	             a snapshot the agent took under a schedule, as PVE listed it
//	             (its proof of ownership for pruning), kept by compaction until
//	             a record with "gone" forgets it
//	8 mark       {"seq"}: written only by compaction (and by a rewrite after
//	             an I/O failure), after the records that rebuild the state:
//	             the number of the last begin, task, end or decision record
//	             appended before it. Those records are numbered 1, 2, ... in
//	             the order they were appended over the journal's whole life
//	             (Event.Seq); the ones after the last mark are numbered on
//	             from its seq, and the ones before it are copies (an
//	             in-flight op's begin, a decision within retention) that keep
//	             no number. A file without a mark numbers from its start.
//	             A steward from before marks refuses a journal holding one.
//
// Optional fields are omitted when empty. Times are RFC 3339 in UTC with
// nanoseconds. testdata/golden.journal is a small journal in this format;
// the tests decode and re-encode it byte for byte.
//
// # Recovery
//
// Open reads the whole file and checks every record. A record that is
// incomplete or fails its checksum, with nothing decodable after it, is a
// torn write from a crash: the file is truncated after the last whole record
// and the number of bytes dropped is logged. Such a record was never
// acknowledged, because an append returns only after its fsync. A bad record
// that is followed by a valid one, a record with a valid checksum that does
// not decode, or a record inconsistent with what precedes it (an end for an
// op never begun) is corruption: Open fails with a *CorruptError, which
// wraps ErrCorrupt and names the offset. It is never skipped silently.
//
// # Concurrency and durability
//
// A Journal is safe for concurrent use. Appends are acknowledged only after
// fsync; concurrent appenders share fsyncs (group commit: one fsync covers
// every record written while the previous fsync was in progress). After an
// I/O error while appending (a full disk, say) the file is not appended to
// again, because after a failed fsync the kernel's view of it can no longer
// be trusted: the call fails, and each later append first rewrites the
// whole journal from memory (temporary file, fsync, rename, fsync of the
// directory) and proceeds once that succeeds, so the agent recovers without
// a restart. Failed rewrites are logged at most once a minute.
//
// # A signed job's states
//
// A signed job (a destructive action carrying operator signatures) moves
// through these states; "durable" says what survives SIGKILL at that point.
//
//	received   the job file is in the inbox. Durable: the file only.
//	verified   the gate checked signatures, policy, digest and window
//	           (gate.DecideJob). Nothing is written: a crash, a skip for
//	           backoff or a failed config re-read leave it received.
//	committed  Begin appended the op with its Nonce and fsynced it. This one
//	           record both spends the nonce and commits the job; Begin refuses
//	           a second op with the nonce (ErrNonceSpent).
//	running    PVE accepted the call; its UPID is recorded by Task as soon as
//	           known. A crash here, or after committed, leaves the op in
//	           flight: recovery resolves it before the guest is changed again.
//	done       End with OK: the task finished (or recovery found the intent
//	           applied). The nonce stays spent until it expires.
//	failed-retryable
//	           End with Retry: PVE proves nothing ran (pve.IsRetryable: a 5xx
//	           before execution, 596, a request never sent, a lock timeout),
//	           or recovery found no task and no effect. Nonce and idempotency
//	           key are released; the job is committed again on a later tick.
//	failed-final
//	           End without OK or Retry: the task ran and failed, or the fate is
//	           unknown (an ambiguous task match). The nonce stays spent; the
//	           failure is journaled and reported, and only a new signature can
//	           try again.
//	expired    the job's validity window passed before it committed (the
//	           verifier refuses it) or its nonce expired after (the journal
//	           and the nonce store forget it).
//
// NonceSpent and SpentNonces expose the spent set; the agent's nonce store
// is an index derived from it, rebuilt at recovery.
package journal
