package signedop_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/signedop"
)

// goldenPayload exercises every escaping rule.
func goldenPayload() signedop.Payload {
	return signedop.Payload{
		Version: 1,
		Op:      action.SetConfig,
		Host:    "pve-a",
		VMID:    101,
		Kind:    guest.QEMU,
		Params: map[string]string{
			"delete":      "unused0,mp0",
			"scsi0":       "local-lvm:vm-101-disk-1,size=32G",
			"description": "quote \" backslash \\ slash / tab \t nl \n cr \r bs \b ff \f nul \x00 esc \x1b del \x7f <>& \u2028 ünï ✓ 😀",
		},
		Digest:    "3f6b1c0f8e2a4d5c9b7a6e5d4c3b2a1908f7e6d5",
		Nonce:     "00112233445566778899aabbccddeeff",
		NotBefore: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Expires:   time.Date(2026, 1, 2, 4, 4, 5, 0, time.UTC),
		Reason:    "replace scsi0 (ticket #42)",
	}
}

func TestCanonicalGolden(t *testing.T) {
	got := goldenPayload().Canonical()
	path := filepath.Join("testdata", "payload.golden")
	if os.Getenv("STEWARD_UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (regenerate with STEWARD_UPDATE_GOLDEN=1): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Canonical():\n got %q\nwant %q", got, want)
	}
	p, err := signedop.ParsePayload(want)
	if err != nil {
		t.Fatalf("ParsePayload(golden): %v", err)
	}
	if !bytes.Equal(p.Canonical(), want) {
		t.Fatalf("round trip changed the bytes")
	}
	// Any JSON parser reads the same values.
	var generic map[string]any
	if err := json.Unmarshal(want, &generic); err != nil {
		t.Fatal(err)
	}
	if d := generic["params"].(map[string]any)["description"]; d != goldenPayload().Params["description"] {
		t.Fatalf("encoding/json reads description %q; want %q", d, goldenPayload().Params["description"])
	}
}

func TestNewPayload(t *testing.T) {
	a := action.Action{Op: action.Destroy, VMID: 101, Kind: guest.LXC, Digest: "d1"}
	now := time.Date(2026, 3, 4, 5, 6, 7, 890, time.FixedZone("x", 3600))
	p, err := signedop.NewPayload("pve-a", a, now, 90*time.Minute, "why")
	if err != nil {
		t.Fatal(err)
	}
	if !p.NotBefore.Equal(now.Truncate(time.Second)) || p.NotBefore.Location() != time.UTC {
		t.Errorf("NotBefore: got %v; want %v in UTC", p.NotBefore, now.Truncate(time.Second))
	}
	if got := p.Expires.Sub(p.NotBefore); got != 90*time.Minute {
		t.Errorf("Expires-NotBefore: got %v; want 1h30m", got)
	}
	if p.Digest != "d1" || p.Params == nil || len(p.Params) != 0 {
		t.Errorf("Digest/Params: got %q/%v; want d1/empty map", p.Digest, p.Params)
	}
	if !strings.Contains(string(p.Canonical()), `"params":{}`) {
		t.Errorf("canonical params: got %s; want {}", p.Canonical())
	}
	q, _ := signedop.NewPayload("pve-a", a, now, time.Hour, "why")
	if p.Nonce == q.Nonce || len(p.Nonce) != 32 {
		t.Errorf("nonces %q, %q: want distinct 32-hex-digit values", p.Nonce, q.Nonce)
	}
	if err := p.Matches("pve-a", a); err != nil {
		t.Errorf("Matches own action: %v", err)
	}
	bad := []struct {
		name   string
		host   string
		a      action.Action
		ttl    time.Duration
		reason string
	}{
		{"ttl below a second", "h", a, 500 * time.Millisecond, ""},
		{"empty host", "", a, time.Hour, ""},
		{"host with space", "a b", a, time.Hour, ""},
		{"bad kind", "h", action.Action{Op: action.Destroy, VMID: 101, Kind: "vm"}, time.Hour, ""},
		{"vmid too small", "h", action.Action{Op: action.Destroy, VMID: 99, Kind: guest.QEMU}, time.Hour, ""},
		{"op with uppercase", "h", action.Action{Op: "Destroy", VMID: 101, Kind: guest.QEMU}, time.Hour, ""},
		{"invalid UTF-8 reason", "h", a, time.Hour, "\xff"},
		{"invalid UTF-8 param", "h", action.Action{Op: action.SetConfig, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"k": "\xc3"}}, time.Hour, ""},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := signedop.NewPayload(tt.host, tt.a, now, tt.ttl, tt.reason); err == nil {
				t.Fatal("got nil error; want error")
			}
		})
	}
}

