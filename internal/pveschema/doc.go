// Package pveschema exposes the official PVE API schema (pve-docs
// apidata.js, embedded as apidata.json) and validates request parameters
// against it the way PVE's PVE::JSONSchema does, with PVE's messages. The
// simulator's request validation is derived from it, not written by hand.
//
// Contract:
//
//	func Load() (*Schema, error)            // embedded schema, parsed once; safe for concurrent use
//	func (s *Schema) Lookup(httpMethod, path string) (m *Method, pathVars map[string]string, ok bool)
//	    // path is below /api2/json, e.g. "/nodes/pve/qemu/101/config"
//	func (m *Method) Validate(params map[string]any) Errors
//	    // params: merged path+query+body parameters. A string value came from
//	    // form/query encoding (booleans must be "0"/"1"); json.Number, bool,
//	    // string, []any, map[string]any came from a JSON body.
//	type Errors map[string]string // param name -> PVE message; empty means valid
//
// Validation follows PVE::JSONSchema::check_prop in order and wording: a
// missing required parameter, then the type check, then the format (named
// formats and property strings), the regex pattern (anchored as PVE does,
// m/^$pattern$/, with Perl's "$" semantics), maxLength, minLength,
// maximum/minimum (only for number-looking values), and the enumeration.
// Each parameter yields at most one message, except where PVE itself joins
// several (a "requires" violation is added to the required parameter's
// entry, joined with a literal backslash-n as PVE's add_error does).
// Messages for format errors end in "\n", as PVE sends them.
//
// Numbered parameters are spelled as in the schema ("net[n]"); a concrete
// name such as "net0" matches when its index is canonical decimal and within
// the range the schema's description states ("n is 0 to 30") or, where the
// description is silent, PVE's constant for that key (see numberedMax).
//
// Named formats registered outside what this package implements (see
// FormatChecked) are accepted without a check: the package never invents a
// rule PVE does not have.
//
// The package is pure: it reads only the embedded schema and does no I/O.
package pveschema
