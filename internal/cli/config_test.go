package cli

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// configCmd is a command with the flags a test needs, run as Run runs
// one (environment, then the config file).
func configCmd(t *testing.T, got *map[string]string) *cobra.Command {
	t.Helper()
	var listen, level string
	var poll time.Duration
	cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error {
		*got = map[string]string{"listen": listen, "poll-interval": poll.String(), "log-level": level}
		return nil
	}}
	cmd.Flags().StringVar(&listen, "listen", "default:1", "")
	cmd.Flags().DurationVar(&poll, "poll-interval", time.Minute, "")
	cmd.Flags().StringVar(&level, "log-level", "info", "")
	addConfigFlag(cmd)
	root := &cobra.Command{Use: "steward", SilenceErrors: true, SilenceUsage: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindEnv(cmd); err != nil {
				return err
			}
			return applyConfigFile(cmd)
		}}
	root.AddCommand(cmd)
	return root
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "steward.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A flag wins over the environment, which wins over the file, which
// wins over the default.
func TestConfigPrecedence(t *testing.T) {
	p := writeConfig(t, "# hub settings\nlisten: file:3\npoll-interval: 2m\nlog-level: debug\n")
	t.Setenv("STEWARD_POLL_INTERVAL", "5m")
	var got map[string]string
	root := configCmd(t, &got)
	root.SetArgs([]string{"x", "--config", p, "--log-level", "warn"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"listen": "file:3", "poll-interval": "5m0s", "log-level": "warn"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q; want %q", k, got[k], v)
		}
	}
	// STEWARD_CONFIG names the file too.
	t.Setenv("STEWARD_CONFIG", p)
	root = configCmd(t, &got)
	root.SetArgs([]string{"x"})
	if err := root.Execute(); err != nil || got["listen"] != "file:3" {
		t.Fatalf("config from STEWARD_CONFIG: got %v, %v; want listen file:3", got, err)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"unknown key", "listen: a\nlisten-addr: b\n", `:2: unknown setting "listen-addr"`},
		{"repeated key", "listen: a\n\nlisten: b\n", ":3: listen is set twice (first on line 1)"},
		{"bad value", "listen: a\npoll-interval: soon\n", `:2: poll-interval: time: invalid duration "soon"`},
		{"nested", "listen:\n  host: a\n", ":2: listen takes one plain value"},
		{"list", "listen: [a, b]\n", ":1: listen takes one plain value"},
		{"not a mapping", "- listen\n", ":1: want a mapping"},
		{"syntax", "listen: a\n\tpoll-interval: 1m\n", ":2: "},
		{"no value", "listen:\n", ":1: listen has no value"},
		{"config in config", "config: other.yaml\n", `:1: unknown setting "config"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, tt.body)
			var got map[string]string
			root := configCmd(t, &got)
			root.SetArgs([]string{"x", "--config", p})
			err := root.Execute()
			var ue *UsageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), p+tt.want) {
				t.Fatalf("got %v; want a usage error containing %q", err, p+tt.want)
			}
			if got != nil {
				t.Fatalf("the command ran after a bad config: %v", got)
			}
		})
	}
	t.Run("a refused value changes nothing", func(t *testing.T) {
		var got map[string]string
		root := configCmd(t, &got)
		p := writeConfig(t, "listen: set-first\npoll-interval: soon\n")
		root.SetArgs([]string{"x", "--config", p})
		if err := root.Execute(); err == nil {
			t.Fatal("no error")
		}
		sub, _, _ := root.Find([]string{"x"})
		if v := sub.Flags().Lookup("listen").Value.String(); v != "default:1" {
			t.Fatalf("listen after a refused file: got %q; want the default back", v)
		}
	})
	t.Run("empty file", func(t *testing.T) {
		var got map[string]string
		root := configCmd(t, &got)
		root.SetArgs([]string{"x", "--config", writeConfig(t, "# nothing yet\n")})
		if err := root.Execute(); err != nil || got["listen"] != "default:1" {
			t.Fatalf("empty config: got %v, %v; want the defaults", got, err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		var got map[string]string
		root := configCmd(t, &got)
		root.SetArgs([]string{"x", "--config", filepath.Join(t.TempDir(), "nope.yaml")})
		var ue *UsageError
		if err := root.Execute(); !errors.As(err, &ue) || !strings.Contains(err.Error(), "nope.yaml") {
			t.Fatalf("missing file: got %v; want a usage error naming it", err)
		}
	})
}

// The hub takes its settings from a config file.
func TestHubConfigFile(t *testing.T) {
	p := writeConfig(t, "data-dir: "+filepath.Join(t.TempDir(), "hub")+"\nlisten: 127.0.0.1:0\ninsecure-http: true\n")
	out, stop := startHub(t, "--config", p)
	defer stop()
	if url := hubURLRe.FindStringSubmatch(out)[1]; !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("URL: got %s; want plain HTTP on loopback as the file says", url)
	}
	err := Run(t.Context(), []string{"hub", "--config", writeConfig(t, "data-dir: x\nreport-budget: lots\n")}, &hubOut{}, &hubOut{})
	var ue *UsageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), ":2: report-budget") {
		t.Fatalf("bad hub config: got %v; want a usage error at line 2", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("listen: a\npoll-interval: 1m\n"))
	f.Add([]byte("listen: [a]\n"))
	f.Add([]byte("{listen: a, listen: b}"))
	f.Add([]byte("- x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got map[string]string
		cmd := configCmd(t, &got).Commands()[0]
		settings, err := parseConfig("f.yaml", b, cmd.Flags())
		if err != nil && !strings.HasPrefix(err.Error(), "f.yaml:") {
			t.Fatalf("error %q names no file:line", err)
		}
		for _, s := range settings {
			if cmd.Flags().Lookup(s.name) == nil || s.line < 1 {
				t.Fatalf("setting %+v: not a flag or no line", s)
			}
		}
	})
}

// A --config of another kind (the operator commands' login contexts) is
// not read as a settings file.
func TestConfigOnlyWhereMarked(t *testing.T) {
	p := writeConfig(t, "contexts: {}\n")
	var ran bool
	cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { ran = true; return nil }}
	cmd.Flags().String("config", "", "")
	root := &cobra.Command{Use: "steward", SilenceErrors: true, SilenceUsage: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return applyConfigFile(cmd) }}
	root.AddCommand(cmd)
	root.SetArgs([]string{"x", "--config", p})
	if err := root.Execute(); err != nil || !ran {
		t.Fatalf("unmarked --config: got %v (ran %v); want it left alone", err, ran)
	}
}
