package alert

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Defaults of a Config.
const (
	DefaultDedup           = time.Hour
	DefaultSilentIntervals = 3
	DefaultPendingAfter    = time.Hour
	// MaxConfigSize bounds a notification config file.
	MaxConfigSize = 256 << 10
)

// Sink types.
const (
	SinkWebhook = "webhook"
	SinkSlack   = "slack" // Slack or Mattermost incoming webhook
	SinkNtfy    = "ntfy"
	SinkSMTP    = "smtp"
)

// Config is the hub's notification config: sinks by name and the rules
// routing events to them. See the README for the file format; Parse
// reads it.
type Config struct {
	// Dedup is the default dedup window of the rules.
	Dedup time.Duration `yaml:"dedup"`
	// SilentIntervals: a host is silent after this many poll intervals
	// without a report or heartbeat.
	SilentIntervals int `yaml:"silent_intervals"`
	// PendingAfter: a pending signature alerts once it has waited this
	// long.
	PendingAfter time.Duration         `yaml:"pending_after"`
	Sinks        map[string]SinkConfig `yaml:"sinks"`
	Rules        []Rule                `yaml:"rules"`
}

// Secret is a value read from the config itself, an environment variable
// or a file (exactly one). Its value is never printed.
type Secret struct {
	Value string `yaml:"value"`
	Env   string `yaml:"env"`
	File  string `yaml:"file"`
}

func (s Secret) set() int {
	n := 0
	for _, v := range []string{s.Value, s.Env, s.File} {
		if v != "" {
			n++
		}
	}
	return n
}

// SinkConfig is one sink. Which fields apply depends on Type.
type SinkConfig struct {
	Type string `yaml:"type"`
	// URL: webhook, slack (the incoming webhook URL, which is itself a
	// secret: give it as url_secret instead to keep it out of the file)
	// and ntfy (the topic URL).
	URL       string `yaml:"url"`
	URLSecret Secret `yaml:"url_secret"`
	// Secret: the webhook's HMAC key.
	Secret Secret `yaml:"secret"`
	// Token: ntfy's access token (optional).
	Token Secret `yaml:"token"`
	// SMTP: Server is host:port (587 by default), From and To addresses,
	// Username and Password for AUTH PLAIN (after STARTTLS only).
	Server   string   `yaml:"server"`
	From     string   `yaml:"from"`
	To       []string `yaml:"to"`
	Username string   `yaml:"username"`
	Password Secret   `yaml:"password"`
	// CAFile: PEM certificates to trust for this sink's TLS instead of the
	// system's (a private CA). Verification is never turned off.
	CAFile string `yaml:"ca_file"`
}

// Rule routes events (optionally only of some hosts) to sinks.
type Rule struct {
	Events []string `yaml:"events"`
	// Hosts limits the rule to these host ids (empty: every host).
	Hosts []string      `yaml:"hosts"`
	Sinks []string      `yaml:"sinks"`
	Dedup time.Duration `yaml:"dedup"` // 0: the config's
}

// Parse strictly reads a notification config: an unknown key, a missing
// or unknown value, or a rule naming an unknown sink or event is an error
// saying where. Defaults fill what is left out. Secrets are not read here
// (see Build).
func Parse(b []byte) (*Config, error) {
	if len(b) > MaxConfigSize {
		return nil, fmt.Errorf("alert: the notification config is larger than %d bytes", MaxConfigSize)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("alert: the notification config is empty; it needs sinks and rules")
		}
		return nil, fmt.Errorf("alert: %w", err)
	}
	if c.Dedup == 0 {
		c.Dedup = DefaultDedup
	}
	if c.SilentIntervals == 0 {
		c.SilentIntervals = DefaultSilentIntervals
	}
	if c.PendingAfter == 0 {
		c.PendingAfter = DefaultPendingAfter
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("alert: %w", err)
	}
	return &c, nil
}

