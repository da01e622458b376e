package pve

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/guest"
)

func TestFlexTypes(t *testing.T) {
	ints := []struct {
		in   string
		want int64
		err  bool
	}{
		{`106`, 106, false}, {`"106"`, 106, false}, {`" 7 "`, 7, false}, {`""`, 0, false}, {`null`, 0, false},
		{`true`, 1, false}, {`false`, 0, false}, {`-3`, -3, false}, {`1.5`, 2, false}, {`"2.0"`, 2, false},
		{`4294967296`, 4294967296, false}, {`1e3`, 1000, false},
		{`"abc"`, 0, true}, {`{}`, 0, true}, {`[]`, 0, true}, {`"NaN"`, 0, true}, {`1e400`, 0, true},
	}
	for _, tt := range ints {
		var v flexInt
		err := json.Unmarshal([]byte(tt.in), &v)
		if (err != nil) != tt.err || (err == nil && int64(v) != tt.want) {
			t.Errorf("flexInt(%s) = %d, %v; want %d, error %v", tt.in, v, err, tt.want, tt.err)
		}
	}
	floats := []struct {
		in   string
		want float64
	}{{`"3400.000"`, 3400}, {`0.174069059487628`, 0.174069059487628}, {`"0.00"`, 0}, {`null`, 0}}
	for _, tt := range floats {
		var v flexFloat
		if err := json.Unmarshal([]byte(tt.in), &v); err != nil || float64(v) != tt.want {
			t.Errorf("flexFloat(%s) = %v, %v; want %v", tt.in, v, err, tt.want)
		}
	}
	bools := []struct {
		in   string
		want bool
		err  bool
	}{
		{`1`, true, false}, {`0`, false, false}, {`true`, true, false}, {`false`, false, false}, {`"1"`, true, false},
		{`"0"`, false, false}, {`""`, false, false}, {`null`, false, false}, {`2`, true, false}, {`"yes"`, false, true}, {`{}`, false, true},
	}
	for _, tt := range bools {
		var v flexBool
		err := json.Unmarshal([]byte(tt.in), &v)
		if (err != nil) != tt.err || bool(v) != tt.want {
			t.Errorf("flexBool(%s) = %v, %v; want %v, error %v", tt.in, v, err, tt.want, tt.err)
		}
	}
	strs := []struct {
		in   string
		want string
		err  bool
	}{
		{`"a"`, "a", false}, {`"a\nb"`, "a\nb", false}, {`"\u00e9"`, "é", false}, {`110`, "110", false}, {`-0.5`, "-0.5", false},
		{`true`, "1", false}, {`false`, "0", false}, {`null`, "", false}, {`1E2`, "100", false}, {`[1]`, "", true}, {`{}`, "", true},
	}
	for _, tt := range strs {
		var v flexString
		err := json.Unmarshal([]byte(tt.in), &v)
		if (err != nil) != tt.err || string(v) != tt.want {
			t.Errorf("flexString(%s) = %q, %v; want %q, error %v", tt.in, v, err, tt.want, tt.err)
		}
	}
}

func TestDecodeConfig(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		want       guest.Config
		wantDigest string
		wantErr    string
	}{
		{"numbers and strings", `{"memory":8192,"cores":"2","digest":"d1","balloon":0}`,
			guest.Config{"memory": "8192", "cores": "2", "balloon": "0"}, "d1", ""},
		{"description newline kept", `{"description":"web\n","digest":"d"}`, guest.Config{"description": "web\n"}, "d", ""},
		{"escapes", `{"sshkeys":"ssh-ed25519%20AAAA%2B","name":"caf\u00e9","digest":"d"}`, guest.Config{"sshkeys": "ssh-ed25519%20AAAA%2B", "name": "café"}, "d", ""},
		{"booleans as 0/1", `{"onboot":true,"template":false}`, guest.Config{"onboot": "1", "template": "0"}, "", ""},
		{"nested kept as compact JSON", `{"lxc":[ ["a", "b"] ],"x":{"k": 1}}`, guest.Config{"lxc": `[["a","b"]]`, "x": `{"k":1}`}, "", ""},
		{"unknown and future keys kept", `{"unused0":"local-lvm:vm-101-disk-1","mp7":"local:7/x.raw,mp=/d,size=8G","future-key":"v"}`,
			guest.Config{"unused0": "local-lvm:vm-101-disk-1", "mp7": "local:7/x.raw,mp=/d,size=8G", "future-key": "v"}, "", ""},
		{"null value kept as empty", `{"k":null}`, guest.Config{"k": ""}, "", ""},
		{"empty object", `{}`, guest.Config{}, "", ""},
		{"float", `{"cpulimit":0.5}`, guest.Config{"cpulimit": "0.5"}, "", ""},
		{"null", `null`, nil, "", "is null"},
		{"array", `[]`, nil, "", "not a JSON object"},
		{"digest not string", `{"digest":5}`, nil, "", "want a string"},
		{"garbage", `{"a":`, nil, "", "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gc, err := DecodeConfig([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("DecodeConfig error = %v; want one containing %q", err, tt.wantErr)
				}
				return
			}
			must(t, err)
			eq(t, "Digest", gc.Digest, tt.wantDigest)
			eqConfig(t, gc.Values, tt.want)
		})
	}
}

// FuzzDecodeConfig: DecodeConfig never panics, and on success keeps every
// key of the object but "digest", with scalar values as PVE means them.
func FuzzDecodeConfig(f *testing.F) {
	for _, name := range []string{
		"gp-pve7-lxc-config.json",
		"unattributed/qemu-config.pve7.creation-qemu-6.2.0.json",
		"unattributed/qemu-config.pve8.4-or-9.creation-qemu-9.2.0.json",
		"unattributed/qemu-config.pve9.creation-qemu-10.0.2.json",
	} {
		var env envelope[json.RawMessage]
		if err := json.Unmarshal(fixture(f, name), &env); err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(env.Data))
	}
	f.Add([]byte(`{"memory":"4096","digest":"x","lxc":[["a","b"]],"n":null,"b":true,"e":1e2}`))
	f.Add([]byte(`{"a":"\ud800"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		gc, err := DecodeConfig(b)
		if err != nil {
			return
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil {
			t.Fatalf("DecodeConfig accepted input encoding/json rejects: %v", err)
		}
		_, hasDigest := raw["digest"]
		want := len(raw)
		if hasDigest {
			want--
		}
		if len(gc.Values) != want {
			t.Fatalf("kept %d keys; want %d", len(gc.Values), want)
		}
		for k, v := range raw {
			if k == "digest" {
				continue
			}
			got, ok := gc.Values[k]
			if !ok {
				t.Fatalf("key %q dropped", k)
			}
			var s string
			if json.Unmarshal(v, &s) == nil && got != s {
				t.Fatalf("key %q: got %q; want string %q verbatim", k, got, s)
			}
		}
	})
}
