package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	"golang.org/x/term"
)

// Output formats of the operator commands' -o flag. text is for people
// and may change between releases; json and yaml are for scripts: their
// field names and meaning are stable (new fields may be added), and yaml
// carries exactly the json fields, in the same order.
const (
	outputText = "text"
	outputJSON = "json"
	outputYAML = "yaml"
)

// addOutputFlag registers -o/--output on cmd (env STEWARD_OUTPUT).
func addOutputFlag(cmd *cobra.Command) {
	cmd.Flags().StringP("output", "o", outputText, "output format: text (for people), json or yaml (stable, for scripts)")
}

// outputFormat returns cmd's -o value, or a usage error naming the
// accepted values. Commands call it before they change anything, so a
// mistyped format never follows an action.
func outputFormat(cmd *cobra.Command) (string, error) {
	f, err := cmd.Flags().GetString("output")
	if err != nil {
		return "", fmt.Errorf("cli: %s has no --output flag: %w", cmd.CommandPath(), err)
	}
	switch f {
	case outputText, outputJSON, outputYAML:
		return f, nil
	}
	return "", &UsageError{Err: fmt.Errorf("-o %q: want text, json or yaml", f)}
}

// writeOutput writes v to w as format: json (indented, one trailing
// newline), yaml (the json document's fields in the same order), or text
// by calling text.
func writeOutput(w io.Writer, format string, v any, text func(io.Writer) error) error {
	switch format {
	case outputText:
		return text(w)
	case outputJSON:
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding the output as json: %w", err)
		}
		_, err = w.Write(append(b, '\n'))
		return err
	case outputYAML:
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encoding the output as yaml: %w", err)
		}
		y, err := jsonToYAML(b)
		if err != nil {
			return fmt.Errorf("encoding the output as yaml: %w", err)
		}
		_, err = w.Write(y)
		return err
	}
	return &UsageError{Err: fmt.Errorf("-o %q: want text, json or yaml", format)}
}

// jsonToYAML re-encodes one JSON value as YAML, keeping the order of
// object keys (so -o yaml lists fields as -o json does) and the types of
// scalars (a JSON string stays a YAML string even when it reads as a
// number).
func jsonToYAML(b []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	n, err := jsonNode(dec)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func jsonNode(dec *json.Decoder) (*yaml.Node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, ok := kt.(string)
				if !ok {
					return nil, errors.New("object key is not a string")
				}
				if seen[k] {
					return nil, fmt.Errorf("duplicate object key %q (YAML forbids it)", k)
				}
				seen[k] = true
				v, err := jsonNode(dec)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k}, v)
			}
			_, err := dec.Token() // '}'
			return n, err
		case '[':
			n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			for dec.More() {
				v, err := jsonNode(dec)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, v)
			}
			_, err := dec.Token() // ']'
			return n, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	case string:
		n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: t}
		if yaml11Bool[t] {
			// yaml.v3 writes these bare, but YAML 1.1 readers (PyYAML,
			// many tools) would read a boolean.
			n.Style = yaml.DoubleQuotedStyle
		}
		return n, nil
	case json.Number:
		tag := "!!int"
		if _, err := t.Int64(); err != nil {
			tag = "!!float"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: t.String()}, nil
	case bool:
		v := "false"
		if t {
			v = "true"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: v}, nil
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
	return nil, fmt.Errorf("unexpected JSON token %T", tok)
}

// newTable returns the tabwriter every text table uses.
func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// yaml11Bool are the YAML 1.1 spellings of booleans other than
// true/false.
var yaml11Bool = map[string]bool{}

func init() {
	for _, w := range []string{"y", "yes", "n", "no", "on", "off"} {
		yaml11Bool[w] = true
		yaml11Bool[strings.ToUpper(w)] = true
		yaml11Bool[strings.ToUpper(w[:1])+w[1:]] = true
	}
}

// isTerminal reports whether w is a terminal (colour and progress
// displays only then).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// useColour reports whether output to w may carry ANSI colour: w is a
// terminal and NO_COLOR (no-color.org) is not set.
func useColour(w io.Writer) bool {
	if _, ok := os.LookupEnv("NO_COLOR"); ok {
		return false
	}
	return isTerminal(w)
}
