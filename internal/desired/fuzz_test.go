package desired

import (
	"errors"
	"os"
	"testing"
)

// FuzzParse checks that Parse never panics, that it returns exactly one of a
// document or an error, that every error names a path or a line, and that
// an accepted document is valid and survives Validate.
func FuzzParse(f *testing.F) {
	fleet, err := os.ReadFile("testdata/fleet.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		string(fleet),
		"",
		"# comment\n",
		"apiVersion: steward/v1\nkind: Fleet\n",
		`{"apiVersion":"steward/v1","kind":"Fleet","hosts":{"h":{"guests":{"100":{"config":{"cores":2}}}}}}`,
		"apiVersion: steward/v1\nkind: Fleet\nhosts:\n  a: &x {}\n  b: *x\n",
		"apiVersion: steward/v1\nkind: Fleet\nhosts:\n  h:\n    guests:\n      100: {tags: [a, a], ignore: [x]}\n",
		"kind: [\n",
		"---\n---\n",
		"\xff\xfe",
		"apiVersion: steward/v1\nkind: Fleet\nhosts:\n  h:\n    guests:\n      100:\n        config: {memory: 1e400}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := Parse(data)
		if (doc == nil) == (err == nil) {
			t.Fatalf("got doc %v and err %v; want exactly one", doc, err)
		}
		if err != nil {
			var errs []error
			if u, ok := err.(interface{ Unwrap() []error }); ok {
				errs = u.Unwrap()
			} else {
				errs = []error{err}
			}
			for _, e := range errs {
				var fe *FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("error %q (%T) is not a *FieldError", e, e)
				}
				if fe.Path == "" && fe.Line <= 0 {
					t.Fatalf("error %q names neither a path nor a line", e)
				}
			}
			return
		}
		if err := doc.Validate(); err != nil {
			t.Fatalf("Parse accepted a document that Validate rejects: %v", err)
		}
	})
}
