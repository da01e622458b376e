package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/steward-pve/steward/internal/atomicfile"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/safefile"
)

// EnrollmentFile is the file under the state directory that holds the
// agent's link to its hub once enrolled (mode 0600: it holds the host's
// bearer token).
const EnrollmentFile = "hub.json"

// maxEnrollmentSize bounds EnrollmentFile.
const maxEnrollmentSize = 64 << 10

// Enrollment is what enrolling with a hub leaves in the state directory:
// the hub's URL, how its certificate is trusted, the host id the hub
// enrolled this agent as, and the host's bearer token.
//
// URL is one URL or, for hub replicas, several separated by commas, as
// --hub takes them (hubclient.ParseURLs): the agent moves between them
// when one fails. Fingerprint or CAFile applies to every one.
type Enrollment struct {
	URL         string `json:"url"`
	Fingerprint string `json:"fingerprint,omitempty"`
	CAFile      string `json:"ca_file,omitempty"`
	Host        string `json:"host"`
	Token       string `json:"token"`
}

// LoadEnrollment reads the state directory's enrollment; it returns nil
// and no error when the agent never enrolled.
func LoadEnrollment(stateDir string) (*Enrollment, error) {
	path := filepath.Join(stateDir, EnrollmentFile)
	b, err := safefile.ReadFileNoFollow(path, maxEnrollmentSize)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent: reading the hub enrollment: %w", err)
	}
	var e Enrollment
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("agent: %s is not an enrollment this steward reads (%v); remove it and enroll again with --join-token", path, err)
	}
	if e.URL == "" || e.Host == "" || e.Token == "" {
		return nil, fmt.Errorf("agent: %s lacks the hub URL, host or token; remove it and enroll again with --join-token", path)
	}
	if _, err := hubclient.ParseURLs(e.URL); err != nil {
		return nil, fmt.Errorf("agent: %s: %w; fix its \"url\" or run the agent once with --hub URL[,URL...] to replace it", path, err)
	}
	return &e, nil
}

// Save writes e to the state directory atomically, mode 0600.
func (e Enrollment) Save(stateDir string) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("agent: creating state directory: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(stateDir, EnrollmentFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("agent: saving the hub enrollment: %w", err)
	}
	return nil
}

// ConnectOptions say how to reach the hub: what the command line gave,
// over what the state directory holds.
type ConnectOptions struct {
	StateDir string
	// URL, Fingerprint and CAFile override the enrollment's when set
	// (Fingerprint and CAFile replace each other); they are needed to
	// enroll. URL may list several hub replicas separated by commas.
	URL, Fingerprint, CAFile string
	// Update saves overriding URL, Fingerprint and CAFile in the
	// enrollment, so later runs use them without the flags (the agent
	// itself; a check or a dry run changes nothing).
	Update bool
	// JoinToken enrolls an agent that has no enrollment yet; it is
	// ignored (with a note) once the agent is enrolled.
	JoinToken string
	// Host is the agent's host id when the operator named one: it must be
	// the host the hub enrolled the agent as. Empty adopts the enrolled
	// host.
	Host string
	// HTTPClient replaces the transport built from Fingerprint and CAFile
	// (tests).
	HTTPClient *http.Client
	Logger     *slog.Logger // nil: no logging
}

// ErrNotEnrolled is returned by Connect for a hub URL without an
// enrollment or a join token to make one.
var ErrNotEnrolled = errors.New("agent: not enrolled with a hub")

// Connect returns a client of the hub the state directory is enrolled
// with, enrolling first with o.JoinToken when the directory holds no
// enrollment yet (the token received is saved before anything else
// happens, so a crash cannot lose it). It returns a nil client and no
// error when there is neither an enrollment nor a hub URL: the agent runs
// on local files only. It refuses an enrollment for another host than
// o.Host.
func Connect(ctx context.Context, o ConnectOptions) (*hubclient.Client, *Enrollment, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e, err := LoadEnrollment(o.StateDir)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case e == nil && o.URL == "":
		if o.JoinToken != "" || o.Fingerprint != "" || o.CAFile != "" {
			return nil, nil, errors.New("agent: --join-token, --hub-fingerprint and --hub-ca-file need --hub URL")
		}
		return nil, nil, nil
	case e == nil && o.JoinToken == "":
		return nil, nil, fmt.Errorf("%w: %s holds no enrollment; give --join-token (an operator makes one for this host on the hub) to enroll once", ErrNotEnrolled, o.StateDir)
	case e == nil:
		if o.Fingerprint == "" && o.CAFile == "" {
			log.Warn("enrolling without --hub-fingerprint or --hub-ca-file: the hub's certificate is verified against the system's roots")
		}
		c, err := newHubClient(o.URL, o.Fingerprint, o.CAFile, "", o.HTTPClient, nil)
		if err != nil {
			return nil, nil, err
		}
		// The state directory lock keeps a running agent from racing the
		// enrollment.
		unlock, err := LockDir(o.StateDir)
		if err != nil {
			return nil, nil, err
		}
		resp, err := c.Enroll(ctx, o.JoinToken)
		if err != nil {
			unlock()
			return nil, nil, fmt.Errorf("agent: enrolling with the hub: %w", err)
		}
		e = &Enrollment{URL: o.URL, Fingerprint: o.Fingerprint, CAFile: o.CAFile, Host: resp.Host, Token: resp.Token}
		err = e.Save(o.StateDir)
		unlock()
		if err != nil {
			return nil, nil, err
		}
		log.Info("enrolled with the hub", "hub", e.URL, "host", e.Host, "file", filepath.Join(o.StateDir, EnrollmentFile))
	default:
		if o.JoinToken != "" {
			log.Info("already enrolled with a hub: --join-token ignored (remove the enrollment file to enroll again)",
				"hub", e.URL, "host", e.Host, "file", filepath.Join(o.StateDir, EnrollmentFile))
		}
	}
	if o.Host != "" && o.Host != e.Host {
		return nil, nil, fmt.Errorf("agent: the hub enrolled this agent as host %q but --host is %q: run with --host %s (or without --host), or remove %s and enroll with a join token made for host %q",
			e.Host, o.Host, e.Host, filepath.Join(o.StateDir, EnrollmentFile), o.Host)
	}
	next := *e
	if o.URL != "" {
		next.URL = o.URL
	}
	if o.Fingerprint != "" || o.CAFile != "" {
		next.Fingerprint, next.CAFile = o.Fingerprint, o.CAFile
	}
	c, err := newHubClient(next.URL, next.Fingerprint, next.CAFile, e.Token, o.HTTPClient, log)
	if err != nil {
		return nil, nil, err
	}
	if o.Update && next != *e {
		unlock, err := LockDir(o.StateDir)
		if err != nil {
			return nil, nil, err
		}
		err = next.Save(o.StateDir)
		unlock()
		if err != nil {
			return nil, nil, err
		}
		log.Info("hub enrollment updated from the command line", "hub", next.URL, "file", filepath.Join(o.StateDir, EnrollmentFile))
	}
	return c, &next, nil
}

func newHubClient(url, fp, ca, token string, hc *http.Client, log *slog.Logger) (*hubclient.Client, error) {
	opts := hubclient.Options{URL: url, Token: token, UserAgent: "steward-agent"}
	if log != nil {
		opts.OnFailover = func(from, to string, err error) {
			log.Warn("hub replica failed; moving to the next", "from", from, "to", to, "err", err)
		}
	}
	if hc != nil {
		opts.HTTPClient = hc
	} else {
		opts.Fingerprint, opts.CAFile = fp, ca
	}
	c, err := hubclient.New(opts)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return c, nil
}
