package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/pgtest"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/tlspin"
)

// hubProc is one `steward hub` process.
type hubProc struct {
	url   string
	pprof string // http://ADDR of its profiles
	dir   string // its --data-dir, removed by stop
	cmd   *exec.Cmd
	done  chan struct{}
}

func (h *hubProc) pid() int { return h.cmd.Process.Pid }

func (h *hubProc) stop() {
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(30 * time.Second):
		h.cmd.Process.Kill()
		<-h.done
	}
	os.RemoveAll(h.dir)
}

// startSteward runs `steward hub` (the binary at exe) on a free loopback
// port with a fresh data directory (holding certDir's tls.crt and
// tls.key, if given, so replicas share one certificate), profiles on
// another free loopback port, and waits until it serves. storeURL empty
// is SQLite in the data directory.
func startSteward(exe, storeURL, certDir string) (*hubProc, string, error) {
	dir, err := os.MkdirTemp("", "hubload-hub-")
	if err != nil {
		return nil, "", err
	}
	if certDir != "" {
		for _, f := range []string{"tls.crt", "tls.key"} {
			b, err := os.ReadFile(filepath.Join(certDir, f))
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, f), b, 0o600)
			}
			if err != nil {
				os.RemoveAll(dir)
				return nil, "", err
			}
		}
	}
	args := []string{"hub", "--data-dir", dir, "--listen", "127.0.0.1:0"}
	if storeURL != "" {
		args = append(args, "--store", storeURL)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "STEWARD_HUB_PPROF=127.0.0.1:0")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, "", fmt.Errorf("starting %s hub: %w", exe, err)
	}
	h := &hubProc{dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(h.done) }()
	var fp string
	r := bufio.NewReader(out)
	for h.url == "" || fp == "" || h.pprof == "" {
		line, err := r.ReadString('\n')
		if err != nil {
			h.stop()
			return nil, "", fmt.Errorf("the hub did not start (its output ended before it named its URL, fingerprint and profile address): %w", err)
		}
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "URL:":
			h.url = f[1]
		case len(f) >= 2 && f[0] == "Fingerprint:":
			fp = f[1]
		case len(f) >= 2 && f[0] == "Profiling:":
			h.pprof = strings.TrimSuffix(f[1], "/debug/pprof/")
		}
	}
	go io.Copy(io.Discard, r)
	return h, fp, nil
}

// buildSteward builds ./cmd/steward of this module into dir.
func buildSteward(dir string) (string, error) {
	mod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module (go env GOMOD): %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(mod)))
	exe := filepath.Join(dir, "steward")
	cmd := exec.Command("go", "build", "-o", exe, "./cmd/steward")
	cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building steward in %s: %w", root, err)
	}
	return exe, nil
}

// hubSet is the hub under load: `steward hub` processes (one on SQLite,
// or replicas on one PostgreSQL database), or a hub in this process.
type hubSet struct {
	label       string
	urls        []string // the replicas' base URLs
	fingerprint string
	token       string // an operator token
	procs       []*hubProc
	in          *inprocHub
	pg          *pgtest.Cluster // a throwaway cluster this command started
	pgDir       string
}

// startSet starts the hub: n `steward hub` replicas of exe (n > 1: on
// PostgreSQL, pgURL or a throwaway cluster), or with exe "" one hub in
// this process.
func startSet(exe string, n int, pgURL string) (*hubSet, error) {
	if exe == "" {
		in, err := startInproc()
		if err != nil {
			return nil, err
		}
		return &hubSet{label: "in-process", urls: []string{in.url}, fingerprint: in.fp, token: in.token, in: in}, nil
	}
	hs := &hubSet{label: "sqlite x1"}
	storeURL := ""
	if n > 1 {
		hs.label = fmt.Sprintf("postgres x%d", n)
		storeURL = pgURL
		if storeURL == "" {
			c, err := pgtest.Start(context.Background())
			if err != nil {
				return nil, err
			}
			hs.pg, hs.pgDir = c, c.Dir
			if storeURL, err = c.CreateDatabase(context.Background()); err != nil {
				c.Stop()
				return nil, err
			}
		}
	}
	// One after the other: the first migrates the database and makes the
	// operator token (in its data directory) and the certificate the
	// others are given.
	for i := range max(n, 1) {
		certDir := ""
		if i > 0 {
			certDir = hs.procs[0].dir
		}
		h, fp, err := startSteward(exe, storeURL, certDir)
		if err != nil {
			hs.stop()
			return nil, err
		}
		hs.procs = append(hs.procs, h)
		hs.urls = append(hs.urls, h.url)
		if i == 0 {
			hs.fingerprint = fp
			b, err := os.ReadFile(filepath.Join(h.dir, "admin-token"))
			if err != nil {
				hs.stop()
				return nil, fmt.Errorf("reading the hub's operator token: %w", err)
			}
			hs.token = strings.TrimSpace(string(b))
		} else if fp != hs.fingerprint {
			hs.stop()
			return nil, fmt.Errorf("replica %d presents certificate %s, replica 0 %s", i, fp, hs.fingerprint)
		}
	}
	return hs, nil
}

