package pve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/steward-pve/steward/internal/guest"
)

// PVE's JSON types follow Perl's internal scalar state, not the schema:
// the same field arrives as 106 or "106", booleans as 0/1 or true/false,
// and absent or null where the schema says it is present. The flex types
// below accept every form seen in captured responses; a value of a kind
// that cannot mean a number (an object, say) is still an error.

// flexInt decodes a JSON number, a numeric string, a boolean (1/0) or null
// (0). A fractional number is rounded up, so "cpus": 1.5 counts as 2.
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	v, err := parseFlexNumber(b)
	if err != nil {
		return err
	}
	if v != math.Trunc(v) {
		v = math.Ceil(v)
	}
	if v > math.MaxInt64 || v < math.MinInt64 {
		return fmt.Errorf("pve: number %s out of range", b)
	}
	*f = flexInt(v)
	return nil
}

// flexFloat decodes a JSON number, a numeric string ("3400.000"), a boolean
// or null (0).
type flexFloat float64

func (f *flexFloat) UnmarshalJSON(b []byte) error {
	v, err := parseFlexNumber(b)
	if err != nil {
		return err
	}
	*f = flexFloat(v)
	return nil
}

func parseFlexNumber(b []byte) (float64, error) {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		return 0, errors.New("pve: empty JSON value where a number was expected")
	case string(b) == "null":
		return 0, nil
	case string(b) == "true":
		return 1, nil
	case string(b) == "false":
		return 0, nil
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return 0, fmt.Errorf("pve: bad JSON string %s: %w", truncate(string(b), 40), err)
		}
		s = strings.TrimSpace(s)
		if s == "" {
			return 0, nil
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, fmt.Errorf("pve: got %q where a number was expected", truncate(s, 40))
		}
		return v, nil
	case b[0] == '-' || (b[0] >= '0' && b[0] <= '9'):
		v, err := strconv.ParseFloat(string(b), 64)
		if err != nil {
			return 0, fmt.Errorf("pve: bad JSON number %s", truncate(string(b), 40))
		}
		return v, nil
	}
	return 0, fmt.Errorf("pve: got %s where a number was expected", truncate(string(b), 40))
}

// flexBool decodes 0/1, true/false, "0"/"1", "" and null (false). Any
// non-zero number is true, as in Perl.
type flexBool bool

func (f *flexBool) UnmarshalJSON(b []byte) error {
	v, err := parseFlexNumber(b)
	if err != nil {
		return fmt.Errorf("pve: got %s where a boolean was expected", truncate(string(b), 40))
	}
	*f = v != 0
	return nil
}

// flexString decodes a JSON string, or a number or boolean as its text
// (numbers verbatim, booleans as "1"/"0"); null is "".
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	s, err := scalarText(b)
	if err != nil {
		return err
	}
	*f = flexString(s)
	return nil
}

// scalarText renders a JSON scalar as the string PVE means by it.
func scalarText(b []byte) (string, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "", errors.New("pve: empty JSON value")
	}
	switch c := b[0]; {
	case c == '"':
		if len(b) >= 2 && b[len(b)-1] == '"' && bytes.IndexByte(b, '\\') < 0 && utf8.Valid(b) {
			return string(b[1 : len(b)-1]), nil
		}
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return "", fmt.Errorf("pve: bad JSON string: %w", err)
		}
		return s, nil
	case c == 'n':
		if string(b) == "null" {
			return "", nil
		}
	case c == 't':
		if string(b) == "true" {
			return "1", nil
		}
	case c == 'f':
		if string(b) == "false" {
			return "0", nil
		}
	case c == '-' || (c >= '0' && c <= '9'):
		return numberText(b)
	}
	return "", fmt.Errorf("pve: got %s where a string was expected", truncate(string(b), 40))
}

// numberText returns a JSON number as a decimal string: integers and plain
// decimals verbatim, exponent forms expanded (PVE does not send those, but
// "1e3" must not reach a comparison as "1e3").
func numberText(b []byte) (string, error) {
	if !json.Valid(b) {
		return "", fmt.Errorf("pve: bad JSON number %s", truncate(string(b), 40))
	}
	if bytes.IndexAny(b, "eE") < 0 {
		return string(b), nil
	}
	v, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return "", fmt.Errorf("pve: bad JSON number %s", truncate(string(b), 40))
	}
	return strconv.FormatFloat(v, 'f', -1, 64), nil
}

// GuestConfig is a guest's configuration as GET …/config returns it.
//
// Values holds every key PVE sent except "digest": disks, mount points,
// unusedN, pending-applied values and keys steward does not know yet.
// Strings are kept verbatim (property strings, a description's trailing
// newline), numbers as their decimal text ("memory": 8192 and "8192" both
// give "8192"), JSON booleans as "1"/"0", null as "", and nested arrays or
// objects (the raw "lxc" key of a container) as their compact JSON text.
// Digest is the config's SHA-1 digest; pass it back on writes so a
// concurrent change makes the write fail instead of being overwritten.
type GuestConfig struct {
	Digest string
	Values guest.Config
}

// DecodeConfig decodes the data member of a GET …/config response (the
// JSON object itself, without the {"data": …} envelope). It fails on
// anything but a JSON object of scalars, arrays and objects, or on a
// non-string digest; it never drops a key.
func DecodeConfig(data []byte) (GuestConfig, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return GuestConfig{}, fmt.Errorf("pve: guest config is not a JSON object: %w", err)
	}
	if raw == nil {
		return GuestConfig{}, errors.New("pve: guest config is null")
	}
	gc := GuestConfig{Values: make(guest.Config, len(raw))}
	for k, v := range raw {
		if k == "digest" {
			if len(v) == 0 || v[0] != '"' {
				return GuestConfig{}, fmt.Errorf("pve: guest config digest is %s, want a string", truncate(string(v), 40))
			}
			s, err := scalarText(v)
			if err != nil {
				return GuestConfig{}, fmt.Errorf("pve: guest config digest: %w", err)
			}
			gc.Digest = s
			continue
		}
		if len(v) > 0 && (v[0] == '[' || v[0] == '{') {
			var buf bytes.Buffer
			if err := json.Compact(&buf, v); err != nil {
				return GuestConfig{}, fmt.Errorf("pve: guest config key %q: %w", k, err)
			}
			gc.Values[k] = buf.String()
			continue
		}
		s, err := scalarText(v)
		if err != nil {
			return GuestConfig{}, fmt.Errorf("pve: guest config key %q: %w", k, err)
		}
		gc.Values[k] = s
	}
	return gc, nil
}

// envelope is PVE's success body. Total is set by list endpoints that page.
type envelope[T any] struct {
	Data  T        `json:"data"`
	Total *flexInt `json:"total,omitempty"`
}

// errorBody is PVE's error body: {"data":null} plus optional errors and
// message (libpve-http-server-perl ≥ 5.2.0).
type errorBody struct {
	Errors  map[string]flexString `json:"errors"`
	Message flexString            `json:"message"`
}
