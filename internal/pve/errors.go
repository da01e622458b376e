package pve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// APIError is a non-2xx response from PVE.
//
// Message is the HTTP reason phrase, which is where PVE puts the first line
// of the error ("Permission check failed (/vms/101, VM.PowerMgmt)",
// "can't lock file '…' - got timeout"); Errors is the per-parameter
// "errors" object of a 400; BodyMessage is the body's "message" field,
// which only PVE ≥ libpve-http-server-perl 5.2.0 sends (the full,
// possibly multi-line text). None of them ever contains the API token.
type APIError struct {
	Method      string
	Path        string // below /api2/json, e.g. "/nodes/pve/qemu/101/status/start"
	StatusCode  int
	Message     string
	Errors      map[string]string
	BodyMessage string
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pve: %s %s: %d", e.Method, e.Path, e.StatusCode)
	if e.Message != "" {
		b.WriteString(" " + e.Message)
	}
	if len(e.Errors) > 0 {
		keys := make([]string, 0, len(e.Errors))
		for k := range e.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			sep := "; "
			if i == 0 {
				sep = ": "
			}
			b.WriteString(sep + k + ": " + strings.TrimSpace(e.Errors[k]))
		}
	}
	if bm := strings.TrimSpace(e.BodyMessage); bm != "" && bm != e.Message {
		b.WriteString(" (" + strings.ReplaceAll(bm, "\n", "; ") + ")")
	}
	return b.String()
}

// text is every message PVE gave, for classification.
func (e *APIError) text() string { return e.Message + "\n" + e.BodyMessage }

// Retryable reports whether sending the same request again may succeed and
// is safe: lock timeouts, 595/596 (pveproxy could not reach the node), and
// other 5xx except "does not exist", parameter errors, digest mismatches
// and 501 (unknown path). 4xx (400 parameters, 401 auth, 403 privileges)
// is never retryable: the request itself must change.
func (e *APIError) Retryable() bool {
	t := e.text()
	switch {
	case isLockTimeoutText(t):
		return true
	case e.StatusCode == 595 || e.StatusCode == 596:
		return true
	case e.StatusCode < 500 || e.StatusCode == 501:
		return false
	case strings.Contains(t, "does not exist"), len(e.Errors) > 0,
		strings.Contains(t, "Parameter verification failed"), isDigestMismatchText(t),
		strings.Contains(t, "already exists"):
		return false
	}
	return true
}

var permRE = regexp.MustCompile(`Permission check failed \(([^,()]+), ([^()]+)\)`)

// MissingPrivilege returns the ACL path and privilege a 403 names, as in
// "Permission check failed (/vms/101, VM.PowerMgmt)" → ("/vms/101",
// "VM.PowerMgmt"). An any-of check gives priv "VM.Snapshot|VM.Snapshot.Rollback".
// ok is false when the error is not a privilege failure of that shape.
func (e *APIError) MissingPrivilege() (path, priv string, ok bool) {
	if e.StatusCode != 403 {
		return "", "", false
	}
	m := permRE.FindStringSubmatch(e.text())
	if m == nil {
		return "", "", false
	}
	return m[1], strings.TrimSpace(m[2]), true
}

func isLockTimeoutText(t string) bool {
	return strings.Contains(t, "can't lock file") && strings.Contains(t, "got timeout")
}

func isDigestMismatchText(t string) bool {
	return strings.Contains(t, "checksum mismatch") || strings.Contains(t, "detected modified configuration")
}

// OutcomeUnknownError reports a mutation whose request may have reached
// PVE but whose response was lost (connection reset, EOF, timeout or
// cancellation after the request was written, or a success body that could
// not be read). PVE may or may not have acted; the caller must find out by
// reading state (config digest, task list) and must not simply re-send.
// The client never re-sends a mutation by itself.
type OutcomeUnknownError struct {
	Method string
	Path   string
	Err    error
}

func (e *OutcomeUnknownError) Error() string {
	return fmt.Sprintf("pve: %s %s: outcome unknown, the request may have been executed: %v; read the guest's state before trying again", e.Method, e.Path, e.Err)
}

func (e *OutcomeUnknownError) Unwrap() error { return e.Err }

// Retryable is always false: re-sending could run the operation twice.
func (e *OutcomeUnknownError) Retryable() bool { return false }

// TransportError is a request that failed without an HTTP response.
// Sent reports whether the complete request had been written to the
// connection. For a mutation with Sent true the client returns an
// OutcomeUnknownError instead, so a TransportError from a mutation always
// means PVE never received it.
type TransportError struct {
	Method string
	Path   string
	Sent   bool
	Err    error

	callerDone bool   // the caller's context ended the request
	hint       string // for a certificate failure: which setting fixes it
}

