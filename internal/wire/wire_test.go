package wire_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/wire"
)

var t0 = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)

func sampleReport() wire.Report {
	job := wire.JobID([]byte("{\"op\":\"destroy\"}\n"))
	return wire.Report{
		Host: "pve-a", Time: t0, DesiredGeneration: 7,
		Facts: wire.Facts{Node: "pve-a", AgentVersion: "0.9.0"},
		Guests: []wire.Guest{
			{VMID: 100, Kind: "qemu", Name: "old", Status: "stopped"},
			{VMID: 101, Kind: "lxc", Name: "web", Status: "running", Digest: "3f2a", Config: map[string]string{"cores": "2", "memory": "2048"}},
			{VMID: 102, Kind: "qemu", Name: "db", Status: "running", Lock: "backup", ConfigError: "500 got timeout"},
			{VMID: 103, Kind: "qemu", Name: "tmpl", Status: "stopped", Template: true, Digest: "aa01"},
		},
		Sync: []wire.Sync{
			{VMID: 101, Phase: wire.PhaseConverging, Drift: []wire.Change{{Key: "cores", From: "1", To: "2"}}},
			{VMID: 102, Phase: wire.PhaseError, Reason: "guest config unreadable", Lock: "backup", NextRetry: t0.Add(40 * time.Second)},
			{VMID: 103, Phase: wire.PhasePendingSignature, Drift: []wire.Change{{Key: "scsi1", From: "local:vm-103-disk-1,size=8G"}}},
			{VMID: 104, Phase: wire.PhaseError, Reason: "not found on this host"},
			{VMID: 120, Phase: wire.PhaseConverging, Drift: []wire.Change{{Key: "create", To: "clone of 9000 (full onto local-lvm)"}}},
			{VMID: 121, Phase: wire.PhaseError, Reason: "engine: not created: vmid 121 is taken in the cluster (qemu \"db\" on node pve-b)", NextRetry: time.Date(2026, 3, 14, 9, 27, 33, 0, time.UTC)},
		},
		Actions: []wire.ActionResult{
			{Action: wire.Action{Op: "config", VMID: 101, Kind: "lxc", Params: map[string]string{"cores": "2"}, Digest: "3f2a"},
				Source: "reconcile", Class: "benign"},
			{Action: wire.Action{Op: "destroy", VMID: 100, Kind: "qemu", Params: map[string]string{"purge": "1"}, Digest: "77"},
				Source: "signed", Class: "destructive", Job: job, UPID: "UPID:pve-a:00001234:00005678:67D3F6F1:qmdestroy:100:steward@pve!agent:", ExitStatus: "WARNINGS: 1", Warnings: 1},
			{Action: wire.Action{Op: "start", VMID: 102, Kind: "qemu"}, Source: "reconcile", Class: "benign", Skipped: "backing off until 2026-03-14T09:27:33Z"},
			{Action: wire.Action{Op: "shutdown", VMID: 105, Kind: "qemu", Params: map[string]string{"timeout": "180"}}, Source: "reconcile", Class: "benign", Error: "can't lock file '/var/lock/qemu-server/lock-105.conf' - got timeout"},
			{Action: wire.Action{Op: "clone", VMID: 120, Kind: "qemu", Params: map[string]string{"source": "9000", "full": "1", "storage": "local-lvm", "name": "web-1"}}, Source: "reconcile", Class: "benign",
				UPID: "UPID:pve-a:00001240:00005690:67D3F6F2:qmclone:9000:steward@pve!agent:", ExitStatus: "OK"},
			{Action: wire.Action{Op: "create", VMID: 130, Kind: "lxc", Params: map[string]string{"ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", "rootfs": "local-lvm:8", "unprivileged": "1"}}, Source: "reconcile", Class: "benign",
				UPID: "UPID:pve-a:00001241:00005691:67D3F6F2:vzcreate:130:steward@pve!agent:", ExitStatus: "OK"},
		},
		Pending: []wire.Pending{{
			Action: wire.Action{Op: "config", VMID: 103, Kind: "qemu", Params: map[string]string{"delete": "scsi1"}, Digest: "aa01"},
			Reason: "deletes disk scsi1", Destroys: []string{"scsi1"}, Payload: []byte("{\"digest\":\"aa01\"}\n<&>"),
			Quorum: &wire.Quorum{Role: "operator", Need: 2},
		}},
		Rejected: []wire.Rejection{
			{Reason: "signedop: payload is not canonical JSON"},
			{Job: job, Action: &wire.Action{Op: "destroy", VMID: 106, Kind: "lxc"}, Code: "stale_digest", Reason: "guest 106's config changed since signing"},
		},
	}
}

