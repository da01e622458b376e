package agent

import (
	"testing"

	"github.com/steward-pve/steward/internal/frame"
	"github.com/steward-pve/steward/internal/wire"
)

// sampleLog is a receipt log of n begin receipts, a break, and a mark.
func sampleLog(n int) []byte {
	var es []logEntry
	for i := 1; i <= n; i++ {
		es = append(es, logEntry{Receipt: receiptOf(beginEvent(i)), JSeq: uint64(i)})
	}
	es = append(es, logEntry{Receipt: wire.Receipt{Time: beginEvent(n + 1).Time, Type: wire.ReceiptBreak, Reason: "set aside"}, JSeq: uint64(n)},
		logEntry{Mark: true, JSeq: uint64(n)})
	chainEntries(0, wire.ZeroHash, es)
	var data []byte
	for _, e := range es {
		b, _ := e.encode()
		data = frame.Append(data, b)
	}
	return data
}

// FuzzParseReceiptLog: the receipt log reader never panics or hangs on
// any bytes (the log is a file anyone with the state directory can
// damage); what it accepts is whole frames whose receipts chain, and
// reading the accepted prefix again gives the same entries.
func FuzzParseReceiptLog(f *testing.F) {
	good := sampleLog(3)
	f.Add(good)
	f.Add(good[:len(good)-3])
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 4
	f.Add(flipped)
	f.Add([]byte{})
	f.Add(frame.Append(nil, []byte(`{"mark":true,"jseq":7}`)))
	f.Add(frame.Append(nil, []byte(`{"seq":0,"type":"begin"}`)))
	f.Add(frame.Append(nil, []byte(`{}`)))
	f.Fuzz(func(t *testing.T, data []byte) {
		es, end, err := parseReceiptLog(data)
		if err != nil {
			return
		}
		if end < 0 || end > len(data) {
			t.Fatalf("end %d outside the %d bytes", end, len(data))
		}
		rs := receiptsOf(es)
		if len(rs) > 0 {
			if _, _, err := wire.VerifyChain(rs[0].Seq-1, rs[0].Prev, rs); err != nil {
				t.Fatalf("accepted receipts that do not chain: %v", err)
			}
		}
		again, end2, err := parseReceiptLog(data[:end])
		if err != nil || end2 != end || len(again) != len(es) {
			t.Fatalf("the accepted prefix read again: %d entries, end %d, %v; want %d, %d", len(again), end2, err, len(es), end)
		}
	})
}
