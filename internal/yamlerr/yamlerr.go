// Package yamlerr turns the syntax errors of go.yaml.in/yaml/v3 into a
// line number and a message, with the line made exact.
//
// yaml.v3 formats a syntax error as "yaml: line N: problem". For errors
// of its scanner N is 1-based, but for errors of its parser (an unclosed
// flow mapping, a key at the wrong indentation) N is the 0-based line of
// the construct being parsed (or, for a construct on the first line, of
// where the problem was found), so it names the line before. The two
// kinds have disjoint messages, so the parser's are recognised by text
// and shifted by one. The package is pure (no I/O).
package yamlerr

import (
	"strconv"
	"strings"
)

// parserProblems are the problem texts of yaml.v3's parser (parserc.go);
// every other problem comes from its scanner.
var parserProblems = []string{
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"did not find expected '-' indicator",
	"did not find expected <document start>",
	"did not find expected <stream-start>",
	"did not find expected key",
	"did not find expected node content",
	"found duplicate %TAG directive",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found undefined tag handle",
}

// Syntax returns the exact 1-based line and the problem text of a yaml.v3
// syntax error. An error that names no line is about line 1. msg never
// starts with "yaml: ".
func Syntax(err error) (line int, msg string) {
	msg = strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if i := strings.Index(rest, ": "); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil {
				line, msg = n, rest[i+2:]
			}
		}
	}
	if isParserProblem(msg) {
		line++
	}
	if line <= 0 {
		line = 1
	}
	return line, msg
}

func isParserProblem(msg string) bool {
	for _, p := range parserProblems {
		if msg == p {
			return true
		}
	}
	return false
}
