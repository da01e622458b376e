package pveschema

import (
	"fmt"
	"regexp"
	"strings"
)

// compilePerl compiles a Perl regular expression as PVE writes them in the
// schema into Go's RE2 syntax, keeping Perl's meaning where it differs:
// "$" outside a character class matches at the end or before a final
// newline; "(?^:...)" (a stringified qr//) is a plain group; "\0" is NUL;
// "\Z" is end-or-before-final-newline.
func compilePerl(pat string) (*regexp.Regexp, error) {
	var b strings.Builder
	inClass := false
	for i := 0; i < len(pat); i++ {
		c := pat[i]
		switch {
		case c == '\\' && i+1 < len(pat):
			n := pat[i+1]
			switch {
			case n == '0' && !(i+2 < len(pat) && pat[i+2] >= '0' && pat[i+2] <= '7'):
				b.WriteString(`\x00`)
			case n == 'Z' && !inClass:
				b.WriteString(`(?:\n?\z)`)
			default:
				b.WriteByte(c)
				b.WriteByte(n)
			}
			i++
		case inClass:
			if c == ']' {
				inClass = false
			}
			b.WriteByte(c)
		case c == '[':
			inClass = true
			b.WriteByte(c)
			if i+1 < len(pat) && pat[i+1] == '^' {
				b.WriteByte('^')
				i++
			}
			if i+1 < len(pat) && pat[i+1] == ']' {
				b.WriteString(`\]`)
				i++
			}
		case c == '{' && i+1 < len(pat) && pat[i+1] == ',':
			// Perl 5.34+ reads {,n} as {0,n}; Go would take it literally.
			j := i + 2
			for j < len(pat) && pat[j] >= '0' && pat[j] <= '9' {
				j++
			}
			if j > i+2 && j < len(pat) && pat[j] == '}' {
				b.WriteString("{0")
			} else {
				b.WriteByte(c)
			}
		case c == '$':
			b.WriteString(`(?:\n?\z)`)
		case c == '(' && strings.HasPrefix(pat[i:], "(?^"):
			// (?^flags:  -> (?flags:  dropping Perl-only charset flags.
			j := i + 3
			var flags []byte
			for j < len(pat) && pat[j] != ':' && pat[j] != ')' {
				if strings.IndexByte("imsU", pat[j]) >= 0 {
					flags = append(flags, pat[j])
				}
				j++
			}
			b.WriteString("(?")
			b.Write(flags)
			i = j - 1
		default:
			b.WriteByte(c)
		}
	}
	re, err := regexp.Compile(b.String())
	if err != nil && bigRepeatRE.MatchString(b.String()) {
		// RE2 caps repeat counts at 1000; Perl does not. Relax {m,n} with
		// n > 1000 to {m,} (only POST/PUT /access/users "keys" has one).
		re, err = regexp.Compile(bigRepeatRE.ReplaceAllStringFunc(b.String(), relaxRepeat))
	}
	if err != nil {
		return nil, fmt.Errorf("pveschema: perl pattern %q: %w", pat, err)
	}
	return re, nil
}

var bigRepeatRE = regexp.MustCompile(`\{([0-9]+),([0-9]{4,})\}`)

func relaxRepeat(s string) string {
	m := bigRepeatRE.FindStringSubmatch(s)
	return "{" + m[1] + ",}"
}

func mustPerl(pat string) *regexp.Regexp {
	re, err := compilePerl(pat)
	if err != nil {
		panic(err)
	}
	return re
}