func (c *Config) validate() error {
	if c.Dedup < 0 || c.PendingAfter < 0 || c.SilentIntervals < 1 {
		return errors.New("dedup and pending_after must be positive durations and silent_intervals at least 1")
	}
	if len(c.Sinks) == 0 {
		return errors.New("sinks: at least one sink is needed")
	}
	for name, s := range c.Sinks {
		if err := checkSink(s); err != nil {
			return fmt.Errorf("sinks.%s: %w", name, err)
		}
		if name == "" || len(name) > 100 || strings.ContainsAny(name, " \t\n/") {
			return fmt.Errorf("sinks: %q is not a sink name (1..100 characters, no space or '/')", name)
		}
	}
	for i, r := range c.Rules {
		where := fmt.Sprintf("rules[%d]", i)
		if len(r.Events) == 0 || len(r.Sinks) == 0 {
			return fmt.Errorf("%s: a rule needs events and sinks", where)
		}
		for _, e := range r.Events {
			if !slices.Contains(Events, e) {
				return fmt.Errorf("%s.events: unknown event %q (one of %s)", where, e, strings.Join(Events, ", "))
			}
		}
		for _, s := range r.Sinks {
			if _, ok := c.Sinks[s]; !ok {
				return fmt.Errorf("%s.sinks: no sink named %q under sinks", where, s)
			}
		}
		if r.Dedup < 0 {
			return fmt.Errorf("%s.dedup: negative", where)
		}
		for _, h := range r.Hosts {
			if h == "" {
				return fmt.Errorf("%s.hosts: an empty host id", where)
			}
		}
	}
	return nil
}

func checkSecret(what string, s Secret, required bool) error {
	switch n := s.set(); {
	case n > 1:
		return fmt.Errorf("%s: give one of value, env or file", what)
	case n == 0 && required:
		return fmt.Errorf("%s is required (value, env or file)", what)
	}
	return nil
}

func checkHTTPURL(what, u string) error {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
		return fmt.Errorf("%s must be an http(s) URL", what)
	}
	return nil
}

func checkSink(s SinkConfig) error {
	switch s.Type {
	case SinkWebhook, SinkNtfy:
		if err := checkHTTPURL("url", s.URL); err != nil {
			return err
		}
		if s.Type == SinkWebhook {
			return checkSecret("secret", s.Secret, true)
		}
		return checkSecret("token", s.Token, false)
	case SinkSlack:
		if (s.URL == "") == (s.URLSecret.set() == 0) {
			return errors.New("give the incoming webhook as url or url_secret (one of them)")
		}
		if s.URL != "" {
			if err := checkHTTPURL("url", s.URL); err != nil {
				return err
			}
		}
		return checkSecret("url_secret", s.URLSecret, false)
	case SinkSMTP:
		if s.Server == "" {
			return errors.New("server (host:port) is required")
		}
		if _, err := mail.ParseAddress(s.From); err != nil {
			return fmt.Errorf("from: %q is not an address", s.From)
		}
		if len(s.To) == 0 {
			return errors.New("to: at least one address")
		}
		for _, t := range s.To {
			if _, err := mail.ParseAddress(t); err != nil {
				return fmt.Errorf("to: %q is not an address", t)
			}
		}
		if s.Username != "" {
			return checkSecret("password", s.Password, true)
		}
		return nil
	case "":
		return fmt.Errorf("type is required (%s, %s, %s or %s)", SinkWebhook, SinkSlack, SinkNtfy, SinkSMTP)
	}
	return fmt.Errorf("unknown type %q (%s, %s, %s or %s)", s.Type, SinkWebhook, SinkSlack, SinkNtfy, SinkSMTP)
}

// Route returns the sinks an alert goes to, each with its dedup window
// (the shortest of the rules naming it), in name order.
func (c *Config) Route(a Alert) []Target {
	win := map[string]time.Duration{}
	for _, r := range c.Rules {
		if !slices.Contains(r.Events, a.Event) || (len(r.Hosts) > 0 && !slices.Contains(r.Hosts, a.Host)) {
			continue
		}
		d := r.Dedup
		if d == 0 {
			d = c.Dedup
		}
		for _, s := range r.Sinks {
			if w, ok := win[s]; !ok || d < w {
				win[s] = d
			}
		}
	}
	out := make([]Target, 0, len(win))
	for s, d := range win {
		out = append(out, Target{Sink: s, Dedup: d})
	}
	slices.SortFunc(out, func(a, b Target) int { return strings.Compare(a.Sink, b.Sink) })
	return out
}

// Wants reports whether some rule routes event.
func (c *Config) Wants(event string) bool {
	for _, r := range c.Rules {
		if slices.Contains(r.Events, event) {
			return true
		}
	}
	return false
}

// Target is a sink an alert goes to and its dedup window.
type Target struct {
	Sink  string
	Dedup time.Duration
}
