package gate_test

import (
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/signedop"
)

// Issue 8 §6: every signed job, benign or not, first passes
// signedop.Admissible, the check the operator's tools make too, and is
// refused with its code.
func TestDecideSignedAdmissible(t *testing.T) {
	mk := func(a action.Action, ttl time.Duration) signedop.Job {
		p, err := signedop.NewPayload("pve-a", a, now, ttl, "")
		if err != nil {
			t.Fatal(err)
		}
		return signedop.Job{Payload: p.Canonical()}
	}
	tests := []struct {
		name string
		job  signedop.Job
		code string
	}{
		{"benign config without a digest", mk(action.Action{Op: action.SetConfig, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"cores": "2"}}, time.Hour), signedop.CodeMissingDigest},
		{"unknown op", mk(action.Action{Op: "format_disk", VMID: 101, Kind: guest.QEMU, Digest: digest}, time.Hour), signedop.CodeUnknownOp},
		{"benign start valid for 30 days", mk(action.Action{Op: action.Start, VMID: 101, Kind: guest.QEMU}, 30*24*time.Hour), signedop.CodeTTLTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newGate(nil).DecideSigned(tt.job, actual(), digest, classify.Provenance{})
			if d.Outcome != gate.Rejected || d.Code != tt.code || !strings.Contains(d.Reason, "("+tt.code+")") {
				t.Errorf("got %s: %s; want rejected (%s)", d.Outcome, d.Reason, tt.code)
			}
		})
	}
}
