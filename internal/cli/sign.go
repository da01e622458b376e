package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/sign"
	"github.com/steward-pve/steward/internal/wire"
)

func init() { register(newSignCmd) }

func newSignCmd(stdout, stderr io.Writer) *cobra.Command {
	var opt signOptions
	cmd := &cobra.Command{
		Use:   "sign [--host H] [--key KEY | --agent] [--yes] [--wait 5m]",
		Short: "Review, sign and upload the destructive operations waiting for an operator's signature",
		Long: `sign lists the operations agents hold for a signature (on --host, or on every host
whose last report holds any, from the hub's fleet view), each with what it would
destroy, the guest state its payload is bound to, and who signed it already out of
how many signers of which role the agent's policy needs; asks for confirmation of
each (or --yes signs every one), signs the payload exactly as the agent made it,
uploads the signature to the hub, and follows the job until the agent reports its
fate (--wait; 0 does not wait).

Operations that need several signers (a policy with count: 2 or more) are signed
one operator after the other: each runs steward sign and signs the same payload;
the hub adds each signature to the job already waiting for it (a key counts once),
and the agent runs the job once enough operators signed. Until then the operation
is listed again, with the signatures it has; an operator whose signature leaves
it short is told how many more are needed, and nothing is followed.

A payload the agent would refuse is refused here, before anything is signed: an
expired one, one bound to a config digest the host's last report no longer shows
(the guest changed since), one for another host or another action than listed.

Signing runs ssh-keygen -Y sign -n ` + signedop.Namespace + ` -f KEY, so passphrases and
FIDO security keys prompt on the terminal as with OpenSSH; --agent signs through the
ssh-agent at $SSH_AUTH_SOCK instead (with the agent key whose public half is KEY.pub,
or its only key when --key is not given).

-o json|yaml prints {"results": [{"host", "vmid", "kind", "op", "job", "state",
"code", "reason", "upid", "exit_status", "signatures", "need", "role"}]} where state
is refused, declined, awaiting_signatures (signed; more signers are needed),
waiting, done, failed or rejected, and signatures is how many the job holds after
the upload, need and role what the agent's policy asks. Exit status: 0 when every
signed operation ran or awaits other signers (or none was waiting, or the operator
declined), 1 when one was refused, rejected, failed or still waiting at the end of
--wait.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(cmd)
			if err != nil {
				return err
			}
			if opt.Agent && opt.Key == "" {
				opt.Sign = func(_ context.Context, payload []byte) ([]byte, error) { return sign.WithAgent(payload, "") }
			}
			c, err := operatorClient(cmd)
			if err != nil {
				return err
			}
			res, runErr := runSign(cmd.Context(), c, cmd.InOrStdin(), stderr, opt)
			if res == nil {
				return runErr
			}
			out := struct {
				Results []SignResult `json:"results"`
			}{res}
			if err := writeOutput(stdout, format, out, func(w io.Writer) error { return signSummary(w, res) }); err != nil {
				return err
			}
			if errors.Is(runErr, errSignFailed) {
				return &ExitStatus{Code: ExitFailure, Reason: runErr.Error()}
			}
			return runErr
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opt.Host, "host", "", "only this host's operations (default: every host)")
	fl.StringVar(&opt.Key, "key", "", "OpenSSH private key to sign with (with --agent: its public key, KEY.pub)")
	fl.BoolVar(&opt.Agent, "agent", false, "sign through ssh-agent ($SSH_AUTH_SOCK)")
	fl.BoolVarP(&opt.Yes, "yes", "y", false, "sign every admissible operation without asking")
	fl.DurationVar(&opt.Wait, "wait", 5*time.Minute, "how long to follow the signed jobs until the agents report them (0: do not wait)")
	addOperatorFlags(cmd)
	addOutputFlag(cmd)
	return cmd
}

// signSummary is sign's text output: one line per operation.
func signSummary(w io.Writer, res []SignResult) error {
	if len(res) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tVMID\tOP\tSTATE\tDETAIL")
	for _, r := range res {
		detail := r.Reason
		if r.State == wire.JobDone || r.State == wire.JobFailed || r.State == wire.JobRejected {
			detail = strings.TrimPrefix(jobFate(r), r.State)
			detail = strings.TrimLeft(detail, ":, ")
		}
		if r.State == jobWaiting {
			detail = "job " + r.Job
		}
		if r.State == signAwaiting && r.Need > 0 {
			detail = fmt.Sprintf("%d of %d signature(s) of role %s; job %s", r.Signatures, r.Need, r.Role, r.Job)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s %s\t%s\t%s\n", r.Host, r.VMID, r.Op, r.Kind, r.State, detail)
	}
	return tw.Flush()
}

// signOptions configure runSign.
type signOptions struct {
	Host  string // "" = every host
	Key   string // private key file, or the public key of an ssh-agent key
	Agent bool   // sign through ssh-agent
	Yes   bool   // sign every admissible operation without asking
	// Wait bounds how long to follow the uploaded jobs (0: do not wait).
	Wait time.Duration
	Poll time.Duration // between job polls; default 2s
	Now  func() time.Time
	// Sign replaces the key signer (tests); nil signs with Key/Agent.
	Sign func(ctx context.Context, payload []byte) ([]byte, error)
}

// SignResult is what became of one pending operation (`steward sign -o
// json` prints a list of them).
type SignResult struct {
	Host string `json:"host"`
	VMID int    `json:"vmid"`
	Kind string `json:"kind"`
	Op   string `json:"op"`
	// Job is the uploaded job's id (wire.JobID of the payload).
	Job string `json:"job,omitempty"`
	// State is refused (not signed: the payload is expired, stale or one
	// the agent would refuse, or its job already ended; Reason says why),
	// declined (the operator said no), awaiting_signatures (uploaded; the
	// policy needs more signers before the agent runs it), waiting
	// (uploaded, no final result yet), or the job's final state: done,
	// failed or rejected.
	State      string `json:"state"`
	Code       string `json:"code,omitempty"`
	Reason     string `json:"reason,omitempty"`
	UPID       string `json:"upid,omitempty"`
	ExitStatus string `json:"exit_status,omitempty"`
	// Signatures is how many signatures the job held after the upload;
	// Need and Role what the agent's policy asks (0 and "" when the agent
	// did not say).
	Signatures int    `json:"signatures,omitempty"`
	Need       int    `json:"need,omitempty"`
	Role       string `json:"role,omitempty"`
}

// Sign result states besides the job states.
const (
	signRefused  = "refused"
	signDeclined = "declined"
	// signAwaiting: signed and uploaded, and the job needs more signers
	// before the agent runs it.
	signAwaiting = "awaiting_signatures"
)

// errSignFailed is returned when an operation was refused, rejected,
// failed or still waiting at the end: the exit status is 1.
var errSignFailed = errors.New("sign: not every operation ran")

// signHosts returns the hosts runSign looks at: host, or every host
// whose last report holds actions for signatures, from the fleet view in
// one request (GET /v1/hosts?summary=1) rather than one per host.
func signHosts(ctx context.Context, c *hubclient.Client, host string) ([]string, error) {
	if host != "" {
		return []string{host}, nil
	}
	var out struct {
		Hosts []hub.HostJSON `json:"hosts"`
	}
	if err := c.JSON(ctx, http.MethodGet, "/v1/hosts", url.Values{"summary": {"1"}}, nil, &out); err != nil {
		return nil, err
	}
	var ids []string
	for _, h := range out.Hosts {
		if h.Summary != nil && h.Summary.Pending > 0 {
			ids = append(ids, h.ID)
		}
	}
	return ids, nil
}

// waitingJobs returns host's waiting jobs by id.
func waitingJobs(ctx context.Context, c *hubclient.Client, host string) (map[string]hub.JobJSON, error) {
	var out struct {
		Jobs []hub.JobJSON `json:"jobs"`
	}
	if err := c.JSON(ctx, http.MethodGet, "/v1/hosts/"+url.PathEscape(host)+"/jobs", url.Values{"state": {"waiting"}}, nil, &out); err != nil {
		return nil, err
	}
	m := make(map[string]hub.JobJSON, len(out.Jobs))
	for _, j := range out.Jobs {
		m[j.ID] = j
	}
	return m, nil
}

// signers describes who signed job (nil: nobody yet) and how many of
// which role q (nil: the agent did not say) asks: "1 of 2 (role
// operator): alice@example.com". The agent's held verdict names the
// principals it credited; without one the keys' fingerprints are shown.
func signers(job *hub.JobJSON, q *wire.Quorum) string {
	var names []string
	have := 0
	if job != nil {
		have = len(job.Signatures)
		if r := job.Result; r != nil && r.Quorum != nil {
			q = &wire.Quorum{Role: r.Quorum.Role, Need: r.Quorum.Need}
			names, have = r.Quorum.Signed, len(r.Quorum.Signed)
		} else {
			for _, s := range job.Signatures {
				fp, err := signedop.SignerFingerprint(s)
				if err != nil {
					fp = "(unparsable signature)"
				}
				names = append(names, fp)
			}
		}
	}
	var b strings.Builder
	if q != nil {
		fmt.Fprintf(&b, "%d of %d (role %s)", have, q.Need, q.Role)
	} else {
		fmt.Fprintf(&b, "%d (the agent did not say how many it needs)", have)
	}
	if len(names) > 0 {
		b.WriteString(": " + strings.Join(names, ", "))
	}
	return b.String()
}

// runSign lists the operations waiting for signatures on one host (or
// every host), shows each with what it would destroy and the guest state
// its payload is bound to, refuses the payloads the agent would refuse
// (expired, stale against the host's last report, inadmissible), asks for
// confirmation (unless Yes), signs the payload bytes as the agent made
// them, uploads the signed job and follows it until the agent reports
// its fate or Wait passes. Prompts and progress go to errw; in is where
// answers are read.
func runSign(ctx context.Context, c *hubclient.Client, in io.Reader, errw io.Writer, opt signOptions) ([]SignResult, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Poll <= 0 {
		opt.Poll = 2 * time.Second
	}
	signer := opt.Sign
	if signer == nil {
		if opt.Key == "" {
			return nil, &UsageError{Err: errors.New("sign: --key is required: the OpenSSH private key to sign with (with --agent, the public key of an ssh-agent key)")}
		}
		key := expandHome(opt.Key)
		signer = func(ctx context.Context, payload []byte) ([]byte, error) {
			if opt.Agent {
				return sign.WithAgent(payload, key)
			}
			return sign.SSHKeygen{Prompt: errw}.Sign(ctx, payload, key)
		}
	}
	hosts, err := signHosts(ctx, c, opt.Host)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	answers := bufio.NewReader(in)
	results := []SignResult{}
	uploaded := map[string][]int{} // host -> indexes into results
	for _, h := range hosts {
		var pend struct {
			Pending []wire.Pending `json:"pending"`
		}
		if err := c.JSON(ctx, http.MethodGet, "/v1/hosts/"+url.PathEscape(h)+"/pending", nil, nil, &pend); err != nil {
			return results, fmt.Errorf("sign: %w", err)
		}
		if len(pend.Pending) == 0 {
			if opt.Host != "" {
				fmt.Fprintf(errw, "%s: no operation is waiting for a signature\n", h)
			}
			continue
		}
		var hj hub.HostJSON
		if err := c.JSON(ctx, http.MethodGet, "/v1/hosts/"+url.PathEscape(h), nil, nil, &hj); err != nil {
			return results, fmt.Errorf("sign: %w", err)
		}
		var rep *wire.Report
		if len(hj.Report) > 0 {
			r, err := wire.DecodeReport(hj.Report)
			if err != nil {
				return results, fmt.Errorf("sign: the hub's last report of %s: %w", h, err)
			}
			rep = &r
		}
		jobs, err := waitingJobs(ctx, c, h)
		if err != nil {
			return results, fmt.Errorf("sign: %w", err)
		}
		fmt.Fprintf(errw, "%s: %d operation(s) waiting for a signature\n", h, len(pend.Pending))
		for i, pd := range pend.Pending {
			res := SignResult{Host: h, VMID: pd.Action.VMID, Kind: pd.Action.Kind, Op: pd.Action.Op}
			fmt.Fprintf(errw, "\n[%d/%d] ", i+1, len(pend.Pending))
			p, err := checkPending(h, pd, rep, opt.Now())
			var job *hub.JobJSON
			if j, ok := jobs[wire.JobID(pd.Payload)]; ok {
				job = &j
			}
			if p.Op != "" {
				describePending(errw, p, pd, rep, opt.Now())
				fmt.Fprintf(errw, "  signed:    %s\n", signers(job, pd.Quorum))
			} else {
				fmt.Fprintf(errw, "%s %s %d\n", pd.Action.Op, pd.Action.Kind, pd.Action.VMID)
			}
			if err != nil {
				res.State, res.Reason = signRefused, err.Error()
				var r *signedop.Rejection
				if errors.As(err, &r) {
					res.Code, res.Reason = r.Code, r.Reason
					fmt.Fprintf(errw, "  REFUSED, not signed (%s): %s\n", r.Code, r.Reason)
				} else {
					fmt.Fprintf(errw, "  REFUSED, not signed: %v\n", err)
				}
				results = append(results, res)
				continue
			}
			res.Job = wire.JobID(pd.Payload)
			if !opt.Yes {
				ok, err := confirm(ctx, answers, errw, "  Sign this operation? [y/N] ")
				if err != nil {
					return results, err
				}
				if !ok {
					res.State = signDeclined
					fmt.Fprintln(errw, "  not signed")
					results = append(results, res)
					continue
				}
			}
			sig, err := signer(ctx, pd.Payload)
			if err != nil {
				return results, fmt.Errorf("sign: %s %s %d on %s: %w", p.Op, p.Kind, p.VMID, h, err)
			}
			var up hub.UploadJSON
			err = c.JSON(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(h)+"/jobs", nil, hub.JobJSON{Payload: pd.Payload, Signatures: [][]byte{sig}}, &up)
			switch {
			case hubclient.IsCode(err, "job_final"):
				var he *hubclient.Error
				errors.As(err, &he)
				res.State, res.Code, res.Reason = signRefused, "job_final", he.Message
				fmt.Fprintf(errw, "  not uploaded: %s\n", res.Reason)
				results = append(results, res)
				continue
			case err != nil:
				return results, fmt.Errorf("sign: uploading the signed job: %w", err)
			case up.Created:
				fmt.Fprintf(errw, "  signed and uploaded as job %.12s…", res.Job)
			case up.Added == 0:
				fmt.Fprintf(errw, "  your key had signed job %.12s… already: nothing added", res.Job)
			default:
				fmt.Fprintf(errw, "  signed; your signature joins job %.12s…", res.Job)
			}
			res.Signatures = up.Signatures
			if q := pd.Quorum; q != nil {
				res.Need, res.Role = q.Need, q.Role
				fmt.Fprintf(errw, " (%d of %d signature(s) of role %s)", up.Signatures, q.Need, q.Role)
			}
			fmt.Fprintln(errw)
			res.State = jobWaiting
			if q := pd.Quorum; q != nil && up.Signatures < q.Need {
				// More signers must sign before the agent runs it:
				// nothing to follow.
				res.State = signAwaiting
				res.Reason = fmt.Sprintf("waiting for %d more signer(s) of role %s: another operator runs steward sign", q.Need-up.Signatures, q.Role)
				fmt.Fprintf(errw, "  %s\n", res.Reason)
				results = append(results, res)
				continue
			}
			results = append(results, res)
			uploaded[h] = append(uploaded[h], len(results)-1)
		}
	}
	if len(results) == 0 {
		fmt.Fprintln(errw, "No operation is waiting for a signature.")
		return results, nil
	}
	if len(uploaded) > 0 && opt.Wait > 0 {
		if err := followJobs(ctx, c, errw, results, uploaded, opt); err != nil {
			return results, err
		}
	}
	for _, r := range results {
		switch r.State {
		case signRefused, wire.JobFailed, wire.JobRejected:
			return results, errSignFailed
		case jobWaiting:
			if opt.Wait > 0 {
				return results, errSignFailed
			}
		}
	}
	return results, nil
}

// jobWaiting is a job the agent has not finished.
const jobWaiting = "waiting"

// checkPending returns the payload of pd once it is one this operator
// may sign: it parses, is for host and for exactly the action the hub
// lists, passes the agent's own admission checks, is inside its validity
// window, and is bound to the config digest the host's last report shows
// for the guest. The payload is what gets signed, so what is shown comes
// from it, not from the hub's description.
func checkPending(host string, pd wire.Pending, rep *wire.Report, now time.Time) (signedop.Payload, error) {
	if len(pd.Payload) == 0 {
		return signedop.Payload{}, errors.New("the agent offered no payload for it (an older agent?); make one with `steward op payload`")
	}
	p, err := signedop.ParsePayload(pd.Payload)
	if err != nil {
		return signedop.Payload{}, fmt.Errorf("the payload does not parse: %w", err)
	}
	a := pd.Action
	switch {
	case p.Host != host:
		return p, fmt.Errorf("the payload is for host %q, listed under %q: refusing a re-targeted payload", p.Host, host)
	case string(p.Op) != a.Op || p.VMID != a.VMID || string(p.Kind) != a.Kind || p.Digest != a.Digest || !maps.Equal(p.Params, a.Params) && len(p.Params)+len(a.Params) > 0:
		return p, fmt.Errorf("the payload (%s %s %d) is not the action the hub lists (%s %s %d): refusing to sign what is not shown", p.Op, p.Kind, p.VMID, a.Op, a.Kind, a.VMID)
	}
	if err := signedop.Admissible(p, 0); err != nil {
		return p, err
	}
	if !now.Before(p.Expires) {
		return p, &signedop.Rejection{Code: signedop.CodeExpired, Reason: fmt.Sprintf(
			"the payload expired at %s; the agent offers a fresh one in its next report: run steward sign again then",
			p.Expires.UTC().Format(signedop.TimeLayout))}
	}
	if p.Digest != "" {
		if rep == nil {
			return p, &signedop.Rejection{Code: signedop.CodeStaleDigest, Reason: "the hub holds no report of the host to check the guest's config digest against"}
		}
		g, ok := findGuest(rep, p.VMID)
		switch {
		case !ok:
			return p, &signedop.Rejection{Code: signedop.CodeNoSuchGuest, Reason: fmt.Sprintf(
				"the host's last report (%s) lists no guest %d", rep.Time.UTC().Format(signedop.TimeLayout), p.VMID)}
		case g.Digest != p.Digest:
			return p, &signedop.Rejection{Code: signedop.CodeStaleDigest, Reason: fmt.Sprintf(
				"the payload is bound to config digest %.12s… but the host's last report (%s) shows %.12s…: the guest changed since the payload was made; the agent offers a fresh one in its next report",
				p.Digest, rep.Time.UTC().Format(signedop.TimeLayout), orNone(g.Digest))}
		}
	}
	return p, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func findGuest(rep *wire.Report, vmid int) (wire.Guest, bool) {
	for _, g := range rep.Guests {
		if g.VMID == vmid {
			return g, true
		}
	}
	return wire.Guest{}, false
}

// describePending shows what signing p would authorize.
func describePending(w io.Writer, p signedop.Payload, pd wire.Pending, rep *wire.Report, now time.Time) {
	name, status := "", ""
	if rep != nil {
		if g, ok := findGuest(rep, p.VMID); ok {
			name, status = g.Name, g.Status
		}
	}
	fmt.Fprintf(w, "%s %s %d", p.Op, p.Kind, p.VMID)
	if name != "" {
		fmt.Fprintf(w, " %q", name)
	}
	fmt.Fprintf(w, " on %s\n", p.Host)
	switch {
	case len(pd.Destroys) > 0:
		fmt.Fprintf(w, "  destroys:  %s\n", strings.Join(pd.Destroys, ", "))
	case p.Op == "destroy":
		fmt.Fprintf(w, "  destroys:  the guest and every disk it owns\n")
	default:
		fmt.Fprintf(w, "  why held:  %s\n", pd.Reason)
	}
	if s := protectedNote(p); s != "" {
		fmt.Fprintf(w, "  PROTECTED: %s\n", s)
	}
	for _, k := range slices.Sorted(maps.Keys(p.Params)) {
		fmt.Fprintf(w, "  param:     %s=%s\n", k, p.Params[k])
	}
	bound := "no config digest (the op does not act on an existing config)"
	if p.Digest != "" {
		bound = "config digest " + p.Digest
	}
	if status != "" {
		bound += " (guest " + status
		if rep != nil {
			bound += " at the last report, " + rep.Time.UTC().Format(signedop.TimeLayout)
		}
		bound += ")"
	}
	fmt.Fprintf(w, "  bound to:  %s\n", bound)
	left := p.Expires.Sub(now).Round(time.Minute)
	fmt.Fprintf(w, "  valid:     %s to %s", p.NotBefore.UTC().Format(signedop.TimeLayout), p.Expires.UTC().Format(signedop.TimeLayout))
	if left > 0 {
		fmt.Fprintf(w, " (%v left)", left)
	}
	fmt.Fprintln(w)
	if p.Reason != "" {
		fmt.Fprintf(w, "  reason:    %s\n", p.Reason)
	}
}

// confirm asks question on w and reads a line from r: yes for y/yes.
// End of input is no.
func confirm(ctx context.Context, r *bufio.Reader, w io.Writer, question string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	fmt.Fprint(w, question)
	line, err := r.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("sign: reading the answer: %w", err)
	}
	if errors.Is(err, io.EOF) && line == "" {
		fmt.Fprintln(w)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}

// followJobs polls the hosts' jobs until every uploaded one has a final
// state or opt.Wait passes, printing each fate as it arrives.
func followJobs(ctx context.Context, c *hubclient.Client, errw io.Writer, results []SignResult, uploaded map[string][]int, opt signOptions) error {
	fmt.Fprintf(errw, "\nWaiting for the agents to run the signed jobs (up to %v)...\n", opt.Wait)
	ctx, cancel := context.WithTimeout(ctx, opt.Wait)
	defer cancel()
	t := time.NewTicker(opt.Poll)
	defer t.Stop()
	for {
		open := 0
		for h, idx := range uploaded {
			var out struct {
				Jobs []hub.JobJSON `json:"jobs"`
			}
			if err := c.JSON(ctx, http.MethodGet, "/v1/hosts/"+url.PathEscape(h)+"/jobs", nil, nil, &out); err != nil {
				if ctx.Err() != nil {
					open++ // the deadline or an interrupt: reported below
					break
				}
				return fmt.Errorf("sign: following the jobs of %s: %w", h, err)
			}
			byID := map[string]hub.JobJSON{}
			for _, j := range out.Jobs {
				byID[j.ID] = j
			}
			for _, i := range idx {
				r := &results[i]
				if r.State != jobWaiting {
					continue
				}
				j, ok := byID[r.Job]
				if ok && j.State == jobWaiting && j.Result != nil && j.Result.Code == signedop.CodeInsufficientSigners {
					// The agent counted fewer authorized signers than
					// its policy needs (a key without the role, say).
					r.State, r.Code, r.Reason = signAwaiting, j.Result.Code, j.Result.Reason
					fmt.Fprintf(errw, "  %s %s %d on %s: %s\n", r.Op, r.Kind, r.VMID, r.Host, r.Reason)
					continue
				}
				if !ok || j.State == jobWaiting || j.State == "" {
					open++
					continue
				}
				r.State = j.State
				if j.Result != nil {
					r.Code, r.Reason, r.UPID, r.ExitStatus = j.Result.Code, j.Result.Reason, j.Result.UPID, j.Result.ExitStatus
				}
				fmt.Fprintf(errw, "  %s %s %d on %s: %s\n", r.Op, r.Kind, r.VMID, r.Host, jobFate(*r))
			}
		}
		if open == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			if err := context.Cause(ctx); errors.Is(err, context.DeadlineExceeded) {
				fmt.Fprintf(errw, "  %d job(s) still waiting after %v: `steward history` shows them when they run\n", open, opt.Wait)
				return nil
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

// jobFate describes a job's final state.
func jobFate(r SignResult) string {
	var b strings.Builder
	b.WriteString(r.State)
	if r.Code != "" {
		fmt.Fprintf(&b, " (%s)", r.Code)
	}
	if r.Reason != "" {
		b.WriteString(": " + r.Reason)
	}
	if r.UPID != "" {
		b.WriteString(", task " + r.UPID)
	}
	if r.ExitStatus != "" {
		b.WriteString(", exit status " + r.ExitStatus)
	}
	return b.String()
}