func (e *TransportError) Error() string {
	if e.hint != "" {
		return fmt.Sprintf("pve: %s %s: %v; %s", e.Method, e.Path, e.Err, e.hint)
	}
	return fmt.Sprintf("pve: %s %s: %v", e.Method, e.Path, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// Retryable reports whether the failure is transient: connection and
// timeout failures are; certificate verification failures (a pinned
// fingerprint mismatch, an unknown CA, a wrong host name) and the caller's
// own cancellation are not.
func (e *TransportError) Retryable() bool {
	if e.callerDone || errors.Is(e.Err, context.Canceled) {
		return false
	}
	return !isCertError(e.Err)
}

func isCertError(err error) bool {
	var fm *FingerprintMismatchError
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var hn x509.HostnameError
	var cv *tls.CertificateVerificationError
	return errors.As(err, &fm) || errors.As(err, &ua) || errors.As(err, &ci) || errors.As(err, &hn) || errors.As(err, &cv)
}

// certHint says which setting fixes a certificate verification failure,
// given how TLS was configured; "" when err is no such failure or already
// says (a pinned fingerprint mismatch names --pve-fingerprint itself).
func certHint(err error, caFile string) string {
	var fm *FingerprintMismatchError
	if !isCertError(err) || errors.As(err, &fm) {
		return ""
	}
	var hn x509.HostnameError
	switch {
	case errors.As(err, &hn):
		return "the certificate is not issued for the host name in --pve-url: use a name the certificate names (pvenode cert info), or pin the certificate with --pve-fingerprint"
	case caFile != "":
		return fmt.Sprintf("the certificate does not verify against --pve-ca-file %s: give the CA that signed it (on PVE: /etc/pve/pve-root-ca.pem), or pin the certificate with --pve-fingerprint (the node's ssl_fingerprint, from pvenode cert info)", caFile)
	}
	return "PVE's certificate is not signed by a CA this host trusts (PVE signs it with its own cluster CA): trust that CA with --pve-ca-file /etc/pve/pve-root-ca.pem, or pin the certificate with --pve-fingerprint (the node's ssl_fingerprint, from pvenode cert info)"
}

// FingerprintMismatchError is a TLS handshake refused because the server's
// certificate does not have the pinned SHA-256 fingerprint. Both
// fingerprints are public (PVE shows them as ssl_fingerprint).
type FingerprintMismatchError struct {
	Want, Got string // colon-hex, upper case
}

func (e *FingerprintMismatchError) Error() string {
	return fmt.Sprintf("pve: server certificate fingerprint %s does not match the pinned %s; check the node's ssl_fingerprint (pvenode cert info) or the --pve-fingerprint setting", e.Got, e.Want)
}

// TaskError is a PVE task that stopped with an exit status other than "OK"
// or "WARNINGS: n". ExitStatus is PVE's exact text, e.g. "VM 101 already
// running" or "can't lock file '/var/lock/qemu-server/lock-101.conf' - got
// timeout".
type TaskError struct {
	UPID       UPID
	ExitStatus string
}

func (e *TaskError) Error() string {
	return fmt.Sprintf("pve: task %s (%s %s) failed: %s", e.UPID, e.UPID.Type, e.UPID.ID, e.ExitStatus)
}

// Retryable reports whether the task failed only because it could not take
// the guest's config lock in time; nothing was changed then.
func (e *TaskError) Retryable() bool { return isLockTimeoutText(e.ExitStatus) }

// IsRetryable reports whether err is a failure after which the same call
// may safely be made again: a retryable APIError, a transport failure of a
// read or of a mutation that was never sent (dial, TLS handshake), or a
// lock-timeout task failure. OutcomeUnknownError, certificate failures,
// context cancellation and unknown errors are not retryable.
func IsRetryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var ou *OutcomeUnknownError
	if errors.As(err, &ou) {
		return false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Retryable()
	}
	var te *TransportError
	if errors.As(err, &te) {
		return te.Retryable()
	}
	var tk *TaskError
	if errors.As(err, &tk) {
		return tk.Retryable()
	}
	return false
}

// IsNotFound reports whether err says the object the call is about does
// not exist: a guest ("Configuration file 'nodes/pve/qemu-server/101.conf'
// does not exist", HTTP 500), a snapshot ("snapshot 'x' does not exist"),
// or a task ({"upid":"no such task"}). A 400 whose parameter errors say
// some other object (a storage named in a create) does not exist is a
// parameter error, not "not found".
func IsNotFound(err error) bool {
	var ae *APIError
	if !errors.As(err, &ae) {
		return false
	}
	if ae.StatusCode != 400 && strings.Contains(ae.text(), "does not exist") {
		return true
	}
	return ae.StatusCode == 400 && strings.Contains(ae.Errors["upid"], "no such task")
}

// IsLockTimeout reports whether err is PVE's "can't lock file '…' - got
// timeout", from a synchronous call (APIError) or a task (TaskError).
func IsLockTimeout(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return isLockTimeoutText(ae.text())
	}
	var tk *TaskError
	if errors.As(err, &tk) {
		return isLockTimeoutText(tk.ExitStatus)
	}
	return false
}

// IsDigestMismatch reports whether a write was refused because the config
// changed since its digest was read ("checksum mismatch …" from QEMU,
// "detected modified configuration …" from LXC and resize). Re-read, re-plan.
func IsDigestMismatch(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return isDigestMismatchText(ae.text())
	}
	var tk *TaskError
	if errors.As(err, &tk) {
		return isDigestMismatchText(tk.ExitStatus)
	}
	return false
}

// redactedError replaces an error whose text contained the token secret.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
