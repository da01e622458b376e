package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	_ "embed"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/steward-pve/steward/internal/agent"
	"github.com/steward-pve/steward/internal/allowedsigners"
	"github.com/steward-pve/steward/internal/atomicfile"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/safefile"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/tlspin"
)

func init() { register(newUpCmd) }

// upFleet is examples/fleet.yaml, embedded so that `steward up` works
// outside a checkout (a test keeps the two equal).
//
//go:embed up_fleet.yaml
var upFleet []byte

// Names `steward up` uses.
const (
	upHost       = "pve" // the simulator's node and the host id
	upContext    = "steward-up"
	upStateFile  = "up.json"
	upGuestsFile = "sim-guests.json"
	upKeyFile    = "demo_key"
)

type upFlags struct {
	dataDir string
	file    string
	timeout time.Duration
}

func newUpCmd(stdout, stderr io.Writer) *cobra.Command {
	var f upFlags
	cmd := &cobra.Command{
		Use:   "up [--data-dir DIR] [-f FILE]",
		Short: "Run the whole system on this machine: a simulated Proxmox host, a hub, an agent and a logged-in CLI",
		Long: `up starts, in this one process, a simulator of a Proxmox VE node with sample guests, a hub
on embedded SQLite and an agent enrolled with both; logs the CLI in (context "` + upContext + `" in the
operator config file, made current); applies the desired state in -f (default
examples/fleet.yaml when it exists here, else a copy written to the data directory);
shows the guests converging; and prints what to try next. It keeps running, showing each
guest's phase as it changes, until interrupted (Ctrl-C), then stops everything.

Everything lives in --data-dir (default $XDG_STATE_HOME/steward/up, i.e.
~/.local/state/steward/up): the hub's database and certificate, the agent's state, the
simulated guests (saved at exit) and a demo signing key (demo_key) the agent trusts for
destructive operations. A second up on the same directory resumes where it stopped.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfgPath, err := configPath(cmd)
			if err != nil {
				return err
			}
			return runUp(cmd.Context(), f, cfgPath, stdout, stderr)
		},
	}
	cmd.Flags().StringVar(&f.dataDir, "data-dir", "", "where everything is kept (default $XDG_STATE_HOME/steward/up)")
	cmd.Flags().StringVarP(&f.file, "file", "f", "", "desired state to apply (default examples/fleet.yaml if it exists, else DATA-DIR/fleet.yaml)")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 2*time.Minute, "how long to wait for the first convergence")
	addLoginFileFlag(cmd, "operator login file to log in")
	return cmd
}

// upState is what up keeps between runs (0600: it holds tokens).
type upState struct {
	SimToken      string `json:"sim_token"`
	HubAddr       string `json:"hub_addr"`
	OperatorToken string `json:"operator_token"`
}

// defaultUpDir is $XDG_STATE_HOME/steward/up, or ~/.local/state/steward/up.
func defaultUpDir() (string, error) {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "steward", "up"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("up: no home directory for the default --data-dir (%v): give --data-dir", err)
	}
	return filepath.Join(home, ".local", "state", "steward", "up"), nil
}

// upGuests are the sample guests of a first up.
func upGuests() []sim.GuestSpec {
	return []sim.GuestSpec{
		{VMID: 101, Kind: guest.QEMU, Name: "web", Running: true, Config: map[string]string{"cores": "2", "memory": "2048",
			"scsi0": "local-lvm:vm-101-disk-0,size=32G", "net0": "virtio=BC:24:11:00:01:01,bridge=vmbr0", "ostype": "l26"}},
		{VMID: 102, Kind: guest.QEMU, Name: "db", Config: map[string]string{"cores": "2", "memory": "2048",
			"scsi0": "local-lvm:vm-102-disk-0,size=32G", "scsi1": "local-lvm:vm-102-disk-1,size=64G", "net0": "virtio=BC:24:11:00:01:02,bridge=vmbr0", "ostype": "l26"}},
		{VMID: 103, Kind: guest.LXC, Name: "cache", Config: map[string]string{"cores": "1", "memory": "512",
			"rootfs": "local-lvm:subvol-103-disk-0,size=8G", "net0": "name=eth0,bridge=vmbr0,ip=dhcp", "ostype": "debian", "unprivileged": "1"}},
		{VMID: 104, Kind: guest.LXC, Name: "scratch", Config: map[string]string{"cores": "1", "memory": "256",
			"rootfs": "local-lvm:subvol-104-disk-0,size=4G", "ostype": "debian", "unprivileged": "1"}},
	}
}

func runUp(ctx context.Context, f upFlags, cfgPath string, stdout, stderr io.Writer) error {
	dir := f.dataDir
	if dir == "" {
		var err error
		if dir, err = defaultUpDir(); err != nil {
			return err
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("up: --data-dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("up: creating %s: %w", dir, err)
	}
	unlock, err := agent.LockDir(dir)
	if err != nil {
		return fmt.Errorf("up: %w (is another steward up using %s?)", err, dir)
	}
	defer unlock()
	logFile, err := os.OpenFile(filepath.Join(dir, "up.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	defer logFile.Close()
	log := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo}))

	var st upState
	resume := false
	if b, err := safefile.ReadFile(filepath.Join(dir, upStateFile), 1<<16); err == nil {
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("up: %s: %w (remove the directory to start afresh)", filepath.Join(dir, upStateFile), err)
		}
		resume = true
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("up: %w", err)
	}
	if resume {
		fmt.Fprintf(stdout, "Resuming in %s\n", dir)
	} else {
		fmt.Fprintf(stdout, "Starting afresh in %s\n", dir)
	}

	// Every part runs under one context; Ctrl-C cancels it and the parts
	// are stopped in reverse order below.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var parts []func()
	defer func() {
		for i := len(parts) - 1; i >= 0; i-- {
			parts[i]()
		}
	}()

	// 1. The simulated Proxmox node.
	s, err := sim.New(sim.Options{Node: upHost, Token: st.SimToken, TaskDuration: 300 * time.Millisecond, Logger: log})
	if err != nil {
		return fmt.Errorf("up: simulator: %w", err)
	}
	st.SimToken = s.Token()
	guests := upGuests()
	if resume {
		if b, err := safefile.ReadFile(filepath.Join(dir, upGuestsFile), 16<<20); err == nil {
			guests = nil
			if err := json.Unmarshal(b, &guests); err != nil {
				s.Close()
				return fmt.Errorf("up: %s: %w", filepath.Join(dir, upGuestsFile), err)
			}
		}
	}
	for _, g := range guests {
		if err := s.AddGuest(g); err != nil {
			s.Close()
			return fmt.Errorf("up: simulator guest %d: %w", g.VMID, err)
		}
	}
	simLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.Close()
		return fmt.Errorf("up: simulator: %w", err)
	}
	simURL := "https://" + simLn.Addr().String()
	simCtx, simStop := context.WithCancel(context.Background())
	simDone := make(chan error, 1)
	go func() { simDone <- sim.Serve(simCtx, s, simLn) }()
	tok, err := pve.ParseToken(s.Token())
	if err != nil {
		simStop()
		return fmt.Errorf("up: %w", err)
	}
	pc, err := pve.New(pve.Options{URL: simURL, Token: tok, Fingerprint: s.Fingerprint()})
	if err != nil {
		simStop()
		return fmt.Errorf("up: %w", err)
	}
	parts = append(parts, func() {
		saveCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := saveSimGuests(saveCtx, s, pc, filepath.Join(dir, upGuestsFile)); err != nil {
			fmt.Fprintf(stderr, "up: saving the simulated guests: %v (the next up starts from the samples)\n", err)
		}
		simStop()
		<-simDone
		s.Close()
	})
	fmt.Fprintf(stdout, "  simulator  %s (node %s)\n", simURL, upHost)

	// 2. The hub.
	hubDir := filepath.Join(dir, "hub")
	if err := os.MkdirAll(hubDir, 0o700); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	hst, err := sqlite.Open(ctx, filepath.Join(hubDir, hubDBFile), sqlite.Options{})
	if err != nil {
		return fmt.Errorf("up: hub: %w", err)
	}
	parts = append(parts, func() { hst.Close() })
	if st.OperatorToken == "" {
		st.OperatorToken = hub.NewToken("stwo_")
		if err := hst.CreateOperator(ctx, upContext, store.HashToken(st.OperatorToken)); err != nil {
			return fmt.Errorf("up: hub: the operator token: %w", err)
		}
	}
	certFile, keyFile := filepath.Join(hubDir, hubCertFile), filepath.Join(hubDir, hubKeyFile)
	if err := ensureSelfSigned(certFile, keyFile); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("up: hub certificate: %w", err)
	}
	hubLn, err := listenAgain(st.HubAddr)
	if err != nil {
		return fmt.Errorf("up: hub: %w", err)
	}
	st.HubAddr = hubLn.Addr().String()
	hubURL, hubFP := "https://"+st.HubAddr, tlspin.Of(cert.Certificate[0])
	hs := hub.New(hst, hub.Options{Logger: log, PollInterval: agent.MinHubInterval})
	web := hs.HTTPServer(&cert)
	webDone := make(chan error, 1)
	go func() { webDone <- web.Serve(tls.NewListener(hubLn, web.TLSConfig)) }()
	parts = append(parts, func() {
		hs.Shutdown()
		shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if web.Shutdown(shutCtx) != nil {
			web.Close()
		}
		<-webDone
	})
	fmt.Fprintf(stdout, "  hub        %s (fingerprint %s)\n", hubURL, hubFP)
	fmt.Fprintf(stdout, "  dashboard  %s/ui/ (self-signed: the browser asks you to accept the certificate above; log in with operator_token from %s)\n",
		hubURL, filepath.Join(dir, upStateFile))
	if err := atomicfile.Write(filepath.Join(dir, upStateFile), mustJSON(st), 0o600); err != nil {
		return fmt.Errorf("up: %w", err)
	}

	// 3. The CLI, logged in.
	op, err := hubclient.New(hubclient.Options{URL: hubURL, Fingerprint: hubFP, Token: st.OperatorToken, UserAgent: "steward-up"})
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if err := upLogin(cfgPath, hubURL, hubFP, st.OperatorToken); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "  CLI        logged in as context %q in %s\n", upContext, cfgPath)

	// 4. The agent: a demo key it trusts for signed operations.
	keyPath := filepath.Join(dir, upKeyFile)
	signers, err := demoKey(keyPath)
	if err != nil {
		return err
	}
	agentDir := filepath.Join(dir, "agent")
	if err := os.MkdirAll(agentDir, 0o700); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	join := ""
	if e, _ := agent.LoadEnrollment(agentDir); e == nil {
		var jt struct {
			JoinToken string `json:"join_token"`
		}
		if err := op.JSON(ctx, http.MethodPost, "/v1/hosts/"+upHost+"/join-token", nil, nil, &jt); err != nil {
			return fmt.Errorf("up: a join token for the agent: %w", err)
		}
		join = jt.JoinToken
	}
	hc, e, err := agent.Connect(ctx, agent.ConnectOptions{StateDir: agentDir, URL: hubURL, Fingerprint: hubFP, JoinToken: join, Logger: log})
	if err != nil {
		return fmt.Errorf("up: agent: %w", err)
	}
	hb, err := agent.NewHub(agent.HubOptions{Client: hc, Host: e.Host, AgentVersion: agentVersion(), Logger: log})
	if err != nil {
		return fmt.Errorf("up: agent: %w", err)
	}
	a, err := agent.New(agent.Config{Node: upHost, PVE: pc, TaskUser: tok.ID, StateDir: agentDir, Hub: hb, Signers: signers,
		Interval: agent.MinHubInterval, ShutdownTimeout: 10 * time.Second,
		TaskWait: pve.WaitOptions{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond}, Logger: log})
	if err != nil {
		return fmt.Errorf("up: agent: %w", err)
	}
	agentCtx, agentStop := context.WithCancel(context.Background())
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(agentCtx) }()
	parts = append(parts, func() {
		agentStop()
		if err := <-agentDone; err != nil {
			fmt.Fprintf(stderr, "up: agent: %v\n", err)
		}
	})
	fmt.Fprintf(stdout, "  agent      host %q, state in %s, log in %s\n", e.Host, agentDir, filepath.Join(dir, "up.log"))

	// 5. Desired state, applied as an operator would.
	file := f.file
	if file == "" {
		file = filepath.Join("examples", "fleet.yaml")
		if _, err := os.Stat(file); err != nil {
			file = filepath.Join(dir, "fleet.yaml")
			if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
				if err := atomicfile.Write(file, upFleet, 0o644); err != nil {
					return fmt.Errorf("up: %w", err)
				}
			}
		}
	}
	// Apply once the agent has reported, so the diff shows its plan.
	for {
		if v, err := getHost(ctx, op, upHost); err == nil && v.Report != nil {
			break
		}
		select {
		case <-ctx.Done():
			return upStopped(stdout, dir)
		case <-time.After(200 * time.Millisecond):
		}
	}
	fmt.Fprintf(stdout, "\n$ steward apply -f %s --wait\n", file)
	applyErr := RunIO(ctx, []string{"apply", "-f", file, "--wait", "--timeout", f.timeout.String(), "--login-file", cfgPath}, strings.NewReader(""), stdout, stderr)
	if ctx.Err() != nil {
		return upStopped(stdout, dir)
	}
	if applyErr != nil && !Silent(applyErr) {
		fmt.Fprintf(stdout, "(apply: %v)\n", applyErr)
	}

	fmt.Fprintf(stdout, `
steward is up. Try, in another shell ("go run ./cmd/steward" for "steward" in a checkout):

  steward status                  # the fleet at a glance
  steward hosts show %[1]s          # every guest: phase, drift, held actions
  # edit %[2]s, then see the diff, store it and follow convergence:
  steward apply -f %[2]s --wait
  # a destructive change: give guest 102 a new disk in %[2]s,
  #   scsi1: "local-lvm:vm-102-disk-9,size=64G"
  # apply it (the agent holds it for a signature), then review and sign it:
  steward sign --key %[3]s
  steward import %[1]s              # desired state from what the host reports

This shell shows each guest's phase as it changes. Ctrl-C stops everything;
steward up --data-dir %[4]s resumes.
`, upHost, file, keyPath, dir)

	watchPhases(ctx, op, stdout)
	return upStopped(stdout, dir)
}

func upStopped(w io.Writer, dir string) error {
	fmt.Fprintf(w, "\nStopping... (steward up --data-dir %s resumes)\n", dir)
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic("up: encoding: " + err.Error()) // plain structs always encode
	}
	return append(b, '\n')
}

// listenAgain listens on addr (the hub's address last time, so the
// logged-in context stays right) when it is free, else on a new port.
func listenAgain(addr string) (net.Listener, error) {
	if addr != "" {
		if ln, err := net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

// upLogin stores the up context in the operator config and makes it
// current.
func upLogin(path, url, fp, token string) error {
	cfg, err := loadConfig(path)
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if cfg.Contexts == nil {
		cfg.Contexts = map[string]*opContext{}
	}
	cfg.Contexts[upContext] = &opContext{Hub: url, Fingerprint: fp, Token: token}
	cfg.Current = upContext
	if err := saveConfig(path, cfg); err != nil {
		return fmt.Errorf("up: logging the CLI in: %w", err)
	}
	return nil
}

// demoKey makes (once) an ed25519 OpenSSH key pair at path and path.pub
// and returns the allowed signers trusting it.
func demoKey(path string) (*allowedsigners.Set, error) {
	if _, err := os.Stat(path + ".pub"); errors.Is(err, os.ErrNotExist) {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("up: demo key: %w", err)
		}
		blk, err := ssh.MarshalPrivateKey(priv, "demo@steward-up")
		if err != nil {
			return nil, fmt.Errorf("up: demo key: %w", err)
		}
		sp, err := ssh.NewPublicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("up: demo key: %w", err)
		}
		if err := atomicfile.Write(path, pem.EncodeToMemory(blk), 0o600); err != nil {
			return nil, fmt.Errorf("up: demo key: %w", err)
		}
		line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " demo@steward-up\n"
		if err := atomicfile.Write(path+".pub", []byte(line), 0o644); err != nil {
			return nil, fmt.Errorf("up: demo key: %w", err)
		}
	}
	pub, err := safefile.ReadFile(path+".pub", 1<<16)
	if err != nil {
		return nil, fmt.Errorf("up: demo key: %w", err)
	}
	f := strings.Fields(string(pub))
	if len(f) < 2 {
		return nil, fmt.Errorf("up: demo key %s.pub is not an OpenSSH public key", path)
	}
	set, err := allowedsigners.Parse(strings.NewReader("demo@steward-up " + f[0] + " " + f[1] + "\n"))
	if err != nil {
		return nil, fmt.Errorf("up: demo key: %w", err)
	}
	return set, nil
}

// saveSimGuests writes every guest of the simulator (config as it is now,
// running or not) to path, for the next up.
func saveSimGuests(ctx context.Context, s *sim.Sim, pc *pve.Client, path string) error {
	var out []sim.GuestSpec
	for _, k := range []guest.Kind{guest.QEMU, guest.LXC} {
		list, err := pc.Guests(ctx, upHost, k)
		if err != nil {
			return err
		}
		for _, g := range list {
			snap, ok := s.Guest(g.VMID)
			if !ok || g.Template {
				continue
			}
			out = append(out, sim.GuestSpec{VMID: g.VMID, Kind: k, Running: snap.Status == "running", Config: snap.Config})
		}
	}
	return atomicfile.Write(path, mustJSON(out), 0o600)
}

// watchPhases prints each managed guest's phase as it changes, until ctx
// ends.
func watchPhases(ctx context.Context, c *hubclient.Client, w io.Writer) {
	seen := map[int]string{}
	first := true
	for {
		if v, err := getHost(ctx, c, upHost); err == nil {
			for _, g := range v.guests() {
				if !g.Managed {
					continue
				}
				if seen[g.VMID] != g.Phase {
					if !first {
						line := fmt.Sprintf("%s  %s %d: %s", time.Now().Format("15:04:05"), upHost, g.VMID, strings.ReplaceAll(g.Phase, "_", " "))
						if d := guestDetail(g, time.Now()); d != "" && g.Phase != "in_sync" {
							line += " (" + d + ")"
						}
						fmt.Fprintln(w, line)
					}
					seen[g.VMID] = g.Phase
				}
			}
			first = false
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
