package hub

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzSafeNext: wherever a login's next parameter points, the browser
// goes to a dashboard path of this hub, never to another site.
func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"/ui/", "/ui/hosts/pve-a", "//evil.example/", "https://evil.example/ui/", "/ui/\\\\evil", "/\\evil", "/ui/login?next=//x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, next string) {
		got := safeNext(next)
		u, err := url.Parse(got)
		if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(got, "/ui/") || strings.HasPrefix(got, "//") || strings.ContainsAny(got, "\\\r\n") {
			t.Fatalf("safeNext(%q) = %q: not a path of the dashboard", next, got)
		}
	})
}

// FuzzSameOrigin: only an Origin naming the request's own host passes.
func FuzzSameOrigin(f *testing.F) {
	for _, s := range []string{"http://hub:8440", "https://hub:8440", "null", "http://hub:8440.evil", "http://evil@hub:8440", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, origin string) {
		r := httptest.NewRequest("POST", "http://hub:8440/ui/logout", nil)
		r.Header.Set("Origin", origin)
		if !sameOrigin(r) {
			return
		}
		u, err := url.Parse(origin)
		if err != nil || !strings.EqualFold(u.Host, "hub:8440") {
			t.Fatalf("Origin %q passed for host hub:8440", origin)
		}
	})
}

// FuzzLineDiff: the diff's kept and removed lines are the old text, its
// kept and added lines the new one.
func FuzzLineDiff(f *testing.F) {
	f.Add("a\nb\nc\n", "a\nc\nd\n")
	f.Add("", "x\n")
	f.Add("x\ny", "y\nx")
	f.Fuzz(func(t *testing.T, a, b string) {
		if len(a) > 4096 || len(b) > 4096 {
			return
		}
		var olds, news []string
		for _, l := range lineDiff(a, b) {
			switch l.Op {
			case " ":
				olds, news = append(olds, l.Text), append(news, l.Text)
			case "-":
				olds = append(olds, l.Text)
			case "+":
				news = append(news, l.Text)
			default:
				t.Fatalf("op %q", l.Op)
			}
		}
		if got, want := strings.Join(olds, "\n"), strings.Join(splitLines(a), "\n"); got != want {
			t.Fatalf("old side %q; want %q", got, want)
		}
		if got, want := strings.Join(news, "\n"), strings.Join(splitLines(b), "\n"); got != want {
			t.Fatalf("new side %q; want %q", got, want)
		}
	})
}
