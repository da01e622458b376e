package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/agent"
	"github.com/steward-pve/steward/internal/agentmetrics"
	"github.com/steward-pve/steward/internal/allowedsigners"
	"github.com/steward-pve/steward/internal/desired/desiredfile"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/executor"
	"github.com/steward-pve/steward/internal/inbox"
	"github.com/steward-pve/steward/internal/pve"
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
	// The hub: once enrolled (hub.json in the state directory) none of
	// these is needed; when given they override the enrollment's.
	hubURL, hubFingerprint, hubCAFile, joinToken string
	hostSet                                      bool // --host was given
	// metricsListen is --metrics-listen; metrics is built from it by
	// runAgent (nil: no metrics) and hooked into the PVE client, the hub,
	// the journal and the tick loop by agentConfig.
	metricsListen string
	metrics       *agentmetrics.Metrics
	// headroom is --headroom (engine.Engine.Headroom).
	headroom headroomFlag
}

func newAgentCmd(stdout, stderr io.Writer) *cobra.Command {
	f := agentFlags{headroom: headroomFlag{}}
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

With a hub: enroll once with --hub URL --hub-fingerprint FP (or --hub-ca-file)
--join-token T; <state-dir>/hub.json then holds what the agent needs, and
later runs take no hub flag. With hub replicas, list every replica's URL
(--hub URL1,URL2 or --hub repeated): the agent sticks to one while it answers
and moves to the next when it refuses connections, times out or answers 5xx,
keeping the desired generation it holds. A later --hub (or fingerprint/CA
flag) replaces what hub.json holds. The agent long-polls its desired state from the
hub (kept in <state-dir>/hub-state.json for when the hub is away), runs the
hub's signed jobs next to the local ones, reports every tick and ships its
journal as hash-chained receipts. --desired and a hub exclude each other.

steward agent freeze --state-dir DIR stops every change (the hub cannot lift
it) until steward agent unfreeze.

Exit status of --once: 0 nothing changed; 2 something changed or an action
waits for a signature; 1 an action failed, a guest is in error or a signed
job was rejected (or the tick itself failed); 64 a usage error. --dry-run
exits 0 unless it fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.hostSet = cmd.Flags().Changed("host")
			return runAgent(cmd.Context(), f, stdout, stderr)
		},
	}
	cmd.AddCommand(newAgentFreezeCmd(stdout), newAgentUnfreezeCmd(stdout))
	// Persistent: `steward agent check` reads the same flags (and
	// environment) as the agent it checks.
	fl := cmd.PersistentFlags()
	fl.StringVar(&f.pveURL, "pve-url", "https://127.0.0.1:8006", "PVE API base URL")
	fl.StringVar(&f.tokenFile, "pve-token-file", "", "file holding the PVE API token USER@REALM!TOKENID=SECRET (default: $STEWARD_PVE_TOKEN)")
	fl.StringVar(&f.fingerprint, "pve-fingerprint", "", "pin the PVE certificate's SHA-256 fingerprint, colon-hex as pvenode cert info shows it")
	fl.StringVar(&f.caFile, "pve-ca-file", "", "PEM CA bundle to verify PVE's certificate (e.g. /etc/pve/pve-root-ca.pem)")
	fl.BoolVar(&f.insecure, "pve-insecure-skip-verify", false, "DANGEROUS: do not verify PVE's TLS certificate")
	fl.StringVar(&f.node, "node", "", "PVE node name (required)")
	fl.StringVar(&f.host, "host", "", "host id in desired state (default: the node name)")
	fl.StringVar(&f.stateDir, "state-dir", "/var/lib/steward", "directory for the journal, nonce store, hub enrollment and freeze file")
	fl.StringVar(&f.desiredFile, "desired", "", "desired-state file (YAML or JSON); none means change nothing (not with a hub)")
	fl.Var(&urlList{s: &f.hubURL}, "hub", "hub URL, https://HOST:PORT; several hub replicas: repeat the flag or separate URLs with commas (the agent moves to the next when one fails); needed once, to enroll; saved in <state-dir>/hub.json, and given again it replaces the saved URLs")
	fl.StringVar(&f.hubFingerprint, "hub-fingerprint", "", "pin the hub's certificate SHA-256 fingerprint, as `steward hub` prints it")
	fl.StringVar(&f.hubCAFile, "hub-ca-file", "", "PEM CA bundle to verify the hub's certificate (instead of --hub-fingerprint)")
	fl.StringVar(&f.joinToken, "join-token", "", "one-time join token to enroll with the hub (an operator makes it); ignored once enrolled")
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
	fl.Var(f.headroom, "headroom", headroomUsage)
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.metricsListen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (default: off; not with --once)")
	cmd.AddCommand(newAgentCheckCmd(&f, stdout, stderr))
	return cmd
}

