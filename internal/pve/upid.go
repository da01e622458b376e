package pve

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"time"
)

// UPID is a PVE task identifier:
//
//	UPID:<node>:<pid %08X>:<pstart %08X>:<starttime %08X>:<type>:<id>:<user>:
//
// String prints it exactly as PVE does (upper-case hex, zero-padded to 8
// digits, trailing colon), so Parse(u.String()) == u and a parsed UPID
// prints back byte for byte. ID may be empty (vzdump of several guests);
// User may be an API token ("user@realm!tokenid").
type UPID struct {
	Node      string
	PID       uint64
	PStart    uint64
	StartTime int64 // Unix seconds
	Type      string
	ID        string
	User      string
}

// The grammar from pve-common's PVE::UPID decode.
var upidRE = regexp.MustCompile(`^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$`)

// ErrBadUPID is returned by ParseUPID for a string that is not a UPID.
var ErrBadUPID = errors.New("pve: malformed UPID")

// ParseUPID parses s, which must be a complete UPID including the trailing
// colon.
func ParseUPID(s string) (UPID, error) {
	m := upidRE.FindStringSubmatch(s)
	if m == nil {
		return UPID{}, fmt.Errorf("%w: %q", ErrBadUPID, truncate(s, 120))
	}
	pid, _ := strconv.ParseUint(m[3], 16, 64)
	pstart, _ := strconv.ParseUint(m[4], 16, 64)
	start, _ := strconv.ParseUint(m[5], 16, 64)
	return UPID{Node: m[1], PID: pid, PStart: pstart, StartTime: int64(start), Type: m[6], ID: m[7], User: m[8]}, nil
}

// String formats u as PVE does.
func (u UPID) String() string {
	return fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:", u.Node, u.PID, u.PStart, uint64(u.StartTime), u.Type, u.ID, u.User)
}

// Started returns the task's start time.
func (u UPID) Started() time.Time { return time.Unix(u.StartTime, 0) }

// IsZero reports whether u is the zero UPID.
func (u UPID) IsZero() bool { return u == UPID{} }

// MarshalText implements encoding.TextMarshaler.
func (u UPID) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (u *UPID) UnmarshalText(b []byte) error {
	p, err := ParseUPID(string(b))
	if err != nil {
		return err
	}
	*u = p
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
