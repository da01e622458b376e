package wire_test

import (
	"reflect"
	"testing"

	"github.com/steward-pve/steward/internal/wire"
)

// fuzzDecode checks, for any input a decoder accepts, that the decoded
// value encodes and decodes again to the same value: nothing a peer sends
// is accepted in a form this package cannot reproduce.
func fuzzDecode[T any](f *testing.F, seed func() (T, error), enc func(T) ([]byte, error), dec func([]byte) (T, error)) {
	if v, err := seed(); err == nil {
		if b, err := enc(v); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := dec(b)
		if err != nil {
			return
		}
		out, err := enc(v)
		if err != nil {
			t.Fatalf("accepted input does not encode: %v", err)
		}
		again, err := dec(out)
		if err != nil {
			t.Fatalf("re-encoding of an accepted input is refused: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(v, again) {
			t.Fatalf("round trip changed the value:\n%#v\n%#v", v, again)
		}
	})
}

func FuzzDecodeReport(f *testing.F) {
	fuzzDecode(f, func() (wire.Report, error) { return sampleReport(), nil }, wire.EncodeReport, wire.DecodeReport)
}

func FuzzDecodeControl(f *testing.F) {
	fuzzDecode(f, func() (wire.Control, error) { return sampleControl(), nil }, wire.EncodeControl, wire.DecodeControl)
}

func FuzzDecodeDesired(f *testing.F) {
	fuzzDecode(f, func() (wire.Desired, error) { return sampleDesired(), nil }, wire.EncodeDesired, wire.DecodeDesired)
}

func FuzzDecodeReceipts(f *testing.F) {
	fuzzDecode(f, func() (wire.Receipts, error) { return sampleReceipts(), nil }, wire.EncodeReceipts, wire.DecodeReceipts)
}

func FuzzDecodeJobResults(f *testing.F) {
	fuzzDecode(f, func() (wire.JobResults, error) { return sampleJobResults(), nil }, wire.EncodeJobResults, wire.DecodeJobResults)
}
