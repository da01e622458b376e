package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/alert"
	"github.com/steward-pve/steward/internal/atomicfile"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/postgres"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/safefile"
)

func init() { register(newHubCmd) }

type hubFlags struct {
	dataDir      string
	store        string
	listen       string
	tlsCert      string
	tlsKey       string
	insecureHTTP bool
	pollInterval time.Duration
	reportBudget float64
	joinTTL      time.Duration
	eventAge     time.Duration
	eventKeep    int
	notifyConfig string
	notifyLease  time.Duration
	sessionTTL   time.Duration
	verbose      bool
}

// Files in the hub's data directory.
const (
	hubDBFile   = "hub.db"
	hubCertFile = "tls.crt"
	hubKeyFile  = "tls.key"
	// hubAdminOperator names the operator token made on first start.
	hubAdminOperator = "admin"
	// hubAdminTokenFile, in --data-dir, holds the first operator token
	// (0600): the hub's output ends in the systemd journal, which is no
	// place for a secret.
	hubAdminTokenFile = "admin-token"
)

func newHubCmd(stdout, stderr io.Writer) *cobra.Command {
	var f hubFlags
	cmd := &cobra.Command{
		Use:   "hub",
		Short: "Run the hub: hosts, desired state, reports and signed jobs for the fleet",
		Long: `hub serves the agent and operator API over HTTPS from one SQLite database in
--data-dir. On first start it creates the database, a self-signed TLS
certificate (kept in the data directory, so its fingerprint stays the same)
and an operator token named "admin", which it writes to DIR/admin-token
(mode 0600) and names there: store it, then delete the file. It prints the certificate's SHA-256 fingerprint (as PVE does) on every start,
for agents to pin.

With --store postgres://USER@HOST/DB several hub replicas share one
PostgreSQL database behind a load balancer. Each replica needs the same
URL and the same TLS certificate (--tls-cert/--tls-key, or tls.crt and
tls.key copied into each --data-dir); nothing else is kept on a replica.
The "admin" token is made once, by the first replica to start, which
alone writes it (to its --data-dir; a replica without --data-dir prints it
only to a terminal, and otherwise leaves it to a replica that has one). Prefer STEWARD_STORE, PGPASSWORD or ~/.pgpass to a
password on the command line.

Every flag can also be set as STEWARD_<FLAG> in the environment or as a
key of the YAML file named by --config (for example "listen: 0.0.0.0:8440"
and "poll-interval: 2m"); a flag wins over the environment, which wins
over the file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runHub(cmd.Context(), f, stdout, stderr)
		},
	}
	cmd.AddCommand(newHubMigrateCmd(stdout, stderr), newHubBackupCmd(stdout, stderr))
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the hub's SQLite database and TLS files (created 0700; required unless --store is PostgreSQL)")
	fl.StringVar(&f.store, "store", "", "where the hub keeps its state: empty or \"sqlite\" for DIR/hub.db in --data-dir, or a postgres:// URL shared by hub replicas")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8440", "address to listen on")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate file (default: a self-signed one in --data-dir)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM private key file for --tls-cert")
	fl.BoolVar(&f.insecureHTTP, "insecure-http", false, "serve plain HTTP (development only; refused unless --listen is a loopback address)")
	fl.DurationVar(&f.pollInterval, "poll-interval", hub.DefaultPollInterval, "base report interval the hub tells agents (stretched past --report-budget)")
	fl.Float64Var(&f.reportBudget, "report-budget", hub.DefaultReportBudget, "reports per second the whole fleet may send: the interval becomes max(--poll-interval, hosts / budget); 0 never stretches")
	fl.DurationVar(&f.eventAge, "event-retention", hub.DefaultEventRetention, "how long fleet events are kept")
	fl.IntVar(&f.eventKeep, "event-keep", hub.DefaultEventKeep, "most fleet events kept (the oldest go first)")
	fl.StringVar(&f.notifyConfig, "notify-config", "", "YAML file of notification sinks and rules (webhook, slack, ntfy, smtp; see the README); empty: no notifications")
	fl.DurationVar(&f.notifyLease, "notify-lease", alert.DefaultLease, "how long a hub holds a notification it is sending: a replica that dies mid-send leaves it to the others after this long (a send is cut off at half of it)")
	fl.DurationVar(&f.joinTTL, "join-token-ttl", hub.DefaultJoinTokenTTL, "how long a join token stays valid")
	fl.DurationVar(&f.sessionTTL, "session-ttl", hub.DefaultSessionTTL, "how long a dashboard login lasts before the operator logs in again")
	fl.BoolVar(&f.verbose, "verbose", false, "log every request to stderr")
	addConfigFlag(cmd)
	return cmd
}

func runHub(ctx context.Context, f hubFlags, stdout, stderr io.Writer) error {
	pg, err := hubStoreKind(f.store)
	if err != nil {
		return err
	}
	if f.dataDir == "" && !pg {
		return &UsageError{Err: errors.New("hub: --data-dir is required (where the hub keeps its database and TLS files)")}
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return &UsageError{Err: errors.New("hub: --tls-cert and --tls-key go together")}
	}
	if f.insecureHTTP && f.tlsCert != "" {
		return &UsageError{Err: errors.New("hub: --insecure-http and --tls-cert exclude each other")}
	}
	if pg && f.dataDir == "" && f.tlsCert == "" && !f.insecureHTTP {
		return &UsageError{Err: errors.New("hub: with --store postgres://… give every replica the same certificate: --tls-cert and --tls-key, or --data-dir holding tls.crt and tls.key (created there if missing; copy them to the other replicas)")}
	}
	if f.pollInterval < time.Second {
		return &UsageError{Err: fmt.Errorf("hub: --poll-interval %v is shorter than 1s", f.pollInterval)}
	}
	if f.reportBudget < 0 {
		return &UsageError{Err: fmt.Errorf("hub: --report-budget %v is negative (0 means never stretch the interval)", f.reportBudget)}
	}
	if f.eventAge < time.Hour || f.eventKeep < 1 {
		return &UsageError{Err: fmt.Errorf("hub: --event-retention (%v) must be at least 1h and --event-keep (%d) at least 1", f.eventAge, f.eventKeep)}
	}
	if f.joinTTL < time.Minute {
		return &UsageError{Err: fmt.Errorf("hub: --join-token-ttl %v is shorter than 1m", f.joinTTL)}
	}
	if f.notifyLease < 2*time.Second || f.notifyLease > time.Hour {
		return &UsageError{Err: fmt.Errorf("hub: --notify-lease %v is outside 2s..1h", f.notifyLease)}
	}
	if f.sessionTTL < time.Minute || f.sessionTTL > hub.MaxSessionTTL {
		return &UsageError{Err: fmt.Errorf("hub: --session-ttl %v is outside 1m..%v", f.sessionTTL, hub.MaxSessionTTL)}
	}
	if f.insecureHTTP {
		host, _, err := net.SplitHostPort(f.listen)
		ip := net.ParseIP(host)
		if err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			return &UsageError{Err: fmt.Errorf("hub: --insecure-http serves tokens in clear text, so only on a loopback address; --listen is %q", f.listen)}
		}
	}
	if f.dataDir != "" {
		if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
			return fmt.Errorf("hub: creating --data-dir: %w", err)
		}
	}
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	notify, err := loadNotify(f.notifyConfig)
	if err != nil {
		return err
	}
	var st store.Store
	budget := f.reportBudget
	if budget == 0 {
		budget = -1 // hub.Options: < 0 never stretches
	}
	opt := hub.Options{Logger: log, PollInterval: f.pollInterval, ReportBudget: budget, JoinTokenTTL: f.joinTTL,
		EventRetention: f.eventAge, EventKeep: f.eventKeep, SessionTTL: f.sessionTTL}
	if pg {
		ps, err := postgres.Open(ctx, f.store, postgres.Options{})
		if err != nil {
			return fmt.Errorf("hub: %w", err)
		}
		st, opt.Notifier = ps, ps.Notifier()
		if err := ps.Writable(ctx); err != nil {
			// Serve all the same: reads work, /readyz fails, writes
			// answer why (a rolling upgrade in progress).
			log.Error("this replica refuses writes", "err", err)
		}
	} else {
		ss, err := sqlite.Open(ctx, filepath.Join(f.dataDir, hubDBFile), sqlite.Options{})
		if err != nil {
			return fmt.Errorf("hub: %w", err)
		}
		st = ss
	}
	defer st.Close()
	if notify != nil {
		d := alert.NewDispatcher(notify.cfg, notify.sinks, st, alert.DispatcherOptions{Logger: log, Lease: f.notifyLease})
		opt.Alerts = d
		dctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() { defer close(done); d.Run(dctx) }()
		defer func() { stop(); <-done }() // before the store closes
	}
	opTok, err := firstOperatorTo(ctx, st, f.dataDir, isTerminal(stdout), log)
	if err != nil {
		return err
	}

	var cert *tls.Certificate
	if !f.insecureHTTP {
		certFile, keyFile := f.tlsCert, f.tlsKey
		if certFile == "" {
			certFile, keyFile = filepath.Join(f.dataDir, hubCertFile), filepath.Join(f.dataDir, hubKeyFile)
			if err := ensureSelfSigned(certFile, keyFile); err != nil {
				return err
			}
		}
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("hub: loading the TLS certificate %s and key %s: %w", certFile, keyFile, err)
		}
		cert = &c
	}

	if a := hubPprofAddr(); a != "" {
		addr, stop, err := startHubPprof(a, log)
		if err != nil {
			return err
		}
		defer stop()
		fmt.Fprintf(stdout, "Profiling:   http://%s/debug/pprof/ (%s is set: for benchmarks only)\n", addr, HubPprofEnv)
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("hub: listen on %s: %w", f.listen, err)
	}
	h := hub.New(st, opt)
	srv := h.HTTPServer(cert)
	srv.BaseContext = func(net.Listener) context.Context { return context.WithoutCancel(ctx) }
	if cert != nil {
		ln = tls.NewListener(ln, srv.TLSConfig)
		fmt.Fprintf(stdout, "URL:         https://%s\nFingerprint: %s\nDashboard:   https://%s/ui/ (log in with an operator token)\n", ln.Addr(), pve.CertFingerprint(cert.Certificate[0]), ln.Addr())
	} else {
		fmt.Fprintf(stdout, "URL:         http://%s (plain HTTP: development only)\nDashboard:   http://%s/ui/ (log in with an operator token)\n", ln.Addr(), ln.Addr())
	}
	if pg {
		fmt.Fprintf(stdout, "Store:       PostgreSQL %s\n", postgres.Redact(f.store))
	}
	switch {
	case opTok.file != "":
		fmt.Fprintf(stdout, "Operator token (%q): written to %s (0600; the hub keeps only its hash): store it, then delete the file\n", hubAdminOperator, opTok.file)
	case opTok.token != "":
		fmt.Fprintf(stdout, "Operator token (%q, shown only now; the hub keeps only its hash):\n  %s\n", hubAdminOperator, opTok.token)
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		h.Close()
		return fmt.Errorf("hub: serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	// Answer the held long-polls first, so the drain below is quick.
	h.Shutdown()
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		_ = srv.Close()
	}
	<-errc
	h.Close() // writes the heartbeats held in memory before the store closes
	return nil
}

// hubStoreKind reads --store: false for SQLite in --data-dir, true for a
// PostgreSQL URL.
func hubStoreKind(v string) (bool, error) {
	switch {
	case v == "" || v == "sqlite":
		return false, nil
	case strings.HasPrefix(v, "postgres://") || strings.HasPrefix(v, "postgresql://"):
		return true, nil
	}
	return false, &UsageError{Err: errors.New(`hub: --store must be empty or "sqlite" (the database in --data-dir) or a postgres://USER@HOST:PORT/DB URL`)}
}

// firstToken is where the first operator token went: the file holding it,
// or the token itself to print on a terminal (both empty: none was made).
type firstToken struct{ file, token string }

// firstOperatorTo makes the first operator token when the hub has none
// and puts it where only its operator reads it: DIR/admin-token (0600,
// written before the token exists in the store, so a token is never made
// that nobody can read), or, without a data directory, the terminal. A
// hub with neither (a PostgreSQL replica under systemd without
// --data-dir) makes no token and logs how to get one; a replica with a
// data directory makes it.
func firstOperatorTo(ctx context.Context, st store.Store, dataDir string, terminal bool, log *slog.Logger) (firstToken, error) {
	if dataDir == "" {
		if !terminal {
			ops, err := st.Operators(ctx)
			if err != nil {
				return firstToken{}, fmt.Errorf("hub: %w", err)
			}
			if len(ops) == 0 {
				log.Error(`the hub has no operator token and makes none here: its output is no terminal and there is no --data-dir to write DIR/` + hubAdminTokenFile + ` to; start one replica with --data-dir, or once from a terminal`)
			}
			return firstToken{}, nil
		}
		tok, err := firstOperator(ctx, st)
		return firstToken{token: tok}, err
	}
	path := filepath.Join(dataDir, hubAdminTokenFile)
	tok, err := firstOperatorWith(ctx, st, func(tok string) error {
		if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
			return fmt.Errorf("hub: writing the first operator token to %s: %w", path, err)
		}
		return nil
	}, func() { os.Remove(path) })
	if err != nil || tok == "" {
		return firstToken{}, err
	}
	return firstToken{file: path}, nil
}

