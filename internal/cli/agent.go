package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/allowedsigners"
	"github.com/steward-pve/steward/internal/atomicfile"
	"github.com/steward-pve/steward/internal/backoff"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/desired/desiredfile"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/executor"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guestq"
	"github.com/steward-pve/steward/internal/inbox"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/nonce"
	"github.com/steward-pve/steward/internal/plan"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/safefile"
	"github.com/steward-pve/steward/internal/signedop"
)

func init() { register(newAgentCmd) }

// agentFlags are the flags of `steward agent`; the daemon keeps using the
// same ones once the hub exists.
type agentFlags struct {
	pveURL, tokenFile, fingerprint, caFile string
	insecure                               bool
	node, host, stateDir                   string
	desiredFile                            string
	desiredMaxBytes                        int64
	once, dryRun                           bool
	interval                               time.Duration
	allowedSigners, policyFile, jobsDir    string
	jobsRetention                          time.Duration
	concurrency                            int
	shutdownTimeout                        time.Duration
	notRunGrace                            time.Duration
	taskPoll, taskPollMax                  time.Duration
	timeouts                               executor.Timeouts
	logLevel                               string
}

func newAgentCmd(stdout, stderr io.Writer) *cobra.Command {
	var f agentFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Converge this Proxmox host's guests toward desired state",
		Long: `The agent reads the guests of the local PVE node, plans toward desired state,
runs benign changes, and holds destructive ones until operators sign them.

With --once it runs one tick and prints the plan, the results and each
guest's state after its actions ran; --dry-run prints only the plan. Without
--once it ticks every --interval until interrupted, logging one summary line
per tick.

Signed jobs are read from --signed-jobs (default <state-dir>/jobs). A job
that ran, or had run before, is reported once and moved to
<state-dir>/jobs/done/, kept there for --jobs-retention.

Exit status of --once: 0 nothing changed; 2 something changed or an action
waits for a signature; 1 an action failed, a guest is in error or a signed
job was rejected (or the tick itself failed); 64 a usage error. --dry-run
exits 0 unless it fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAgent(cmd.Context(), f, stdout, stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.pveURL, "pve-url", "https://127.0.0.1:8006", "PVE API base URL")
	fl.StringVar(&f.tokenFile, "pve-token-file", "", "file holding the PVE API token USER@REALM!TOKENID=SECRET (default: $STEWARD_PVE_TOKEN)")
	fl.StringVar(&f.fingerprint, "pve-fingerprint", "", "pin the PVE certificate's SHA-256 fingerprint, colon-hex as pvenode cert info shows it")
	fl.StringVar(&f.caFile, "pve-ca-file", "", "PEM CA bundle to verify PVE's certificate (e.g. /etc/pve/pve-root-ca.pem)")
	fl.BoolVar(&f.insecure, "pve-insecure-skip-verify", false, "DANGEROUS: do not verify PVE's TLS certificate")
	fl.StringVar(&f.node, "node", "", "PVE node name (required)")
	fl.StringVar(&f.host, "host", "", "host id in desired state (default: the node name)")
	fl.StringVar(&f.stateDir, "state-dir", "/var/lib/steward", "directory for the journal and nonce store")
	fl.StringVar(&f.desiredFile, "desired", "", "desired-state file (YAML or JSON); none means change nothing")
	fl.Int64Var(&f.desiredMaxBytes, "desired-max-bytes", desiredfile.DefaultMaxBytes, "largest desired-state file accepted, in bytes (the file is re-parsed only when it changes)")
	fl.BoolVar(&f.once, "once", false, "run one tick, print the plan and results, and exit")
	fl.BoolVar(&f.dryRun, "dry-run", false, "print the plan only; change nothing (implies --once)")
	fl.DurationVar(&f.interval, "interval", 30*time.Second, "time between ticks")
	fl.StringVar(&f.allowedSigners, "allowed-signers", "", "OpenSSH allowed_signers file of operators who may sign destructive ops (none: destructive ops never run)")
	fl.StringVar(&f.policyFile, "policy", "", "signing policy file (default: one operator signature for any destructive op)")
	fl.StringVar(&f.jobsDir, "signed-jobs", "", "directory of signed jobs: PAYLOAD.json with PAYLOAD.json.sig* signatures (default <state-dir>/jobs; must exist when set)")
	fl.DurationVar(&f.jobsRetention, "jobs-retention", inbox.DefaultRetention, "how long finished signed jobs are kept in <state-dir>/jobs/done/")
	fl.IntVar(&f.concurrency, "concurrency", 3, "mutations in flight toward PVE at once")
	fl.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 3*time.Minute, "graceful shutdown time before a guest is stopped")
	fl.DurationVar(&f.notRunGrace, "not-run-grace", engine.DefaultNotRunGrace, "how long after an interrupted signed op began the agent waits before taking no task and no effect in PVE as proof it never ran")
	fl.DurationVar(&f.taskPoll, "task-poll", 200*time.Millisecond, "first interval between polls of a running PVE task")
	fl.DurationVar(&f.taskPollMax, "task-poll-max", 2*time.Second, "longest interval between polls of a running PVE task")
	fl.DurationVar(&f.timeouts.Config, "timeout-config", 2*time.Minute, "time allowed for a config write")
	fl.DurationVar(&f.timeouts.Power, "timeout-power", 5*time.Minute, "time allowed for a start or stop (a shutdown also gets --shutdown-timeout)")
	fl.DurationVar(&f.timeouts.Disk, "timeout-disk", 30*time.Minute, "time allowed for resize, create, destroy and snapshot tasks")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

func runAgent(ctx context.Context, f agentFlags, stdout, stderr io.Writer) error {
	if f.node == "" {
		return &UsageError{Err: errors.New("--node is required (the PVE node name, see `hostname` on the PVE host)")}
	}
	if f.host == "" {
		f.host = f.node
	}
	if f.dryRun {
		f.once = true
	}
	if f.taskPoll <= 0 || f.taskPollMax < f.taskPoll {
		return &UsageError{Err: fmt.Errorf("--task-poll must be positive and at most --task-poll-max (got %s, %s)", f.taskPoll, f.taskPollMax)}
	}
	for name, d := range map[string]time.Duration{"--timeout-config": f.timeouts.Config, "--timeout-power": f.timeouts.Power, "--timeout-disk": f.timeouts.Disk, "--shutdown-timeout": f.shutdownTimeout} {
		if d <= 0 {
			return &UsageError{Err: fmt.Errorf("%s must be positive, got %s", name, d)}
		}
	}
	if f.desiredMaxBytes <= 0 {
		return &UsageError{Err: fmt.Errorf("--desired-max-bytes must be positive, got %d", f.desiredMaxBytes)}
	}
	if f.interval <= 0 {
		return &UsageError{Err: fmt.Errorf("--interval must be positive, got %s", f.interval)}
	}
	if f.jobsRetention <= 0 {
		return &UsageError{Err: fmt.Errorf("--jobs-retention must be positive, got %s", f.jobsRetention)}
	}
	defaultJobs := f.jobsDir == ""
	if defaultJobs {
		f.jobsDir = filepath.Join(f.stateDir, "jobs")
	} else if err := inbox.CheckDir("--signed-jobs", f.jobsDir); err != nil {
		return err
	}
	logger, err := newLogger(stderr, f.logLevel)
	if err != nil {
		return err
	}
	token, err := pve.LoadToken(f.tokenFile)
	if err != nil {
		return err
	}
	client, err := pve.New(pve.Options{URL: f.pveURL, Token: token, Fingerprint: f.fingerprint, CAFile: f.caFile,
		InsecureSkipVerify: f.insecure, Logger: logger})
	if err != nil {
		return err
	}
	provider := desired.Provider(desired.Empty{})
	if f.desiredFile != "" {
		provider = &desiredfile.File{Path: f.desiredFile, MaxBytes: f.desiredMaxBytes}
		if err := checkDesiredHost(ctx, provider, f.host, logger); err != nil {
			return err
		}
	} else {
		logger.Warn("no --desired file: no guest is managed; only signed jobs run")
	}

	g := &gate.Gate{Host: f.host, Logger: logger}
	eng := &engine.Engine{
		Host: f.host, Node: f.node, PVE: client, Gate: g, Logger: logger, TaskUser: token.ID,
		Exec: &executor.Executor{Client: client, Node: f.node, Logger: logger, Timeouts: f.timeouts,
			Wait: pve.WaitOptions{Initial: f.taskPoll, Max: f.taskPollMax}},
		Backoff:     backoff.NewTracker(backoff.Policy{Initial: 5 * time.Second, Max: 5 * time.Minute, Multiplier: 2, Jitter: 0.2}, time.Now, nil),
		Plan:        plan.Options{ShutdownTimeout: f.shutdownTimeout},
		NotRunGrace: f.notRunGrace,
	}
	jobsInbox := &inbox.Inbox{Dir: f.jobsDir, Logger: logger}
	if _, err := os.Stat(f.jobsDir); defaultJobs && f.dryRun && errors.Is(err, os.ErrNotExist) {
		jobsInbox.Dir = "" // a dry run creates nothing, not even the default inbox
	}
	if f.dryRun {
		doc, err := provider.Desired(ctx)
		if err != nil {
			return err
		}
		rep, err := eng.Tick(ctx, doc.ForHost(f.host), inbox.Jobs(jobsInbox.Read()), true)
		if err != nil {
			return err
		}
		fmt.Fprint(stdout, rep.Plan.Render())
		return nil
	}

	if err := os.MkdirAll(f.stateDir, 0o700); err != nil {
		return fmt.Errorf("agent: creating state directory: %w", err)
	}
	unlock, err := lockDir(f.stateDir)
	if err != nil {
		return err
	}
	defer unlock()
	j, err := journal.Open(filepath.Join(f.stateDir, "journal"), journal.Options{Logger: logger})
	if err != nil {
		return err
	}
	defer j.Close()
	if f.allowedSigners != "" {
		v, closeNonces, err := newVerifier(f, logger)
		if err != nil {
			return err
		}
		defer closeNonces()
		g.Verifier = v
	} else {
		logger.Warn("no --allowed-signers: destructive ops will never run on this host")
	}
	q := guestq.New(guestq.Options{Concurrency: f.concurrency, Logger: logger})
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		q.Close(cctx)
	}()
	eng.Journal, eng.Queue = j, q

	if err := eng.Recover(ctx); err != nil {
		if f.once {
			return err
		}
		if err := retryRecover(ctx, eng, f.interval, logger); err != nil {
			return err
		}
	}
	pendingDir := filepath.Join(f.stateDir, "pending")
	rememberPending(g, pendingDir)
	if defaultJobs {
		if err := os.MkdirAll(f.jobsDir, 0o700); err != nil {
			return fmt.Errorf("agent: creating the signed-jobs directory: %w", err)
		}
	}
	done := &inbox.Done{Dir: filepath.Join(f.stateDir, "jobs", "done"), Retention: f.jobsRetention, Logger: logger}
	for {
		rep, err := tick(ctx, eng, provider, jobsInbox, f)
		var moveErr error
		if err == nil {
			if perr := writePending(pendingDir, rep, logger); perr != nil {
				logger.Error("writing pending payloads", "dir", pendingDir, "err", perr)
			}
			moveErr = done.Settle(rep.Jobs)
			if _, perr := done.Prune(); perr != nil {
				logger.Warn("pruning finished signed jobs", "dir", done.Dir, "err", perr)
			}
		}
		if f.once {
			if err != nil {
				return err
			}
			printReport(stdout, rep, pendingDir)
			return onceStatus(rep, moveErr)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil // shutting down: not a failure
			}
			logger.Error("tick failed", "err", err)
		} else {
			logReport(logger, rep)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(f.interval):
		}
	}
}

// tick runs one reconcile tick. A bad entry in the jobs inbox never fails
// it (the inbox skips and reports it); a desired file that cannot be read
// does.
func tick(ctx context.Context, eng *engine.Engine, p desired.Provider, jobs *inbox.Inbox, f agentFlags) (engine.Report, error) {
	doc, err := p.Desired(ctx)
	if err != nil {
		return engine.Report{}, err
	}
	return eng.Tick(ctx, doc.ForHost(f.host), inbox.Jobs(jobs.Read()), false)
}

func retryRecover(ctx context.Context, eng *engine.Engine, every time.Duration, logger *slog.Logger) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
		err := eng.Recover(ctx)
		if err == nil {
			return nil
		}
		logger.Error("recovery failed; nothing will be changed until it succeeds", "err", err)
	}
}

func newVerifier(f agentFlags, logger *slog.Logger) (*signedop.Verifier, func(), error) {
	set, err := allowedsigners.ParseFile(f.allowedSigners)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: --allowed-signers: %w", err)
	}
	pol := signedop.DefaultPolicy()
	if f.policyFile != "" {
		if pol, err = signedop.ReadPolicyFile(f.policyFile); err != nil {
			return nil, nil, fmt.Errorf("agent: --policy: %w", err)
		}
	}
	ns, err := nonce.Open(filepath.Join(f.stateDir, "nonces"), nonce.Options{})
	if err != nil {
		return nil, nil, err
	}
	return &signedop.Verifier{Signers: set, Policy: pol, Nonces: ns}, func() { ns.Close() }, nil
}

// writePending keeps dir holding exactly the payloads waiting for a
// signature after this tick, one file each (mode 0600: a payload carries
// the action's parameters), named VMID-OP-NONCE.json, ready for
// `steward op sign`. Payloads are logged by file, never by content.
func writePending(dir string, rep engine.Report, logger *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, d := range rep.Pending {
		p, err := signedop.ParsePayload(d.Payload)
		if err != nil {
			continue
		}
		name := fmt.Sprintf("%d-%s-%s.json", p.VMID, p.Op, p.Nonce[:8])
		keep[name] = true
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); err == nil {
			continue
		}
		if err := atomicfile.Write(path, d.Payload, 0o600); err != nil {
			return err
		}
		logger.Info("destructive action waiting for a signature", "vmid", p.VMID, "op", p.Op, "reason", d.Reason, "payload_file", path)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !keep[e.Name()] && strings.HasSuffix(e.Name(), ".json") {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

// rememberPending gives the gate the payloads offered before this start,
// so a restart does not change what operators are asked to sign.
// Unreadable files are ignored: the next tick rewrites the directory.
func rememberPending(g *gate.Gate, dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	for _, name := range files {
		b, err := safefile.ReadFileNoFollow(name, signedop.MaxPayloadSize)
		if err != nil {
			continue
		}
		if p, err := signedop.ParsePayload(b); err == nil {
			g.Remember(p)
		}
	}
}

// lockDir takes an exclusive lock on dir so two agents never share a
// journal.
func lockDir(dir string) (func(), error) {
	fh, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := syscall.Flock(int(fh.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		fh.Close()
		return nil, fmt.Errorf("agent: state directory %s is in use by another steward agent (%w)", dir, err)
	}
	return func() { fh.Close() }, nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, &UsageError{Err: fmt.Errorf("--log-level: %w", err)}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
