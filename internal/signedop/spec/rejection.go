package spec

import "errors"

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