func runAgent(ctx context.Context, f agentFlags, stdout, stderr io.Writer) error {
	if f.node == "" {
		return &UsageError{Err: errors.New("--node is required (the PVE node name, see `hostname` on the PVE host)")}
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
	var metricsLn net.Listener
	if f.metricsListen != "" {
		if f.once {
			return &UsageError{Err: errors.New("--metrics-listen serves the daemon's metrics; it cannot be combined with --once or --dry-run")}
		}
		if metricsLn, err = agentmetrics.Listen(f.metricsListen); err != nil {
			return err
		}
		defer metricsLn.Close()
		f.metrics = agentmetrics.New()
	}
	cfg, err := agentConfig(ctx, f, defaultJobs, logger)
	if err != nil {
		return err
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	if f.metrics != nil {
		mctx, stop := context.WithCancel(ctx)
		served := make(chan error, 1)
		go func() { served <- f.metrics.Serve(mctx, metricsLn, logger) }()
		defer func() {
			stop()
			if err := <-served; err != nil {
				logger.Warn("metrics server", "err", err)
			}
		}()
		logger.Info("serving metrics", "url", "http://"+metricsLn.Addr().String()+"/metrics")
	}
	switch {
	case f.dryRun:
		rep, err := a.Plan(ctx)
		if err != nil {
			return err
		}
		fmt.Fprint(stdout, rep.Plan.Render())
		return nil
	case f.once:
		rep, err := a.Once(ctx)
		var settle *agent.SettleError
		if err != nil && !errors.As(err, &settle) {
			return err
		}
		printReport(stdout, rep, a.PendingDir())
		var moveErr error
		if settle != nil {
			moveErr = settle.Err
		}
		return onceStatus(rep, moveErr)
	}
	return a.Run(ctx)
}

// agentConfig turns the flags into the agent's Config: the PVE client,
// the desired-state source (checked once against the host id), the jobs
// inbox with its done/ directory, and the signers.
func agentConfig(ctx context.Context, f agentFlags, defaultJobs bool, logger *slog.Logger) (agent.Config, error) {
	token, err := pve.LoadToken(f.tokenFile)
	if err != nil {
		return agent.Config{}, err
	}
	if w := pve.TokenFileWarning(f.tokenFile); f.tokenFile != "" && w != "" {
		logger.Warn(w)
	}
	popts := pve.Options{URL: f.pveURL, Token: token, Fingerprint: f.fingerprint, CAFile: f.caFile,
		InsecureSkipVerify: f.insecure, Logger: logger}
	if f.metrics != nil {
		popts.Observe = f.metrics.ObservePVE
	}
	client, err := pve.New(popts)
	if err != nil {
		return agent.Config{}, err
	}
	hub, err := agentHub(ctx, f, logger)
	if err != nil {
		return agent.Config{}, err
	}
	if hub == nil && f.host == "" {
		f.host = f.node
	}
	cfg := agent.Config{
		Node: f.node, Host: f.host, Hub: hub, StateDir: f.stateDir, PVE: client, TaskUser: token.ID,
		Interval: f.interval, Concurrency: f.concurrency, ShutdownTimeout: f.shutdownTimeout, NotRunGrace: f.notRunGrace,
		TaskWait: pve.WaitOptions{Initial: f.taskPoll, Max: f.taskPollMax}, Timeouts: f.timeouts,
		Headroom: f.headroom, Logger: logger,
	}
	if f.metrics != nil {
		cfg.OnTick, cfg.JournalSync = f.metrics.ObserveTick, f.metrics.ObserveFsync
	}
	switch {
	case hub != nil:
		cfg.Host = "" // the enrolled host (Connect checked --host)
	case f.desiredFile != "":
		src := &desiredfile.File{Path: f.desiredFile, MaxBytes: f.desiredMaxBytes}
		if err := checkDesiredHost(ctx, src, f.host, logger); err != nil {
			return agent.Config{}, err
		}
		cfg.Desired = src
	default:
		logger.Warn("no --desired file: no guest is managed; only signed jobs run")
	}
	jobs := &agent.DirJobs{Inbox: &inbox.Inbox{Dir: f.jobsDir, Logger: logger}, Create: defaultJobs && !f.dryRun, Logger: logger,
		Done: &inbox.Done{Dir: filepath.Join(f.stateDir, "jobs", "done"), Retention: f.jobsRetention, Logger: logger}}
	if _, err := os.Stat(f.jobsDir); defaultJobs && f.dryRun && errors.Is(err, os.ErrNotExist) {
		jobs.Inbox.Dir = "" // a dry run creates nothing, not even the default inbox
	}
	cfg.Jobs = jobs
	if f.allowedSigners != "" {
		if cfg.Signers, err = allowedsigners.ParseFile(f.allowedSigners); err != nil {
			return agent.Config{}, fmt.Errorf("agent: --allowed-signers: %w", err)
		}
		cfg.Policy = signedop.DefaultPolicy()
		if f.policyFile != "" {
			if cfg.Policy, err = signedop.ReadPolicyFile(f.policyFile); err != nil {
				return agent.Config{}, fmt.Errorf("agent: --policy: %w", err)
			}
		}
	}
	return cfg, nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, &UsageError{Err: fmt.Errorf("--log-level: %w", err)}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// agentHub connects to the hub the state directory is enrolled with,
// enrolling first when --join-token is given; nil without a hub.
func agentHub(ctx context.Context, f agentFlags, logger *slog.Logger) (*agent.Hub, error) {
	if f.dryRun && f.joinToken != "" {
		if e, _ := agent.LoadEnrollment(f.stateDir); e == nil {
			return nil, &UsageError{Err: errors.New("--dry-run changes nothing, enrollment included: enroll without --dry-run first")}
		}
	}
	host := ""
	if f.hostSet {
		host = f.host
	}
	client, e, err := agent.Connect(ctx, agent.ConnectOptions{StateDir: f.stateDir, URL: f.hubURL, Fingerprint: f.hubFingerprint,
		CAFile: f.hubCAFile, JoinToken: f.joinToken, Host: host, Update: !f.dryRun, Logger: logger})
	if err != nil || client == nil {
		return nil, err
	}
	if f.desiredFile != "" {
		return nil, &UsageError{Err: fmt.Errorf("--desired and a hub exclude each other: this agent is enrolled with %s (%s), which serves its desired state", e.URL, filepath.Join(f.stateDir, agent.EnrollmentFile))}
	}
	ho := agent.HubOptions{Client: client, Host: e.Host, AgentVersion: agentVersion(), Logger: logger}
	if f.metrics != nil {
		ho.OnError = f.metrics.ObserveHubError
	}
	return agent.NewHub(ho)
}

// urlList is a flag of URLs that may be repeated or separated by commas;
// it keeps them as one comma-separated string (hubclient.ParseURLs
// checks them).
type urlList struct {
	s   *string
	set bool
}

func (l *urlList) String() string {
	if l.s == nil {
		return ""
	}
	return *l.s
}

func (l *urlList) Set(v string) error {
	if l.set && *l.s != "" {
		v = *l.s + "," + v
	}
	*l.s, l.set = v, true
	return nil
}

func (l *urlList) Type() string { return "URL[,URL...]" }
