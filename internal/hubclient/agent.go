package hubclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/wire"
)

// The agent's calls (host token). Each names the host in its path; the
// hub answers 403 for any host but the token's own. Every answer is
// decoded strictly with package wire: an answer that does not decode is
// an error, never half used.

// CodeReportRequired is the code of a heartbeat the hub cannot match:
// the agent must send its full report.
const CodeReportRequired = "report_required"

// CodeChainGap is the code of receipts that do not continue the hub's
// chain; *ReceiptGapError carries where the hub's chain ends.
const CodeChainGap = "chain_gap"

func agentPath(host, what string) string {
	return "/v1/agent/hosts/" + url.PathEscape(host) + "/" + what
}

// control posts body to path and decodes the control envelope, with the
// wire version the hub names (Control.HubVersion).
func (c *Client) control(ctx context.Context, path string, body []byte) (wire.Control, error) {
	resp, err := c.Do(ctx, Request{Method: http.MethodPost, Path: path, Body: body, MaxResponse: wire.MaxControlSize})
	if err != nil {
		return wire.Control{}, err
	}
	if err := resp.Err(http.MethodPost, path); err != nil {
		return wire.Control{}, err
	}
	ctl, err := wire.DecodeControl(resp.Body)
	if err != nil {
		return wire.Control{}, fmt.Errorf("hub: POST %s: %w", path, err)
	}
	ctl.HubVersion = 1
	if v, err := strconv.Atoi(resp.Header.Get(wire.VersionHeader)); err == nil && v > 1 {
		ctl.HubVersion = v
	}
	return ctl, nil
}

// Report posts a full report (wire.EncodeReport's bytes, sent as they
// are: the hub keeps their hash, which later heartbeats name) and returns
// the hub's control envelope.
func (c *Client) Report(ctx context.Context, host string, body []byte) (wire.Control, error) {
	return c.control(ctx, agentPath(host, "report"), body)
}

// Heartbeat tells the hub the host's report is unchanged since the one
// whose bytes hash to hash (ReportHash). A hub that holds another report
// answers with an *Error of code CodeReportRequired: send the full
// report.
func (c *Client) Heartbeat(ctx context.Context, host, hash string) (wire.Control, error) {
	b, _ := json.Marshal(map[string]string{"hash": hash})
	return c.control(ctx, agentPath(host, "heartbeat"), b)
}

// Desired is the blocking query for the host's desired document: the hub
// answers at once when its generation is past after, otherwise when it
// moves or wait passes. An answer does not promise a change. ctx should
// allow wait plus the hub's jitter (wait/16) and a margin.
func (c *Client) Desired(ctx context.Context, host string, after int64, wait time.Duration) (wire.Desired, error) {
	path := agentPath(host, "desired")
	q := url.Values{"after": {strconv.FormatInt(after, 10)}, "wait": {strconv.FormatInt(int64(wait/time.Second), 10)}}
	resp, err := c.Do(ctx, Request{Method: http.MethodGet, Path: path, Query: q, MaxResponse: wire.MaxDesiredSize})
	if err != nil {
		return wire.Desired{}, err
	}
	if err := resp.Err(http.MethodGet, path); err != nil {
		return wire.Desired{}, err
	}
	d, err := wire.DecodeDesired(resp.Body)
	if err != nil {
		return wire.Desired{}, fmt.Errorf("hub: GET %s: %w", path, err)
	}
	return d, nil
}

// Job is a signed job as the hub hands it out: the payload and its
// signatures, byte for byte as an operator uploaded them. ID is the
// hub's name for it and is not trusted: the agent names a job by
// wire.JobID of its payload.
type Job struct {
	ID         string   `json:"id"`
	Payload    []byte   `json:"payload"`
	Signatures [][]byte `json:"signatures"`
}

// MaxJobs bounds the jobs one answer may carry.
const MaxJobs = 1000

// maxJobsResponse bounds the jobs answer: MaxJobs payloads with a few
// signatures each, base64.
const maxJobsResponse = 16 << 20

// Jobs returns the signed jobs waiting for the host, in upload order.
func (c *Client) Jobs(ctx context.Context, host string) ([]Job, error) {
	path := agentPath(host, "jobs")
	resp, err := c.Do(ctx, Request{Method: http.MethodGet, Path: path, MaxResponse: maxJobsResponse})
	if err != nil {
		return nil, err
	}
	if err := resp.Err(http.MethodGet, path); err != nil {
		return nil, err
	}
	var out struct {
		Jobs []Job `json:"jobs"`
	}
	if err := decodeStrict(resp.Body, &out); err != nil {
		return nil, fmt.Errorf("hub: GET %s: %w", path, err)
	}
	if len(out.Jobs) > MaxJobs {
		return nil, fmt.Errorf("hub: GET %s: %d jobs; at most %d accepted", path, len(out.Jobs), MaxJobs)
	}
	for i, j := range out.Jobs {
		if len(j.Payload) == 0 || len(j.Payload) > wire.MaxPayloadLen {
			return nil, fmt.Errorf("hub: GET %s: jobs[%d]: payload of %d bytes (1..%d)", path, i, len(j.Payload), wire.MaxPayloadLen)
		}
	}
	return out.Jobs, nil
}

// JobResults reports the fate of the host's jobs so the hub clears them.
func (c *Client) JobResults(ctx context.Context, jr wire.JobResults) error {
	if err := jr.Validate(); err != nil {
		return err
	}
	return c.JSON(ctx, http.MethodPost, agentPath(jr.Host, "job-results"), nil, jr, nil)
}

// ReceiptHead is where the hub's receipt chain of a host ends.
type ReceiptHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// ReceiptGapError is the hub's answer to receipts that do not continue
// its chain: Have is the last sequence number it holds (send from
// Have+1).
type ReceiptGapError struct {
	Have uint64
	Err  error
}

func (e *ReceiptGapError) Error() string { return e.Err.Error() }
func (e *ReceiptGapError) Unwrap() error { return e.Err }

// Receipts appends journal receipts to the host's chain on the hub and
// returns its new head. A gap is a *ReceiptGapError naming where the
// hub's chain ends; a broken chain is an *Error of code "chain_broken".
func (c *Client) Receipts(ctx context.Context, rs wire.Receipts) (ReceiptHead, error) {
	var head ReceiptHead
	err := c.JSON(ctx, http.MethodPost, agentPath(rs.Host, "receipts"), nil, rs, &head)
	var he *Error
	if errors.As(err, &he) && he.Code == CodeChainGap {
		if he.HaveSeq != nil {
			return head, &ReceiptGapError{Have: *he.HaveSeq, Err: err}
		}
		// A hub before have_seq: its message says where its chain ends.
		var have uint64
		if _, serr := fmt.Sscanf(afterMarker(he.Message, "holds up to seq "), "%d", &have); serr != nil {
			return head, fmt.Errorf("%w (the hub did not say where its chain ends)", err)
		}
		return head, &ReceiptGapError{Have: have, Err: err}
	}
	return head, err
}

// afterMarker returns what follows marker in s, or "".
func afterMarker(s, marker string) string {
	if i := strings.Index(s, marker); i >= 0 {
		return s[i+len(marker):]
	}
	return ""
}

// decodeStrict decodes b into v refusing unknown fields and trailing data.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON value")
	}
	return nil
}