func (hs *hubSet) stop() {
	for _, h := range hs.procs {
		h.stop()
	}
	if hs.in != nil {
		hs.in.stop()
	}
	if hs.pg != nil {
		hs.pg.Stop()
	}
}

// url is the replica agent i talks to.
func (hs *hubSet) url(i int) string { return hs.urls[i%len(hs.urls)] }

// separate is whether the hub runs in processes of its own (its RSS,
// CPU and descriptors are then its own).
func (hs *hubSet) separate() bool { return hs.in == nil }

func (hs *hubSet) rssKiB() (n int) {
	for _, h := range hs.procs {
		n += procRSSKiB(h.pid())
	}
	return n
}

func (hs *hubSet) cpu() (d time.Duration) {
	for _, h := range hs.procs {
		d += procCPU(h.pid())
	}
	return d
}

func (hs *hubSet) fds() (n int) {
	for _, h := range hs.procs {
		n += procFDs(h.pid())
	}
	return n
}

// noFile is the smallest open-file limit of the hub's processes.
func (hs *hubSet) noFile() (uint64, error) {
	var m uint64
	for _, h := range hs.procs {
		l, err := procNoFile(h.pid())
		if err != nil {
			return 0, err
		}
		if m == 0 || l < m {
			m = l
		}
	}
	return m, nil
}

// pgCPU is the CPU time of the throwaway PostgreSQL server (the
// postmaster, its live backends and the reaped ones), 0 without one.
func (hs *hubSet) pgCPU() time.Duration {
	if hs.pgDir == "" {
		return 0
	}
	ents, _ := os.ReadDir("/proc")
	master := ""
	stats := map[string][]string{} // pid -> stat fields after the command name
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		st := string(b)
		if !strings.Contains(st, "(postgres)") {
			continue
		}
		stats[e.Name()] = strings.Fields(st[strings.LastIndexByte(st, ')')+2:])
		if cl, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline"); strings.Contains(string(cl), hs.pgDir) {
			master = e.Name()
		}
	}
	ticks := func(f []string, from, to int) (n int64) {
		for i := from; i <= to && i < len(f); i++ {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			n += v
		}
		return n
	}
	var total int64
	for pid, f := range stats {
		switch {
		case pid == master:
			total += ticks(f, 11, 14) // utime stime cutime cstime
		case len(f) > 1 && f[1] == master:
			total += ticks(f, 11, 12)
		}
	}
	return time.Duration(total) * 10 * time.Millisecond
}

// inprocHub is a hub served by this process: TLS with a self-signed
// certificate made in memory, HTTP/2, SQLite in a temporary directory,
// as `steward hub` serves it. It counts the connections each client
// address opened.
type inprocHub struct {
	url, fp, token string
	dir            string
	st             store.Store
	h              *hub.Server
	srv            *http.Server
	done           chan struct{}

	mu    sync.Mutex
	conns map[string]int // remote IP -> connections opened
}

func startInproc() (*inprocHub, error) {
	cert, err := selfSigned()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "hubload-inproc-")
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "hub.db"), sqlite.Options{})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	tok := hub.NewToken("stwo_")
	if err := st.CreateOperator(ctx, "bench", store.HashToken(tok)); err != nil {
		st.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	in := &inprocHub{url: "https://" + ln.Addr().String(), fp: tlspin.Of(cert.Certificate[0]), token: tok, dir: dir, st: st,
		done: make(chan struct{}), conns: map[string]int{}}
	in.h = hub.New(st, hub.Options{Logger: slog.New(slog.DiscardHandler)})
	in.srv = in.h.HTTPServer(&cert)
	in.srv.ConnState = func(c net.Conn, s http.ConnState) {
		if s != http.StateNew {
			return
		}
		ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		in.mu.Lock()
		in.conns[ip]++
		in.mu.Unlock()
	}
	go func() {
		defer close(in.done)
		if err := in.srv.Serve(tls.NewListener(ln, in.srv.TLSConfig)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "hubload: in-process hub:", err)
		}
	}()
	return in, nil
}

// connsFrom returns how many connections each client address opened.
func (in *inprocHub) connsFrom() map[string]int {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make(map[string]int, len(in.conns))
	for k, v := range in.conns {
		out[k] = v
	}
	return out
}

func (in *inprocHub) stop() {
	in.h.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := in.srv.Shutdown(ctx); err != nil {
		in.srv.Close()
	}
	<-in.done
	in.h.Close()
	in.st.Close()
	os.RemoveAll(in.dir)
}

// selfSigned makes a loopback certificate (ECDSA P-256, as steward hub's
// own).
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hubload"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