// firstOperator creates the "admin" operator token when the hub has no
// operator yet and returns it ("" when operators exist). Of replicas
// starting together on one database exactly one creates it (the name is
// unique); the others return "".
func firstOperator(ctx context.Context, st store.Store) (string, error) {
	return firstOperatorWith(ctx, st, nil, nil)
}

// firstOperatorWith is firstOperator with keep, when set, run on the new
// token before the store holds it (an error stops there), and undo run
// when the store then does not take it.
func firstOperatorWith(ctx context.Context, st store.Store, keep func(tok string) error, undo func()) (string, error) {
	ops, err := st.Operators(ctx)
	if err != nil {
		return "", fmt.Errorf("hub: %w", err)
	}
	if len(ops) > 0 {
		return "", nil
	}
	tok := hub.NewToken("stwo_")
	if keep != nil {
		if err := keep(tok); err != nil {
			return "", err
		}
	}
	err = st.CreateOperator(ctx, hubAdminOperator, store.HashToken(tok))
	if err != nil && undo != nil {
		undo()
	}
	if errors.Is(err, store.ErrExists) {
		return "", nil // another replica made it a moment ago
	} else if err != nil {
		return "", fmt.Errorf("hub: creating the first operator token: %w", err)
	}
	return tok, nil
}

// ensureSelfSigned creates a self-signed ECDSA P-256 certificate and its
// key (0600) unless both files exist. Its SANs are localhost, the loopback
// addresses and the machine's host name.
func ensureSelfSigned(certFile, keyFile string) error {
	_, errC := os.Stat(certFile)
	_, errK := os.Stat(keyFile)
	switch {
	case errC == nil && errK == nil:
		return nil
	case errC == nil || errK == nil:
		return fmt.Errorf("hub: only one of %s and %s exists; restore the other or remove both to make a new certificate (agents pinned to the old fingerprint must then be told the new one)", certFile, keyFile)
	case !errors.Is(errC, fs.ErrNotExist) || !errors.Is(errK, fs.ErrNotExist):
		return fmt.Errorf("hub: reading the TLS files: %w", errors.Join(errC, errK))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("hub: generating a TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return fmt.Errorf("hub: generating a certificate serial: %w", err)
	}
	names := []string{"localhost"}
	if hn, err := os.Hostname(); err == nil && hn != "" && hn != "localhost" {
		names = append(names, hn)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[len(names)-1], Organization: []string{"steward hub"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              names,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("hub: creating the certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("hub: encoding the TLS key: %w", err)
	}
	if err := atomicfile.Write(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return fmt.Errorf("hub: writing %s: %w", keyFile, err)
	}
	if err := atomicfile.Write(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("hub: writing %s: %w", certFile, err)
	}
	return nil
}

type notifySetup struct {
	cfg   *alert.Config
	sinks map[string]alert.Sink
}

// loadNotify reads --notify-config and builds its sinks (reading their
// secrets); nil when the flag is empty.
func loadNotify(path string) (*notifySetup, error) {
	if path == "" {
		return nil, nil
	}
	b, err := safefile.ReadFile(path, alert.MaxConfigSize)
	if err != nil {
		return nil, &UsageError{Err: fmt.Errorf("hub: --notify-config: %w", err)}
	}
	cfg, err := alert.Parse(b)
	if err != nil {
		return nil, &UsageError{Err: fmt.Errorf("hub: --notify-config %s: %w", path, err)}
	}
	sinks, err := alert.Build(cfg, alert.Options{})
	if err != nil {
		return nil, &UsageError{Err: fmt.Errorf("hub: --notify-config %s: %w", path, err)}
	}
	return &notifySetup{cfg: cfg, sinks: sinks}, nil
}
