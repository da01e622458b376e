package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/steward-pve/steward/internal/yamlerr"
)

// configFlagName is the flag through which a command takes a settings
// file. A command opts in with addConfigFlag, which marks the flag with
// settingsAnnotation; root's pre-run then applies the file after the
// environment. (Operator commands take their login contexts from --login-file;
// their deprecated --config alias has no mark and takes no environment.)
const (
	configFlagName     = "config"
	settingsAnnotation = "steward-settings-file"
	// noEnvAnnotation marks a flag bindEnv leaves alone: a deprecated
	// alias whose variable belongs to another flag.
	noEnvAnnotation = "steward-no-env"
)

// maxSettingsSize bounds a config file.
const maxSettingsSize = 1 << 20

// addConfigFlag gives cmd a --config flag (and so STEWARD_CONFIG).
func addConfigFlag(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.String(configFlagName, "", "YAML file of settings: each key a flag name of this command, e.g. `listen: 0.0.0.0:8440` (precedence: flag, then STEWARD_* environment, then this file, then the default)")
	_ = fl.SetAnnotation(configFlagName, settingsAnnotation, []string{"true"})
}

// applyConfigFile sets, from the YAML file named by cmd's --config flag,
// every flag that neither the command line nor the environment set (run
// it after bindEnv). The file is one mapping whose keys are flag names
// and whose values are scalars as the flag would take them. It is strict: an unknown key, a repeated key, a nested
// value or a value the flag refuses is an error naming FILE:LINE, and
// then no flag is changed. Commands without a --config flag are left
// alone.
func applyConfigFile(cmd *cobra.Command) error {
	cf := cmd.Flags().Lookup(configFlagName)
	if cf == nil || cf.Annotations[settingsAnnotation] == nil || cf.Value.String() == "" {
		return nil
	}
	path := cf.Value.String()
	f, err := os.Open(path)
	if err != nil {
		return &UsageError{Err: fmt.Errorf("--config: %w", err)}
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSettingsSize+1))
	if err != nil {
		return &UsageError{Err: fmt.Errorf("--config: reading %s: %w", path, err)}
	}
	if len(b) > maxSettingsSize {
		return &UsageError{Err: fmt.Errorf("--config: %s is larger than %d bytes", path, maxSettingsSize)}
	}
	settings, err := parseConfig(path, b, cmd.Flags())
	if err != nil {
		return &UsageError{Err: err}
	}
	// Set in order; on a refused value put back the ones set before it.
	type undo struct {
		f   *pflag.Flag
		old string
	}
	var done []undo
	for _, s := range settings {
		fl := cmd.Flags().Lookup(s.name)
		if fl.Changed {
			continue // the command line or the environment set it
		}
		old := fl.Value.String()
		if err := fl.Value.Set(s.value); err != nil {
			for i := len(done) - 1; i >= 0; i-- {
				_ = done[i].f.Value.Set(done[i].old)
			}
			return &UsageError{Err: fmt.Errorf("%s:%d: %s: %v", path, s.line, s.name, err)}
		}
		done = append(done, undo{f: fl, old: old})
	}
	return nil
}

type setting struct {
	name, value string
	line        int
}

// parseConfig reads the settings of a config file against the flags fs.
func parseConfig(path string, b []byte, fs *pflag.FlagSet) ([]setting, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		line, msg := yamlerr.Syntax(err)
		return nil, fmt.Errorf("%s:%d: %s", path, line, msg)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, nil // empty file
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: want a mapping of settings (flag-name: value)", path, root.Line)
	}
	seen := map[string]int{}
	var out []setting
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("%s:%d: a setting's name must be a plain word", path, k.Line)
		}
		name := k.Value
		if prev, dup := seen[name]; dup {
			return nil, fmt.Errorf("%s:%d: %s is set twice (first on line %d)", path, k.Line, name, prev)
		}
		seen[name] = k.Line
		fl := fs.Lookup(name)
		if fl == nil || name == configFlagName || name == "help" || fl.Hidden {
			return nil, fmt.Errorf("%s:%d: unknown setting %q (settings are this command's flag names without the dashes; see --help)", path, k.Line, name)
		}
		var val string
		switch v.Kind {
		case yaml.ScalarNode:
			if v.Tag == "!!null" {
				return nil, fmt.Errorf("%s:%d: %s has no value", path, v.Line, name)
			}
			val = v.Value
		default:
			return nil, fmt.Errorf("%s:%d: %s takes one plain value (as on the command line), not a list or a mapping", path, v.Line, name)
		}
		out = append(out, setting{name: name, value: val, line: v.Line})
	}
	return out, nil
}
