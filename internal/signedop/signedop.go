// Package signedop verifies steward's signed operations: SSHSIG
// signatures over the canonical payload, checked against allowed_signers
// and the signing policy, before the agent's gate lets a destructive
// action run. The payload format, the policy and the rejection codes are
// the pure package spec, re-exported here so callers need one import.
//
// # Namespace
//
// Every signature is an OpenSSH SSHSIG (ssh-keygen -Y sign) in the
// namespace "steward-op@steward" (the constant Namespace). A signature in
// any other namespace, or none, is rejected, so a signature made for git,
// email or file signing can never authorize a steward operation, and a
// steward signature is useless anywhere else. The payload's canonical
// encoding is documented in package spec.
package signedop

import (
	"fmt"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/safefile"
	"github.com/steward-pve/steward/internal/signedop/spec"
)

// The pure types, re-exported (see package spec).
type (
	Payload       = spec.Payload
	MismatchError = spec.MismatchError
	Policy        = spec.Policy
	Requirement   = spec.Requirement
	Rejection     = spec.Rejection
	Shortfall     = spec.Shortfall
	Job           = spec.Job
	ParsedJob     = spec.ParsedJob
)

// Constants of the payload format and policy (see package spec).
const (
	Namespace      = spec.Namespace
	Version        = spec.Version
	MaxPayloadSize = spec.MaxPayloadSize
	MaxReasonLen   = spec.MaxReasonLen
	TimeLayout     = spec.TimeLayout
	DefaultRole    = spec.DefaultRole
)

// Rejection codes (see package spec).
const (
	CodeNoSignersConfigured   = spec.CodeNoSignersConfigured
	CodeBadPayload            = spec.CodeBadPayload
	CodeUnsupportedVersion    = spec.CodeUnsupportedVersion
	CodeWrongOp               = spec.CodeWrongOp
	CodeWrongHost             = spec.CodeWrongHost
	CodeWrongVMID             = spec.CodeWrongVMID
	CodeWrongKind             = spec.CodeWrongKind
	CodeWrongParams           = spec.CodeWrongParams
	CodeStaleDigest           = spec.CodeStaleDigest
	CodeNotYetValid           = spec.CodeNotYetValid
	CodeExpired               = spec.CodeExpired
	CodeTTLTooLong            = spec.CodeTTLTooLong
	CodeNoSignatures          = spec.CodeNoSignatures
	CodeTooManySignatures     = spec.CodeTooManySignatures
	CodeBadSignature          = spec.CodeBadSignature
	CodeUnsupportedSigVersion = spec.CodeUnsupportedSigVersion
	CodeWrongNamespace        = spec.CodeWrongNamespace
	CodeBadHash               = spec.CodeBadHash
	CodeLegacyRSASHA1         = spec.CodeLegacyRSASHA1
	CodeNoUserPresence        = spec.CodeNoUserPresence
	CodeUnknownSigner         = spec.CodeUnknownSigner
	CodeSignerNotYetValid     = spec.CodeSignerNotYetValid
	CodeSignerExpired         = spec.CodeSignerExpired
	CodeBadCertificate        = spec.CodeBadCertificate
	CodeInsufficientSigners   = spec.CodeInsufficientSigners
	CodeReplayed              = spec.CodeReplayed
	CodeNonceStoreFull        = spec.CodeNonceStoreFull
	CodeNonceStoreError       = spec.CodeNonceStoreError
	CodeConfigUnreadable      = spec.CodeConfigUnreadable
	CodeNoSuchGuest           = spec.CodeNoSuchGuest
)

// ErrUnsupportedVersion is wrapped by ParsePayload for a payload format
// version other than Version.
var ErrUnsupportedVersion = spec.ErrUnsupportedVersion

// NewPayload is spec.NewPayload.
func NewPayload(host string, a action.Action, now time.Time, ttl time.Duration, reason string) (Payload, error) {
	return spec.NewPayload(host, a, now, ttl, reason)
}

// ParsePayload is spec.ParsePayload.
func ParsePayload(b []byte) (Payload, error) { return spec.ParsePayload(b) }

// DefaultPolicy is spec.DefaultPolicy.
func DefaultPolicy() Policy { return spec.DefaultPolicy() }

// ParsePolicy is spec.ParsePolicy.
func ParsePolicy(b []byte) (Policy, error) { return spec.ParsePolicy(b) }

// MaxPolicyFileSize bounds a policy file read by ReadPolicyFile.
const MaxPolicyFileSize = 1 << 20

// ReadPolicyFile reads and parses the policy file at path (following
// symlinks; only a regular file of at most MaxPolicyFileSize bytes, see
// package safefile). Errors are ParsePolicy's with File set to path.
func ReadPolicyFile(path string) (Policy, error) {
	b, err := safefile.ReadFile(path, MaxPolicyFileSize)
	if err != nil {
		return Policy{}, fmt.Errorf("signedop: policy: %w", err)
	}
	return spec.ParsePolicyFile(b, path)
}

// PolicyError is spec.PolicyError: one problem in a policy document.
type PolicyError = spec.PolicyError

// ParseJob is spec.ParseJob.
func ParseJob(j Job) ParsedJob { return spec.ParseJob(j) }

// ParseJobs is spec.ParseJobs.
func ParseJobs(jobs []Job) []ParsedJob { return spec.ParseJobs(jobs) }

// RejectionCode is spec.RejectionCode.
func RejectionCode(err error) string { return spec.RejectionCode(err) }

func reject(code, format string, args ...any) *Rejection {
	return &Rejection{Code: code, Reason: fmt.Sprintf(format, args...)}
}