func sampleControl() wire.Control {
	return wire.Control{PollInterval: 60 * time.Second, DesiredGeneration: 7, JobsWaiting: true, Blocked: true, BlockedReason: "maintenance window"}
}

func sampleDesired() wire.Desired {
	return wire.Desired{Host: "pve-a", Generation: 7,
		Document: json.RawMessage(`{"apiVersion":"steward/v1","kind":"Fleet","hosts":{"pve-a":{"guests":{"101":{"kind":"lxc","config":{"cores":"2"}}}}}}`)}
}

func sampleReceipts() wire.Receipts {
	rs := []wire.Receipt{
		{Time: t0, Type: wire.ReceiptDecision, Action: &wire.Action{Op: "destroy", VMID: 100, Kind: "qemu"}, Class: "destructive", Verdict: "allowed", Reason: "destroys the guest", Signers: []string{"SHA256:abc"}},
		{Time: t0, Type: wire.ReceiptBegin, Op: "op-1", Source: "signed", Action: &wire.Action{Op: "destroy", VMID: 100, Kind: "qemu", Digest: "77"}, Signers: []string{"SHA256:abc"}, Nonce: "0123456789abcdef0123456789abcdef"},
		{Time: t0.Add(time.Second), Type: wire.ReceiptTask, Op: "op-1", UPID: "UPID:pve-a:00001234:00005678:67D3F6F1:qmdestroy:100:steward@pve!agent:"},
		{Time: t0.Add(3 * time.Second), Type: wire.ReceiptEnd, Op: "op-1", Result: &wire.OpResult{OK: true, ExitStatus: "OK"}},
	}
	wire.Chain(0, wire.ZeroHash, rs)
	return wire.Receipts{Host: "pve-a", Receipts: rs}
}

func sampleJobResults() wire.JobResults {
	j := wire.JobResultsOf(sampleReport())
	j.Results = append(j.Results, wire.JobResult{Job: wire.JobID([]byte("held")), State: wire.JobHeld, Code: "insufficient_signers",
		Reason: "waiting for 1 more signer(s) of role operator (1 of 2 signed: alice@example.com)",
		Quorum: &wire.Quorum{Role: "operator", Need: 2, Signed: []string{"alice@example.com"}}})
	return j
}

// golden compares got with testdata/name; STEWARD_UPDATE_GOLDEN=1 rewrites it.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if os.Getenv("STEWARD_UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with STEWARD_UPDATE_GOLDEN=1 to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: encoding differs from the golden file (STEWARD_UPDATE_GOLDEN=1 regenerates after an intended format change)\ngot:  %s\nwant: %s", name, got, want)
	}
}

// TestGoldenRoundTrip pins every message's bytes and checks that decoding
// them gives back the value that was encoded.
func TestGoldenRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		value  any
		encode func() ([]byte, error)
		decode func([]byte) (any, error)
	}{
		{"report.json", sampleReport(), func() ([]byte, error) { return wire.EncodeReport(sampleReport()) },
			func(b []byte) (any, error) { return wire.DecodeReport(b) }},
		{"control.json", sampleControl(), func() ([]byte, error) { return wire.EncodeControl(sampleControl()) },
			func(b []byte) (any, error) { return wire.DecodeControl(b) }},
		{"desired.json", sampleDesired(), func() ([]byte, error) { return wire.EncodeDesired(sampleDesired()) },
			func(b []byte) (any, error) { return wire.DecodeDesired(b) }},
		{"receipts.json", sampleReceipts(), func() ([]byte, error) { return wire.EncodeReceipts(sampleReceipts()) },
			func(b []byte) (any, error) { return wire.DecodeReceipts(b) }},
		{"jobresults.json", sampleJobResults(), func() ([]byte, error) { return wire.EncodeJobResults(sampleJobResults()) },
			func(b []byte) (any, error) { return wire.DecodeJobResults(b) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.encode()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name, b)
			got, err := tt.decode(b)
			if err != nil {
				t.Fatalf("decoding the encoding: %v", err)
			}
			if !reflect.DeepEqual(got, tt.value) {
				t.Errorf("round trip:\n got %#v\nwant %#v", got, tt.value)
			}
		})
	}
}

