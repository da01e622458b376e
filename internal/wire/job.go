package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// JobID is the id of a signed job: the hex SHA-256 of its exact payload
// bytes. Not the nonce: anyone can write an unsigned benign job, and it
// must not be able to claim the nonce of an operator's payload.
func JobID(payload []byte) string {
	sum := sha256.Sum256(payload)
	return hex.EncodeToString(sum[:])
}

// States of a JobResult.
const (
	JobDone     = "done"     // it ran and PVE reported success
	JobFailed   = "failed"   // it ran (or may have) and failed; Reason is PVE's message
	JobRejected = "rejected" // the agent refused it; Code and Reason say why
	JobHeld     = "held"     // not run this tick (backing off, guest busy); it stays runnable
)

// JobResult is the fate of one signed job as its agent reports it.
type JobResult struct {
	Job        string `json:"job"` // JobID of the payload
	State      string `json:"state"`
	Code       string `json:"code,omitempty"` // rejection code (signedop), when rejected
	Reason     string `json:"reason,omitempty"`
	UPID       string `json:"upid,omitempty"`
	ExitStatus string `json:"exit_status,omitempty"`
	// Quorum is set on a held job that waits for more signatures
	// (Code insufficient_signers): how many of which role it needs and
	// who signed already. Wire version 4.
	Quorum *Quorum `json:"quorum,omitempty"`
}

// JobResults is the body an agent posts with the results of its jobs.
type JobResults struct {
	Host    string      `json:"host"`
	Results []JobResult `json:"results"`
}

// JobResultsOf derives the result of every signed job a report shows: a
// signed action run, failed or skipped, or a refused job whose payload was
// read. Jobs the report shows neither way (already done before this tick)
// have no result in it.
func JobResultsOf(r Report) JobResults {
	out := JobResults{Host: r.Host, Results: []JobResult{}}
	for _, a := range r.Actions {
		if a.Job == "" {
			continue
		}
		jr := JobResult{Job: a.Job, UPID: a.UPID, ExitStatus: a.ExitStatus}
		switch {
		case a.Skipped != "":
			jr.State, jr.Reason = JobHeld, a.Skipped
		case a.Error != "":
			jr.State, jr.Reason = JobFailed, a.Error
		default:
			jr.State = JobDone
		}
		out.Results = append(out.Results, jr)
	}
	for _, rj := range r.Rejected {
		if rj.Job == "" {
			continue
		}
		out.Results = append(out.Results, JobResult{Job: rj.Job, State: JobRejected, Code: rj.Code, Reason: rj.Reason})
	}
	return out
}

// StripNewerResults returns j without the fields of wire versions after
// v, for a hub that reads only v.
func StripNewerResults(j JobResults, v int) JobResults {
	if v < 4 && len(j.Results) > 0 {
		rs := make([]JobResult, len(j.Results))
		for i, r := range j.Results {
			r.Quorum = nil
			rs[i] = r
		}
		j.Results = rs
	}
	return j
}

// EncodeJobResults returns j's JSON encoding.
func EncodeJobResults(j JobResults) ([]byte, error) { return encode("job results", j) }

// DecodeJobResults strictly decodes and validates job results.
func DecodeJobResults(b []byte) (JobResults, error) {
	j, err := decode[JobResults]("job results", b, MaxJobResultsSize)
	if err != nil {
		return JobResults{}, err
	}
	if err := j.Validate(); err != nil {
		return JobResults{}, err
	}
	return j, nil
}

// Validate checks j's values.
func (j JobResults) Validate() error {
	c := &checker{msg: "job results"}
	c.text("host", j.Host, true)
	c.count("results", len(j.Results), MaxItems)
	for i, r := range j.Results {
		p := fmt.Sprintf("results[%d]", i)
		c.hex64(p+".job", "a job id", r.Job)
		c.oneOf(p+".state", r.State, JobDone, JobFailed, JobRejected, JobHeld)
		c.text(p+".code", r.Code, false)
		c.text(p+".reason", r.Reason, false)
		c.text(p+".upid", r.UPID, false)
		c.text(p+".exit_status", r.ExitStatus, false)
		c.quorum(p+".quorum", r.Quorum)
	}
	return c.err
}

// hex64 checks that s is 64 lowercase hex digits (a SHA-256).
func (c *checker) hex64(path, what, s string) {
	if len(s) != 64 {
		c.fail(path, "%s is 64 lowercase hex digits, got %d characters", what, len(s))
		return
	}
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			c.fail(path, "%s is 64 lowercase hex digits", what)
			return
		}
	}
}
