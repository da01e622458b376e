// Package pve is steward's client for the Proxmox VE REST API; every other
// package talks to PVE through it.
//
// It handles PVE as it really is (see FIDELITY.md in the shared reference
// data): responses in a {"data": …} envelope whose numbers may be strings
// and whose booleans are 0/1 or true/false; errors whose message is the
// HTTP reason phrase, with an optional "errors" object and, on newer
// servers, a body "message"; mutations that answer either null
// (synchronous success) or a task UPID to be waited on.
//
// Authentication is by API token only (Token, LoadToken); the secret never
// appears in logs, errors or printed values. TLS is verified against the
// system roots, a CA file, or, as PVE's own client does, a pinned SHA-256
// fingerprint of the node certificate.
//
// Reads are safe to retry. Mutations are sent exactly once and never
// retried by the client; their errors say whether PVE refused (APIError),
// never saw the request (TransportError), or may have executed it
// (OutcomeUnknownError). IsRetryable, IsNotFound, IsLockTimeout and
// IsDigestMismatch classify any error the client returns.
//
// A Client is safe for concurrent use. Package pvetest holds the
// conformance suite that holds the client, the simulator and real PVE to
// the same behaviour.
package pve
