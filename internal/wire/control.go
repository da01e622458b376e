package wire

import (
	"encoding/json"
	"time"
)

// Control is the hub's answer to a report or heartbeat.
type Control struct {
	// PollInterval is how long the agent waits before its next report; the
	// hub sets it (and stretches it as the fleet grows). Encoded in whole
	// seconds.
	PollInterval time.Duration `json:"-"`
	// DesiredGeneration is the generation of the host's desired document
	// on the hub; an agent holding an older one fetches it.
	DesiredGeneration int64 `json:"desired_generation"`
	// JobsWaiting is true when signed jobs for the host wait on the hub.
	JobsWaiting bool `json:"jobs_waiting,omitempty"`
	// Blocked is true when an operator blocked the host: the agent reports
	// but mutates nothing. BlockedReason says why.
	Blocked       bool   `json:"blocked,omitempty"`
	BlockedReason string `json:"blocked_reason,omitempty"`
	// HubVersion is the wire version the hub reads, from the answer's
	// VersionHeader (1 when it names none); not part of the JSON.
	HubVersion int `json:"-"`
}

// StripNewer returns r without the fields of wire versions after v (see
// Versions in the package doc), for a hub that reads only v. r itself is
// not changed.
func StripNewer(r Report, v int) Report {
	if v < 2 {
		gs := make([]Guest, len(r.Guests))
		for i, g := range r.Guests {
			g.Observed = nil
			gs[i] = g
		}
		r.Guests = gs
	}
	if v < 3 {
		ss := make([]Sync, len(r.Sync))
		for i, s := range r.Sync {
			s.Provenance = nil
			ss[i] = s
		}
		r.Sync = ss
	}
	if v < 4 && len(r.Pending) > 0 {
		ps := make([]Pending, len(r.Pending))
		for i, p := range r.Pending {
			p.Quorum = nil
			ps[i] = p
		}
		r.Pending = ps
	}
	return r
}

// MaxPollInterval bounds Control.PollInterval.
const MaxPollInterval = 24 * time.Hour

type controlJSON struct {
	PollIntervalSeconds int64  `json:"poll_interval_s"`
	DesiredGeneration   int64  `json:"desired_generation"`
	JobsWaiting         bool   `json:"jobs_waiting,omitempty"`
	Blocked             bool   `json:"blocked,omitempty"`
	BlockedReason       string `json:"blocked_reason,omitempty"`
}

// MarshalJSON writes the poll interval in whole seconds (rounded up).
func (c Control) MarshalJSON() ([]byte, error) {
	return json.Marshal(controlJSON{PollIntervalSeconds: int64((c.PollInterval + time.Second - 1) / time.Second),
		DesiredGeneration: c.DesiredGeneration, JobsWaiting: c.JobsWaiting, Blocked: c.Blocked, BlockedReason: c.BlockedReason})
}

// UnmarshalJSON reads what MarshalJSON writes; unknown fields are refused.
func (c *Control) UnmarshalJSON(b []byte) error {
	j, err := decode[controlJSON]("control", b, MaxControlSize)
	if err != nil {
		return err
	}
	if j.PollIntervalSeconds < 0 || j.PollIntervalSeconds > int64(MaxPollInterval/time.Second) {
		return &FieldError{Message: "control", Path: "poll_interval_s", Msg: "out of range 0..86400"}
	}
	*c = Control{PollInterval: time.Duration(j.PollIntervalSeconds) * time.Second, DesiredGeneration: j.DesiredGeneration,
		JobsWaiting: j.JobsWaiting, Blocked: j.Blocked, BlockedReason: j.BlockedReason}
	return nil
}

// EncodeControl returns c's JSON encoding.
func EncodeControl(c Control) ([]byte, error) { return encode("control", c) }

// DecodeControl strictly decodes and validates a control envelope.
func DecodeControl(b []byte) (Control, error) {
	c, err := decode[Control]("control", b, MaxControlSize)
	if err != nil {
		return Control{}, err
	}
	if err := c.Validate(); err != nil {
		return Control{}, err
	}
	return c, nil
}

// Validate checks c's values.
func (c Control) Validate() error {
	k := &checker{msg: "control"}
	if c.PollInterval < time.Second || c.PollInterval > MaxPollInterval {
		k.fail("poll_interval_s", "%v is out of range 1s..%v", c.PollInterval, MaxPollInterval)
	}
	if c.DesiredGeneration < 0 {
		k.fail("desired_generation", "negative (%d)", c.DesiredGeneration)
	}
	k.text("blocked_reason", c.BlockedReason, false)
	return k.err
}

// Desired is a host's desired-state document as the hub serves it.
type Desired struct {
	Host string `json:"host"`
	// Generation numbers the host's documents; it only grows. 0 means the
	// hub holds no document for the host (Document is then empty).
	Generation int64 `json:"generation"`
	// Document is the desired-state document (apiVersion steward/v1, kind
	// Fleet) as JSON, naming at most this host. The receiver validates it
	// with package desired, as the hub did, and uses only its own host.
	Document json.RawMessage `json:"document,omitempty"`
}

// EncodeDesired returns d's JSON encoding.
func EncodeDesired(d Desired) ([]byte, error) { return encode("desired", d) }

// DecodeDesired strictly decodes and validates a desired envelope. The
// document itself is checked only to be a JSON object; package desired
// validates its content.
func DecodeDesired(b []byte) (Desired, error) {
	d, err := decode[Desired]("desired", b, MaxDesiredSize)
	if err != nil {
		return Desired{}, err
	}
	if err := d.Validate(); err != nil {
		return Desired{}, err
	}
	return d, nil
}

// Validate checks d's values.
func (d Desired) Validate() error {
	c := &checker{msg: "desired"}
	c.text("host", d.Host, true)
	switch {
	case d.Generation < 0:
		c.fail("generation", "negative (%d)", d.Generation)
	case d.Generation == 0 && len(d.Document) > 0:
		c.fail("document", "present at generation 0")
	case len(d.Document) > 0 && d.Document[0] != '{':
		c.fail("document", "not a JSON object")
	}
	return c.err
}
