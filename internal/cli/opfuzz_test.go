package cli

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzJSONToYAML: for any JSON value, -o yaml is YAML that reads back as
// the same value (numbers as numbers, strings as strings, YAML 1.1
// booleans quoted).
func FuzzJSONToYAML(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":"yes","c":[true,null,"0123",1.5e3],"d":{}}`, `[]`, `"on"`, `{"":""}`, `{"k":"line\nbreak: x"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var want any
		if json.Unmarshal([]byte(in), &want) != nil {
			return
		}
		y, err := jsonToYAML([]byte(in))
		if err != nil && strings.Contains(err.Error(), "duplicate object key") {
			return // never from encoding/json, which -o yaml encodes
		}
		if err != nil {
			t.Fatalf("jsonToYAML(%q): %v", in, err)
		}
		var got any
		if err := yaml.Unmarshal(y, &got); err != nil {
			t.Fatalf("the YAML of %q does not parse: %v\n%s", in, err, y)
		}
		// Compare through JSON: YAML integers decode as int, JSON's as
		// float64.
		gb, err := json.Marshal(got)
		if err != nil {
			t.Fatalf("YAML of %q decodes to something JSON cannot hold: %v", in, err)
		}
		var g2 any
		json.Unmarshal(gb, &g2)
		if !reflect.DeepEqual(g2, want) {
			t.Fatalf("YAML of %q reads back as %s\n%s", in, gb, y)
		}
	})
}

// FuzzParseOpConfig: the config parser never panics, and a config it
// accepts is saved and read back unchanged.
func FuzzParseOpConfig(f *testing.F) {
	f.Add("current-context: a\ncontexts:\n  a:\n    hub: https://h:8440\n    fingerprint: " + strings.Repeat("AB:", 31) + "AB\n    token: stwo_x\n")
	f.Add("contexts: {b: {hub: 'http://127.0.0.1:1', token: t}}\n")
	f.Add("colour: red\n")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := parseOpConfig("config.yaml", []byte(in))
		if err != nil {
			if !strings.Contains(err.Error(), "config.yaml") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		path := t.TempDir() + "/config.yaml"
		if err := saveConfig(path, c); err != nil {
			t.Fatalf("saving an accepted config: %v", err)
		}
		back, err := loadConfig(path)
		if err != nil {
			t.Fatalf("reading back a saved config: %v", err)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("config changed on save: %+v → %+v", c, back)
		}
	})
}
