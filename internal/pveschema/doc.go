// Package pveschema exposes the official PVE API schema (pve-docs
// apidata.js, embedded as apidata.json) and validates request parameters
// against it the way PVE's JSONSchema.pm does, with PVE's messages. The
// simulator's request validation is derived from it, not written by hand.
//
// Contract (implemented in this package):
//
//	func Load() (*Schema, error)            // embedded schema, parsed once; safe for concurrent use
//	func (s *Schema) Lookup(httpMethod, path string) (m *Method, pathVars map[string]string, ok bool)
//	    // path is below /api2/json, e.g. "/nodes/pve/qemu/101/config"
//	func (m *Method) Validate(params map[string]any) Errors
//	    // params: merged path+query+body parameters. A string value came from
//	    // form/query encoding (booleans must be "0"/"1"); json.Number, bool,
//	    // string, []any, map[string]any came from a JSON body.
//	type Errors map[string]string // param name -> PVE message; empty means valid
package pveschema