func TestParsePayloadStrict(t *testing.T) {
	golden := string(goldenPayload().Canonical())
	rep := func(old, new string) []byte {
		if !strings.Contains(golden, old) {
			t.Fatalf("test bug: %q not in golden", old)
		}
		return []byte(strings.Replace(golden, old, new, 1))
	}
	tests := []struct {
		name    string
		in      []byte
		wantSub string
	}{
		{"empty", nil, "not a JSON object"},
		{"array", []byte("[]\n"), "not a JSON object"},
		{"unknown field", rep(`{"digest"`, `{"extra":"1","digest"`), `unknown field "extra"`},
		{"missing field", rep(`"reason":"replace scsi0 (ticket #42)",`, ``), `"reason" is missing`},
		{"version 2", rep(`"v":1`, `"v":2`), "unsupported payload version"},
		{"version 0", rep(`"v":1`, `"v":0`), "unsupported payload version"},
		{"version as string", rep(`"v":1`, `"v":"1"`), `"v"`},
		{"version float", rep(`"v":1`, `"v":1.0`), `"v"`},
		{"vmid string", rep(`"vmid":101`, `"vmid":"101"`), `"vmid"`},
		{"vmid negative", rep(`"vmid":101`, `"vmid":-101`), `"vmid"`},
		{"vmid exponent", rep(`"vmid":101`, `"vmid":1e2`), `"vmid"`},
		{"vmid leading zero", rep(`"vmid":101`, `"vmid":0101`), "not a JSON object"},
		{"vmid out of range", rep(`"vmid":101`, `"vmid":1`), `"vmid"`},
		{"host number", rep(`"host":"pve-a"`, `"host":7`), `"host"`},
		{"kind unknown", rep(`"kind":"qemu"`, `"kind":"vm"`), `"kind"`},
		{"params null", rep(`"params":{`, `"params":null,"x":{`), `unknown field "x"`},
		{"params number value", rep(`"delete":"unused0,mp0"`, `"delete":1`), `"params"`},
		{"nonce uppercase", rep(`00112233445566778899aabbccddeeff`, `00112233445566778899AABBCCDDEEFF`), `"nonce"`},
		{"nonce short", rep(`00112233445566778899aabbccddeeff`, `0011`), `"nonce"`},
		{"time with offset", rep(`2026-01-02T03:04:05Z`, `2026-01-02T04:04:05+01:00`), `"not_before"`},
		{"time fractional", rep(`2026-01-02T03:04:05Z`, `2026-01-02T03:04:05.5Z`), `"not_before"`},
		{"expires before not_before", rep(`"expires":"2026-01-02T04:04:05Z"`, `"expires":"2026-01-02T02:04:05Z"`), `"expires"`},
		{"keys out of order", rep(`"digest":"3f6b1c0f8e2a4d5c9b7a6e5d4c3b2a1908f7e6d5","expires":"2026-01-02T04:04:05Z"`, `"expires":"2026-01-02T04:04:05Z","digest":"3f6b1c0f8e2a4d5c9b7a6e5d4c3b2a1908f7e6d5"`), "canonical"},
		{"space after colon", rep(`"host":"pve-a"`, `"host": "pve-a"`), "canonical"},
		{"escaped slash", rep(`slash /`, `slash \/`), "canonical"},
		{"needless unicode escape", rep(`"pve-a"`, `"pve\u002da"`), "canonical"},
		{"uppercase unicode escape", rep(`\u001b`, `\u001B`), "canonical"},
		{"escaped U+2028", rep("\u2028", `\u2028`), "canonical"},
		{"duplicate key", rep(`"host":"pve-a"`, `"host":"pve-b","host":"pve-a"`), "canonical"},
		{"no trailing newline", []byte(strings.TrimSuffix(golden, "\n")), "canonical"},
		{"CRLF", []byte(strings.TrimSuffix(golden, "\n") + "\r\n"), "canonical"},
		{"BOM", append([]byte("\ufeff"), golden...), "not a JSON object"},
		{"trailing data", []byte(golden + "{}"), "not a JSON object"},
		{"invalid UTF-8 in reason", rep(`ticket #42`, "ticket \xff"), "canonical"},
		{"too big", bytes.Repeat([]byte(" "), signedop.MaxPayloadSize+1), "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := signedop.ParsePayload(tt.in)
			if err == nil {
				t.Fatalf("got nil error; want one containing %q", tt.wantSub)
			}
			if !strings.Contains(err.Error(), tt.wantSub) || !strings.HasPrefix(err.Error(), "signedop: ") {
				t.Fatalf("got %q; want it prefixed signedop: and containing %q", err, tt.wantSub)
			}
		})
	}
	if _, err := signedop.ParsePayload(rep(`"v":1`, `"v":2`)); !errors.Is(err, signedop.ErrUnsupportedVersion) {
		t.Errorf("version 2: got %v; want ErrUnsupportedVersion", err)
	}
}

