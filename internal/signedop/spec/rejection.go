package spec

import (
	"errors"
	"fmt"
	"strings"
)

// Rejection codes: stable, snake_case, safe to match on and to show.
const (
	CodeNoSignersConfigured   = "no_signers_configured"
	CodeBadPayload            = "bad_payload"
	CodeUnsupportedVersion    = "unsupported_version"
	CodeWrongOp               = "wrong_op"
	CodeWrongHost             = "wrong_host"
	CodeWrongVMID             = "wrong_vmid"
	CodeWrongKind             = "wrong_kind"
	CodeWrongParams           = "wrong_params"
	CodeStaleDigest           = "stale_digest"
	CodeNotYetValid           = "not_yet_valid"
	CodeExpired               = "expired"
	CodeTTLTooLong            = "ttl_too_long"
	CodeNoSignatures          = "no_signatures"
	CodeTooManySignatures     = "too_many_signatures"
	CodeBadSignature          = "bad_signature"
	CodeUnsupportedSigVersion = "unsupported_signature_version"
	CodeWrongNamespace        = "wrong_namespace"
	CodeBadHash               = "bad_hash"
	CodeLegacyRSASHA1         = "legacy_rsa_sha1"
	CodeNoUserPresence        = "no_user_presence"
	CodeUnknownSigner         = "unknown_signer"
	CodeSignerNotYetValid     = "signer_not_yet_valid"
	CodeSignerExpired         = "signer_expired"
	CodeBadCertificate        = "bad_certificate"
	CodeInsufficientSigners   = "insufficient_signers"
	CodeReplayed              = "replayed"
	CodeNonceStoreFull        = "nonce_store_full"
	CodeNonceStoreError       = "nonce_store_error"
)

// Rejection is why a signed job does not authorize an action. Code is one
// of the Code constants; Reason is a sentence for the operator. Neither
// contains secrets.
type Rejection struct {
	Code   string
	Reason string
	// Shortfall is set with CodeInsufficientSigners when every signature
	// verified and only more signers are missing: such a job is
	// incomplete, not wrong, and the gate holds it for more signatures.
	Shortfall *Shortfall
}

// Shortfall is what a job whose signatures all verify lacks to satisfy
// the policy: Need distinct signers holding Role, of whom Signed are
// credited so far.
type Shortfall struct {
	Role string
	Need int
	// Signed are the principals credited toward Need, one per distinct
	// key, in signature order.
	Signed []string
	// Others are principals whose signatures verified but who do not
	// hold Role (or whose key was already credited to another), one per
	// key: they count for nothing toward Need.
	Others []string
}

// Missing is how many more distinct signers of Role are needed.
func (s Shortfall) Missing() int { return max(s.Need-len(s.Signed), 0) }

// String says what the job waits for, e.g. "waiting for 1 more signer(s)
// of role operator (1 of 2 signed: alice@example.com)".
func (s Shortfall) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "waiting for %d more signer(s) of role %s (%d of %d signed", s.Missing(), s.Role, len(s.Signed), s.Need)
	if len(s.Signed) > 0 {
		b.WriteString(": " + strings.Join(s.Signed, ", "))
	}
	b.WriteString(")")
	if len(s.Others) > 0 {
		fmt.Fprintf(&b, "; also signed by %s, not counted (no role %s, or a key already counted)", strings.Join(s.Others, ", "), s.Role)
	}
	return b.String()
}

func (r *Rejection) Error() string { return "signedop: rejected (" + r.Code + "): " + r.Reason }

// RejectionCode returns err's rejection code, or "" if err is not (and does
// not wrap) a *Rejection.
func RejectionCode(err error) string {
	var r *Rejection
	if errors.As(err, &r) {
		return r.Code
	}
	return ""
}

// Job is a signed operation: the canonical payload bytes and one or more
// armored SSHSIG signatures over them.
type Job struct {
	Payload    []byte
	Signatures [][]byte
	// Name says where the job came from (its payload file), for messages
	// only: it is not signed and never affects a verdict.
	Name string
}