func TestJobResultsOf(t *testing.T) {
	got := wire.JobResultsOf(sampleReport())
	job := wire.JobID([]byte("{\"op\":\"destroy\"}\n"))
	want := wire.JobResults{Host: "pve-a", Results: []wire.JobResult{
		{Job: job, State: wire.JobDone, UPID: "UPID:pve-a:00001234:00005678:67D3F6F1:qmdestroy:100:steward@pve!agent:", ExitStatus: "WARNINGS: 1"},
		{Job: job, State: wire.JobRejected, Code: "stale_digest", Reason: "guest 106's config changed since signing"},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("JobResultsOf:\n got %+v\nwant %+v", got, want)
	}
}

// TestStrictDecoding: a message that is not exactly one valid value of its
// type is refused with an error naming what is wrong.
func TestStrictDecoding(t *testing.T) {
	report, _ := wire.EncodeReport(sampleReport())
	control, _ := wire.EncodeControl(sampleControl())
	desiredB, _ := wire.EncodeDesired(sampleDesired())
	receipts, _ := wire.EncodeReceipts(sampleReceipts())
	jobResults, _ := wire.EncodeJobResults(sampleJobResults())
	replace := func(b []byte, old, new string) []byte {
		if !bytes.Contains(b, []byte(old)) {
			t.Fatalf("sample lacks %q", old)
		}
		return bytes.Replace(b, []byte(old), []byte(new), 1)
	}
	decodeReport := func(b []byte) error { _, err := wire.DecodeReport(b); return err }
	decodeControl := func(b []byte) error { _, err := wire.DecodeControl(b); return err }
	decodeDesired := func(b []byte) error { _, err := wire.DecodeDesired(b); return err }
	decodeReceipts := func(b []byte) error { _, err := wire.DecodeReceipts(b); return err }
	decodeJobResults := func(b []byte) error { _, err := wire.DecodeJobResults(b); return err }
	tests := []struct {
		name   string
		decode func([]byte) error
		in     []byte
		want   string // substring of the error
	}{
		{"unknown top-level field", decodeReport, replace(report, `{"host"`, `{"extra":1,"host"`), `unknown field "extra"`},
		{"unknown nested field", decodeReport, replace(report, `"vmid":100,`, `"vmid":100,"disks":[],`), `unknown field "disks"`},
		{"trailing data", decodeReport, append(bytes.Clone(report), []byte(` {}`)...), "data after the JSON value"},
		{"wrong type", decodeReport, replace(report, `"vmid":100,`, `"vmid":"100",`), "vmid"},
		{"missing host", decodeReport, replace(report, `"host":"pve-a"`, `"host":""`), "report: host: required"},
		{"vmid out of range", decodeReport, replace(report, `"vmid":100,`, `"vmid":0,`), "guests[0].vmid"},
		{"bad kind", decodeReport, replace(report, `"kind":"qemu","name":"old"`, `"kind":"docker","name":"old"`), `guests[0].kind: unknown kind "docker"`},
		{"bad phase", decodeReport, replace(report, `"phase":"converging"`, `"phase":"happy"`), "sync[0].phase"},
		{"bad source", decodeReport, replace(report, `"source":"reconcile"`, `"source":"hub"`), "actions[0].source"},
		{"rejection without reason", decodeReport, replace(report, `"reason":"signedop: payload is not canonical JSON"`, `"reason":""`), "rejected[0].reason: required"},
		{"too large", decodeReport, make([]byte, wire.MaxReportSize+1), "too large"},
		{"control unknown field", decodeControl, replace(control, `{`, `{"hub":"x",`), `unknown field "hub"`},
		{"control zero interval", decodeControl, replace(control, `"poll_interval_s":60`, `"poll_interval_s":0`), "poll_interval_s"},
		{"control huge interval", decodeControl, replace(control, `"poll_interval_s":60`, `"poll_interval_s":999999999`), "poll_interval_s"},
		{"control trailing", decodeControl, append(bytes.Clone(control), 'x'), "data after"},
		{"desired negative generation", decodeDesired, replace(desiredB, `"generation":7`, `"generation":-1`), "generation: negative"},
		{"desired document at generation 0", decodeDesired, replace(desiredB, `"generation":7`, `"generation":0`), "present at generation 0"},
		{"receipt altered", decodeReceipts, replace(receipts, `"exit_status":"OK"`, `"exit_status":"ERR"`), "chain is broken"},
		{"quorum of none", decodeReport, replace(report, `"need":2`, `"need":0`), "pending[0].quorum.need"},
		{"quorum without a role", decodeReport, replace(report, `"role":"operator"`, `"role":""`), "pending[0].quorum.role: required"},
		{"held result quorum of too many", decodeJobResults, replace(jobResults, `"need":2`, `"need":65`), "quorum.need"},
		{"receipt bad type", decodeReceipts, replace(receipts, `"type":"task"`, `"type":"note"`), "receipts[2].type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.decode(tt.in)
			if err == nil {
				t.Fatalf("decoded; want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q; want it to contain %q", err, tt.want)
			}
		})
	}
	if _, err := wire.DecodeReport(make([]byte, wire.MaxReportSize+1)); !errors.Is(err, wire.ErrTooLarge) {
		t.Errorf("oversized report: got %v; want ErrTooLarge", err)
	}
}