func TestMatches(t *testing.T) {
	a := action.Action{Op: action.SetConfig, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"delete": "mp0", "password": "s3cret"}, Digest: "d"}
	p, err := signedop.NewPayload("h", a, time.Now(), time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(*action.Action)) action.Action {
		b := a
		b.Params = map[string]string{"delete": "mp0", "password": "s3cret"}
		f(&b)
		return b
	}
	tests := []struct {
		name  string
		host  string
		a     action.Action
		field string
	}{
		{"equal", "h", a, ""},
		{"op", "h", mod(func(b *action.Action) { b.Op = action.Destroy }), "op"},
		{"host", "h2", a, "host"},
		{"vmid", "h", mod(func(b *action.Action) { b.VMID = 102 }), "vmid"},
		{"kind", "h", mod(func(b *action.Action) { b.Kind = guest.LXC }), "kind"},
		{"param value", "h", mod(func(b *action.Action) { b.Params["password"] = "hunter2" }), "params"},
		{"param extra", "h", mod(func(b *action.Action) { b.Params["x"] = "" }), "params"},
		{"param missing", "h", mod(func(b *action.Action) { delete(b.Params, "delete") }), "params"},
		{"digest", "h", mod(func(b *action.Action) { b.Digest = "e" }), "digest"},
		{"op before host", "h2", mod(func(b *action.Action) { b.Op = action.Destroy }), "op"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.Matches(tt.host, tt.a)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("got %v; want nil", err)
				}
				return
			}
			var me *signedop.MismatchError
			if !errors.As(err, &me) || me.Field != tt.field {
				t.Fatalf("got %v; want mismatch in %q", err, tt.field)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("mismatch error %q reveals a parameter value", err)
			}
		})
	}
	empty := action.Action{Op: action.Destroy, VMID: 101, Kind: guest.QEMU}
	q, _ := signedop.NewPayload("h", empty, time.Now(), time.Hour, "")
	if err := q.Matches("h", empty); err != nil {
		t.Errorf("nil params vs empty object: got %v; want nil", err)
	}
}

func FuzzParsePayload(f *testing.F) {
	f.Add(goldenPayload().Canonical())
	a := action.Action{Op: action.Destroy, VMID: 999999999, Kind: guest.LXC}
	p, _ := signedop.NewPayload("h", a, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), time.Second, "")
	f.Add(p.Canonical())
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{"digest":"","expires":"2030-01-01T00:00:01Z","host":"h","kind":"lxc","nonce":"00000000000000000000000000000000","not_before":"2030-01-01T00:00:00Z","op":"destroy","params":{"a":"\u0000"},"reason":"","v":1,"vmid":100}` + "\n"))
	f.Add([]byte("null"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := signedop.ParsePayload(b)
		if err != nil {
			return
		}
		c := p.Canonical()
		if !bytes.Equal(c, b) {
			t.Fatalf("accepted non-canonical input:\n in %q\nout %q", b, c)
		}
		q, err := signedop.ParsePayload(c)
		if err != nil {
			t.Fatalf("canonical form of an accepted payload rejected: %v", err)
		}
		if err := q.Matches(p.Host, p.Action()); err != nil {
			t.Fatalf("round trip changed payload: %v", err)
		}
	})
}
