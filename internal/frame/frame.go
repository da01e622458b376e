// Package frame is the record framing of steward's durable logs (the
// journal and the nonce store): one format, one byte order, one torn-tail
// rule, after etcd's WAL.
//
// A frame is
//
//	uint32 little-endian  payload length n
//	uint32 little-endian  CRC-32C (Castagnoli) of the payload
//	payload               n bytes
//
// A log appends frames and fsyncs before it acknowledges one, so only the
// last frame can be incomplete after a crash. Scan reads frames in order
// and tells the two kinds of bad frame apart: a torn tail (nothing valid
// follows it: a crash mid-append, never acknowledged, safe to cut off) and
// damage (a valid frame follows: acknowledged data was lost, and the log
// must be refused rather than silently forget it).
//
// The package is pure: it works on byte slices; the logs do the file I/O.
package frame

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// HeaderSize is the size of a frame's length and checksum.
const HeaderSize = 8

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Append appends payload, framed, to dst.
func Append(dst, payload []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(payload, castagnoli))
	return append(dst, payload...)
}

// Format is what one log accepts as a frame. Min and Max bound the
// payload length (so a damaged length field cannot make a reader skip or
// allocate gigabytes); Plausible, when set, is a cheap check of a payload
// made before its checksum, so that searching for a valid frame after a
// bad one does not checksum at every offset.
type Format struct {
	Min, Max  int
	Plausible func(payload []byte) bool
}

// At returns the payload of the frame at data[off:] when a whole frame is
// there, within f's bounds, plausible and with a matching checksum.
func (f Format) At(data []byte, off int) (payload []byte, ok bool) {
	if off < 0 || len(data)-off < HeaderSize {
		return nil, false
	}
	n := binary.LittleEndian.Uint32(data[off:])
	if uint64(n) < uint64(f.Min) || uint64(n) > uint64(f.Max) || uint64(len(data)-off-HeaderSize) < uint64(n) {
		return nil, false
	}
	p := data[off+HeaderSize : off+HeaderSize+int(n)]
	if f.Plausible != nil && !f.Plausible(p) {
		return nil, false
	}
	if crc32.Checksum(p, castagnoli) != binary.LittleEndian.Uint32(data[off+4:]) {
		return nil, false
	}
	return p, true
}

// DamageError is a bad frame that a valid frame follows: acknowledged
// data is lost. Offset is the bad frame's, Next the valid one's.
type DamageError struct {
	Offset, Next int
}

func (e *DamageError) Error() string {
	return fmt.Sprintf("frame: bad length or checksum at offset %d, yet a valid record follows at offset %d", e.Offset, e.Next)
}

// Scan reads the frames of data from off in order, calling record with
// each frame's offset and payload; an error from record stops the scan and
// is returned. At a bad frame it looks for a later frame that valid
// accepts (valid nil: any frame At accepts): if there is one, the bad
// frame is damage and Scan returns a *DamageError; if not, it is a torn
// tail and Scan stops there without error. end is the offset just after
// the last frame read: bytes from end on are the torn tail.
func (f Format) Scan(data []byte, off int, record func(off int, payload []byte) error, valid func(payload []byte) bool) (end int, err error) {
	end = off
	for off < len(data) {
		p, ok := f.At(data, off)
		if !ok {
			if next, found := f.validAfter(data, off, valid); found {
				return end, &DamageError{Offset: off, Next: next}
			}
			return end, nil
		}
		if err := record(off, p); err != nil {
			return end, err
		}
		off += HeaderSize + len(p)
		end = off
	}
	return end, nil
}

// validAfter reports the offset of the first frame after off that At and
// valid accept.
func (f Format) validAfter(data []byte, off int, valid func([]byte) bool) (int, bool) {
	for i := off + 1; i+HeaderSize < len(data); i++ {
		if p, ok := f.At(data, i); ok && (valid == nil || valid(p)) {
			return i, true
		}
	}
	return 0, false
}
