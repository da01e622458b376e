package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/wire"
)

// opsHub is the test hub (newTestHub) with an operator client, plus the
// agent side of the API, for the operator commands' tests.
type opsHub struct {
	*testHub
	t  *testing.T
	op *hubclient.Client // the operator's client
}

func newOpsHub(t *testing.T) *opsHub {
	t.Helper()
	h := newTestHub(t)
	c, err := hubclient.New(hubclient.Options{URL: h.URL, Fingerprint: h.Fingerprint, Token: h.Token})
	if err != nil {
		t.Fatal(err)
	}
	return &opsHub{testHub: h, t: t, op: c}
}

// joinTokenFor creates host on the hub and returns a join token for it.
func (o *opsHub) joinTokenFor(host string) string {
	o.t.Helper()
	var jt struct {
		JoinToken string `json:"join_token"`
	}
	if err := o.op.JSON(o.t.Context(), "POST", "/v1/hosts/"+host+"/join-token", nil, nil, &jt); err != nil {
		o.t.Fatal(err)
	}
	return jt.JoinToken
}

// enroll creates host on the hub and returns a client with its host token.
func (o *opsHub) enroll(host string) *hubclient.Client {
	o.t.Helper()
	jt := o.joinTokenFor(host)
	anon, err := hubclient.New(hubclient.Options{URL: o.URL, Fingerprint: o.Fingerprint})
	if err != nil {
		o.t.Fatal(err)
	}
	er, err := anon.Enroll(o.t.Context(), jt)
	if err != nil {
		o.t.Fatal(err)
	}
	return anon.WithToken(er.Token)
}

// report posts rep as host's agent would.
func (o *opsHub) report(agent *hubclient.Client, rep wire.Report) {
	o.t.Helper()
	b, err := wire.EncodeReport(rep)
	if err != nil {
		o.t.Fatal(err)
	}
	resp, err := agent.Do(o.t.Context(), hubclient.Request{Method: "POST", Path: "/v1/agent/hosts/" + rep.Host + "/report", Body: b})
	if err != nil {
		o.t.Fatal(err)
	}
	if err := resp.Err("POST", "report"); err != nil {
		o.t.Fatal(err)
	}
}

// jobs returns host's jobs as the operator sees them.
func (o *opsHub) jobs(host string) []hub.JobJSON {
	o.t.Helper()
	var out struct {
		Jobs []hub.JobJSON `json:"jobs"`
	}
	if err := o.op.JSON(o.t.Context(), "GET", "/v1/hosts/"+url.PathEscape(host)+"/jobs", nil, nil, &out); err != nil {
		o.t.Fatal(err)
	}
	return out.Jobs
}

// pendingDestroy returns a pending destroy of qemu 102 on host bound to
// digest, made at made with ttl, as an agent's gate offers it.
func pendingDestroy(t *testing.T, host, digest string, made time.Time, ttl time.Duration) wire.Pending {
	t.Helper()
	a := action.Action{Op: action.Destroy, VMID: 102, Kind: guest.QEMU, Params: map[string]string{"purge": "1"}, Digest: digest}
	p, err := signedop.NewPayload(host, a, made, ttl, "steward: destroys the guest")
	if err != nil {
		t.Fatal(err)
	}
	return wire.Pending{Action: wire.Action{Op: string(a.Op), VMID: a.VMID, Kind: string(a.Kind), Params: a.Params, Digest: digest},
		Reason: "destroys the guest", Payload: p.Canonical()}
}

func reportWith(host, digest string, pending ...wire.Pending) wire.Report {
	return wire.Report{Host: host, Time: time.Now().UTC().Truncate(time.Second), Facts: wire.Facts{Node: host},
		Guests:  []wire.Guest{{VMID: 102, Kind: "qemu", Name: "scratch", Status: "stopped", Digest: digest}},
		Pending: pending}
}

// answerJobs plays the agent: every job that appears waiting on host gets
// result res (its Job filled in) posted, until ctx ends.
func answerJobs(ctx context.Context, t *testing.T, agent *hubclient.Client, host string, res wire.JobResult) {
	for ctx.Err() == nil {
		var out struct {
			Jobs []hub.JobJSON `json:"jobs"`
		}
		if err := agent.JSON(ctx, "GET", "/v1/agent/hosts/"+host+"/jobs", nil, nil, &out); err != nil {
			return
		}
		for _, j := range out.Jobs {
			r := res
			r.Job = j.ID
			b, _ := json.Marshal(wire.JobResults{Host: host, Results: []wire.JobResult{r}})
			resp, err := agent.Do(ctx, hubclient.Request{Method: "POST", Path: "/v1/agent/hosts/" + host + "/job-results", Body: b})
			if err == nil && resp.Status != http.StatusOK {
				t.Errorf("posting a job result: %d %s", resp.Status, resp.Body)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}
