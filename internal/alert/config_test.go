package alert

import (
	"strings"
	"testing"
	"time"
)

func TestParseDefaultsAndRoute(t *testing.T) {
	c, err := Parse([]byte(`
pending_after: 2h
sinks:
  ops: {type: webhook, url: "https://hooks.example.com/steward", secret: {file: /etc/steward/hook.key}}
  chat: {type: slack, url_secret: {env: SLACK_URL}}
  mail: {type: smtp, server: "smtp.example.com", from: "steward@example.com", to: ["ops@example.com"], username: u, password: {env: SMTP_PASSWORD}}
rules:
  - {events: [host.silent, receipts.broken], sinks: [ops, chat]}
  - {events: [host.silent], hosts: [pve-a], sinks: [chat, mail], dedup: 10m}
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Dedup != DefaultDedup || c.SilentIntervals != DefaultSilentIntervals || c.PendingAfter != 2*time.Hour {
		t.Fatalf("defaults: %+v", c)
	}
	got := c.Route(Alert{Event: HostSilent, Host: "pve-a"})
	want := []Target{{"chat", 10 * time.Minute}, {"mail", 10 * time.Minute}, {"ops", time.Hour}}
	if len(got) != len(want) {
		t.Fatalf("Route(pve-a silent): %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Route(pve-a silent): %v; want %v", got, want)
		}
	}
	if got := c.Route(Alert{Event: HostSilent, Host: "pve-b"}); len(got) != 2 {
		t.Fatalf("Route(pve-b silent): %v; want chat and ops", got)
	}
	if got := c.Route(Alert{Event: OpFailed, Host: "pve-a"}); len(got) != 0 {
		t.Fatalf("Route(op.failed): %v; want none", got)
	}
	if !c.Wants(ReceiptsBroken) || c.Wants(PendingWaiting) {
		t.Fatal("Wants")
	}
}

func TestParseErrors(t *testing.T) {
	sinks := "sinks:\n  ops: {type: webhook, url: \"https://h/\", secret: {value: k}}\n"
	for _, tt := range []struct{ doc, want string }{
		{"", "empty"},
		{sinks + "rules: [{events: [host.gone], sinks: [ops]}]", `unknown event "host.gone"`},
		{sinks + "rules: [{events: [host.silent], sinks: [pager]}]", `no sink named "pager"`},
		{sinks + "rules: [{events: [host.silent]}]", "needs events and sinks"},
		{sinks + "colour: blue", "field colour not found"},
		{"sinks:\n  ops: {type: webhook, url: \"https://h/\"}\n", "secret is required"},
		{"sinks:\n  ops: {type: webhook, url: \"https://h/\", secret: {value: a, env: B}}\n", "one of value, env or file"},
		{"sinks:\n  ops: {type: pager}\n", `unknown type "pager"`},
		{"sinks:\n  ops: {type: ntfy, url: \"ftp://h/\"}\n", "http(s) URL"},
		{"sinks:\n  m: {type: smtp, server: s, from: nobody, to: [a@b]}\n", `from: "nobody"`},
		{"sinks:\n  m: {type: smtp, server: s, from: a@b, to: [a@b], username: u}\n", "password is required"},
		{sinks + "dedup: -1h", "positive"},
		{"rules: []", "at least one sink"},
	} {
		_, err := Parse([]byte(tt.doc))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q): %v; want an error containing %q", tt.doc, err, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("sinks:\n  ops: {type: webhook, url: \"https://h/\", secret: {value: k}}\nrules: [{events: [host.silent], sinks: [ops]}]\n"))
	f.Add([]byte("sinks: {m: {type: smtp, server: s, from: a@b, to: [a@b]}}\nsilent_intervals: 2\n"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		// What parses routes only to sinks it has.
		for _, e := range Events {
			for _, tg := range c.Route(Alert{Event: e, Host: "h"}) {
				if _, ok := c.Sinks[tg.Sink]; !ok || tg.Dedup <= 0 {
					t.Fatalf("route to %+v", tg)
				}
			}
		}
	})
}
