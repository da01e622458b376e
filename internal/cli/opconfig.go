package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/steward-pve/steward/internal/atomicfile"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/safefile"
	"github.com/steward-pve/steward/internal/tlspin"
	"github.com/steward-pve/steward/internal/yamlerr"
)

// opConfig is the operator's config file, written by `steward login`:
//
//	current-context: hub-a
//	contexts:
//	  hub-a:
//	    hub: https://hub-a.example:8440
//	    fingerprint: AB:CD:…   # SHA-256 of the hub's certificate, pinned
//	    token: stwo_…          # the operator token
//
// It holds a secret, so it is written 0600 in a 0700 directory, always
// whole (temp file, fsync, rename).
type opConfig struct {
	Current  string                `yaml:"current-context,omitempty"`
	Contexts map[string]*opContext `yaml:"contexts,omitempty"`
}

// opContext is one hub an operator logged in to.
type opContext struct {
	Hub         string `yaml:"hub"`
	Fingerprint string `yaml:"fingerprint,omitempty"`
	Token       string `yaml:"token"`
}

// maxConfigSize bounds the config file.
const maxConfigSize = 1 << 20

var contextNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}$`)

// checkContextName says what a context name may be.
func checkContextName(name string) error {
	if !contextNameRe.MatchString(name) {
		return fmt.Errorf("context name %q: want 1-64 letters, digits and . _ @ : - (starting with a letter or digit)", name)
	}
	return nil
}

// defaultConfigPath is $XDG_CONFIG_HOME/steward/config.yaml, with
// XDG_CONFIG_HOME defaulting to ~/.config.
func defaultConfigPath() (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" || !filepath.IsAbs(dir) { // the XDG spec: a relative value is ignored
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("finding the config directory: %w; set XDG_CONFIG_HOME or --config", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "steward", "config.yaml"), nil
}

// loadConfig reads the config file at path; a missing file is an empty
// config. A file that does not parse, or names a bad hub, is an error
// naming the file (and line).
func loadConfig(path string) (*opConfig, error) {
	b, err := safefile.ReadFile(path, maxConfigSize)
	if errors.Is(err, fs.ErrNotExist) {
		return &opConfig{Contexts: map[string]*opContext{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the config %s: %w", path, err)
	}
	return parseOpConfig(path, b)
}

// parseOpConfig strictly decodes and checks a config file's content b;
// errors name path.
func parseOpConfig(path string, b []byte) (*opConfig, error) {
	var c opConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("config %s: %s", path, strings.Join(te.Errors, "; "))
		}
		line, msg := yamlerr.Syntax(err)
		return nil, fmt.Errorf("config %s: line %d: %s", path, line, msg)
	}
	if c.Contexts == nil {
		c.Contexts = map[string]*opContext{}
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("config %s: %w; fix it or log in again (steward login)", path, err)
	}
	return &c, nil
}

// check validates every context and the current one.
func (c *opConfig) check() error {
	for _, name := range c.names() {
		ctx := c.Contexts[name]
		if err := checkContextName(name); err != nil {
			return err
		}
		if ctx == nil {
			return fmt.Errorf("contexts.%s is empty", name)
		}
		if _, err := hubclient.ParseURL(ctx.Hub); err != nil {
			return fmt.Errorf("contexts.%s.hub: %w", name, err)
		}
		if ctx.Fingerprint != "" {
			if _, err := tlspin.Parse(ctx.Fingerprint); err != nil {
				return fmt.Errorf("contexts.%s.fingerprint: %w", name, err)
			}
		}
		if ctx.Token == "" {
			return fmt.Errorf("contexts.%s.token is empty", name)
		}
	}
	if c.Current != "" && c.Contexts[c.Current] == nil {
		return fmt.Errorf("current-context %q names no context", c.Current)
	}
	return nil
}

// names returns the context names, sorted.
func (c *opConfig) names() []string {
	out := make([]string, 0, len(c.Contexts))
	for n := range c.Contexts {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// saveConfig writes c to path atomically, the file 0600 and its
// directory 0700 (created if missing; tightened if it is steward's own).
func saveConfig(path string, c *opConfig) error {
	if err := c.check(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var buf bytes.Buffer
	buf.WriteString("# steward operator config, written by `steward login`. It holds operator\n# tokens: keep it private (0600).\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return fmt.Errorf("encoding the config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encoding the config: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the config directory %s: %w", dir, err)
	}
	if filepath.Base(dir) == "steward" {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("config directory %s: %w", dir, err)
		}
	}
	if err := atomicfile.Write(path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("writing the config %s: %w", path, err)
	}
	return nil
}