// TestStripNewerQuorum: a hub that reads wire version 3 gets neither the
// pending quorum nor a held job's quorum (it would refuse the unknown
// field); version 4 gets both; the input is not changed.
func TestStripNewerQuorum(t *testing.T) {
	r := sampleReport()
	if got := wire.StripNewer(r, 3); got.Pending[0].Quorum != nil {
		t.Errorf("version 3 report: pending quorum %+v; want none", got.Pending[0].Quorum)
	}
	if r.Pending[0].Quorum == nil || wire.StripNewer(r, 4).Pending[0].Quorum == nil {
		t.Error("StripNewer changed its input, or stripped the quorum for version 4")
	}
	j := sampleJobResults()
	last := len(j.Results) - 1
	if got := wire.StripNewerResults(j, 3); got.Results[last].Quorum != nil {
		t.Errorf("version 3 job results: quorum %+v; want none", got.Results[last].Quorum)
	}
	if j.Results[last].Quorum == nil || wire.StripNewerResults(j, 4).Results[last].Quorum == nil {
		t.Error("StripNewerResults changed its input, or stripped the quorum for version 4")
	}
	b, _ := wire.EncodeJobResults(wire.StripNewerResults(j, 3))
	if bytes.Contains(b, []byte("quorum")) {
		t.Errorf("version 3 job results carry a quorum: %s", b)
	}
}

func TestDesiredDocumentMustBeObject(t *testing.T) {
	for _, doc := range []string{`null`, `[]`, `"x"`, `7`} {
		b := []byte(`{"host":"pve-a","generation":3,"document":` + doc + `}`)
		if _, err := wire.DecodeDesired(b); err == nil || !strings.Contains(err.Error(), "document: not a JSON object") {
			t.Errorf("document %s: got %v; want not a JSON object", doc, err)
		}
	}
	if _, err := wire.DecodeDesired([]byte(`{"host":"pve-a","generation":0}`)); err != nil {
		t.Errorf("generation 0 without a document: %v; want accepted (the hub holds none)", err)
	}
}

