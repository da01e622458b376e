package spec

import (
	"errors"

	apiwire "github.com/steward-pve/steward/internal/wire"
)

// Rejection codes of checks the gate makes before verification: the
// job's target on this host as observed now.
const (
	// CodeConfigUnreadable: the guest's config could not be read this
	// tick, so the job cannot be judged; it is presented again.
	CodeConfigUnreadable = "config_unreadable"
	// CodeNoSuchGuest: the job needs a guest that does not exist here.
	CodeNoSuchGuest = "no_such_guest"
)

// ParsedJob is a signed job read once per tick: its id, and its payload
// or why the payload does not parse. Everything later (which configs to
// read, the gate's decision, the journal's idempotency key) uses this one
// reading.
type ParsedJob struct {
	Job     Job
	ID      string  // wire.JobID of the payload bytes
	Payload Payload // valid when Err is nil
	// Err is ParsePayload's error; ErrCode its rejection code
	// (CodeBadPayload or CodeUnsupportedVersion).
	Err     error
	ErrCode string
}

// ParseJob reads j's payload once.
func ParseJob(j Job) ParsedJob {
	pj := ParsedJob{Job: j, ID: apiwire.JobID(j.Payload)}
	pj.Payload, pj.Err = ParsePayload(j.Payload)
	switch {
	case pj.Err == nil:
	case errors.Is(pj.Err, ErrUnsupportedVersion):
		pj.ErrCode = CodeUnsupportedVersion
	default:
		pj.ErrCode = CodeBadPayload
	}
	return pj
}

// ParseJobs reads each job's payload once, in order.
func ParseJobs(jobs []Job) []ParsedJob {
	out := make([]ParsedJob, len(jobs))
	for i, j := range jobs {
		out[i] = ParseJob(j)
	}
	return out
}