func TestVerifyChain(t *testing.T) {
	rs := sampleReceipts().Receipts
	seq, last, err := wire.VerifyChain(0, wire.ZeroHash, rs)
	if err != nil || seq != 4 || last != rs[3].Hash {
		t.Fatalf("VerifyChain(whole) = %d, %.8s, %v; want 4, %.8s, nil", seq, last, err, rs[3].Hash)
	}
	// Continuing from the middle works; skipping a receipt is a gap.
	if _, _, err := wire.VerifyChain(2, rs[1].Hash, rs[2:]); err != nil {
		t.Errorf("continuing after seq 2: %v", err)
	}
	if _, _, err := wire.VerifyChain(1, rs[0].Hash, rs[2:]); !errors.Is(err, wire.ErrChainGap) {
		t.Errorf("a dropped receipt: got %v; want ErrChainGap", err)
	}
	// Reordering, or re-chaining an altered receipt onto another past.
	swapped := []wire.Receipt{rs[1], rs[0]}
	swapped[0].Seq, swapped[1].Seq = 1, 2
	if _, _, err := wire.VerifyChain(0, wire.ZeroHash, swapped); !errors.Is(err, wire.ErrChainBroken) {
		t.Errorf("reordered receipts: got %v; want ErrChainBroken", err)
	}
	forged := append([]wire.Receipt(nil), rs...)
	forged[1].Nonce = "ffffffffffffffffffffffffffffffff"
	forged[1].Hash = wire.ReceiptHash(forged[1]) // consistent by itself, but the next receipt names the old hash
	if _, _, err := wire.VerifyChain(0, wire.ZeroHash, forged); !errors.Is(err, wire.ErrChainBroken) {
		t.Errorf("an altered receipt with a recomputed hash: got %v; want ErrChainBroken", err)
	}
}

// A break starts a new segment: numbered on, linked to nothing (its Prev
// is the zero hash, whatever came before), and the receipts after it
// link to it; a break that names another hash is broken, one that skips a
// number is a gap, and a break without a reason is refused.
func TestVerifyChainBreak(t *testing.T) {
	rs := sampleReceipts().Receipts[:2]
	seg := []wire.Receipt{{Time: rs[1].Time, Type: wire.ReceiptBreak, Reason: "the receipt log was damaged"}, rs[0]}
	seg[1].Time = rs[1].Time.Add(time.Second)
	wire.Chain(2, wire.ZeroHash, seg)
	seq, last, err := wire.VerifyChain(2, rs[1].Hash, seg)
	if err != nil || seq != 4 || last != seg[1].Hash {
		t.Fatalf("a break segment after seq 2: %d, %v; want 4, nil", seq, err)
	}
	if got := wire.Breaks(append(rs, seg...)); len(got) != 1 || got[0].Seq != 3 {
		t.Errorf("Breaks = %+v; want the one at seq 3", got)
	}
	if err := (wire.Receipts{Host: "pve-a", Receipts: append(append([]wire.Receipt(nil), rs...), seg...)}).Validate(); err != nil {
		t.Errorf("a batch holding a break: %v", err)
	}
	linked := append([]wire.Receipt(nil), seg...)
	wire.Chain(2, rs[1].Hash, linked)
	if _, _, err := wire.VerifyChain(2, rs[1].Hash, linked); !errors.Is(err, wire.ErrChainBroken) {
		t.Errorf("a break naming the hash before it: got %v; want ErrChainBroken", err)
	}
	if _, _, err := wire.VerifyChain(1, rs[0].Hash, seg); !errors.Is(err, wire.ErrChainGap) {
		t.Errorf("a break skipping a number: got %v; want ErrChainGap", err)
	}
	bare := []wire.Receipt{{Time: rs[1].Time, Type: wire.ReceiptBreak}}
	wire.Chain(0, wire.ZeroHash, bare)
	if err := (wire.Receipts{Host: "pve-a", Receipts: bare}).Validate(); err == nil || !strings.Contains(err.Error(), "reason") {
		t.Errorf("a break without a reason: %v; want refused naming the reason", err)
	}
}

func TestControlIntervalRoundsUp(t *testing.T) {
	b, err := wire.EncodeControl(wire.Control{PollInterval: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c, err := wire.DecodeControl(b)
	if err != nil {
		t.Fatal(err)
	}
	if c.PollInterval != 2*time.Second {
		t.Errorf("1.5s poll interval decoded as %v; want 2s (never shorter than the hub asked)", c.PollInterval)
	}
}
