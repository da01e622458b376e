package journal

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/steward-pve/steward/internal/frame"
)

// Format constants; see the package doc.
const (
	headerSize      = 12
	frameHeaderSize = frame.HeaderSize
	formatVersion   = 1
	// maxPayload bounds one record so that a damaged length field cannot
	// make Open allocate or skip gigabytes.
	maxPayload = 16 << 20
)

var magic = [8]byte{'S', 'T', 'W', 'D', 'J', 'R', 'N', 'L'}

// fileHeader returns the 12-byte header of a version-1 journal.
func fileHeader() []byte {
	h := make([]byte, headerSize)
	copy(h, magic[:])
	binary.LittleEndian.PutUint32(h[8:], formatVersion)
	return h
}

type recordType byte

const (
	typeBegin      recordType = 1
	typeTask       recordType = 2
	typeEnd        recordType = 3
	typeDecision   recordType = 4
	typeCompleted  recordType = 5
	typeProvenance recordType = 6
	typeSnapshot   recordType = 7
	typeMark       recordType = 8
)

func (t recordType) String() string {
	switch t {
	case typeBegin:
		return "begin"
	case typeTask:
		return "task"
	case typeEnd:
		return "end"
	case typeDecision:
		return "decision"
	case typeCompleted:
		return "completed"
	case typeProvenance:
		return "provenance"
	case typeSnapshot:
		return "snapshot"
	case typeMark:
		return "mark"
	}
	return fmt.Sprintf("type %d", byte(t))
}

type taskRecord struct {
	ID   string    `json:"id"`
	UPID string    `json:"upid"`
	Time time.Time `json:"time"`
}

type endRecord struct {
	ID     string    `json:"id"`
	Time   time.Time `json:"time"`
	Result Result    `json:"result"`
}

type completedRecord struct {
	ID           string    `json:"id"`
	IdemKey      string    `json:"idem_key"`
	VMID         int       `json:"vmid"`
	Time         time.Time `json:"time"`
	Result       Result    `json:"result"`
	UPID         string    `json:"upid,omitempty"`
	Nonce        string    `json:"nonce,omitempty"`
	NonceExpires time.Time `json:"nonce_expires,omitzero"`
}

type provenanceRecord struct {
	VMID     int       `json:"vmid"`
	CreateOp string    `json:"create_op"`
	Failed   bool      `json:"failed,omitempty"`
	Time     time.Time `json:"time"`
	Remains  string    `json:"remains,omitempty"`
	Started  bool      `json:"started,omitempty"`
}

// markRecord is written by compaction after the records that rebuild
// the state: Seq is the number of the last begin, task, end or decision
// record appended before it (see Event.Seq), so the ones appended after it
// are numbered on from there.
type markRecord struct {
	Seq uint64 `json:"seq"`
}

// record is one decoded record; exactly the field matching Type is set.
type record struct {
	Type       recordType
	Begin      *Op
	Task       *taskRecord
	End        *endRecord
	Decision   *Decision
	Completed  *completedRecord
	Provenance *provenanceRecord
	Snapshot   *Snapshot
	Mark       *markRecord
}

// body returns the struct that is the JSON body of r.
func (r record) body() (any, error) {
	var b any
	switch r.Type {
	case typeBegin:
		b = r.Begin
	case typeTask:
		b = r.Task
	case typeEnd:
		b = r.End
	case typeDecision:
		b = r.Decision
	case typeCompleted:
		b = r.Completed
	case typeProvenance:
		b = r.Provenance
	case typeSnapshot:
		b = r.Snapshot
	case typeMark:
		b = r.Mark
	default:
		return nil, fmt.Errorf("journal: unknown record type %d", byte(r.Type))
	}
	if b == nil {
		return nil, fmt.Errorf("journal: %v record without a body", r.Type)
	}
	return b, nil
}

// encodePayload returns the payload (type byte + JSON body) of r.
func encodePayload(r record) ([]byte, error) {
	b, err := r.body()
	if err != nil {
		return nil, err
	}
	js, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("journal: encode %v record: %w", r.Type, err)
	}
	p := make([]byte, 0, 1+len(js))
	p = append(p, byte(r.Type))
	p = append(p, js...)
	if len(p) > maxPayload {
		return nil, fmt.Errorf("journal: %v record is %d bytes, more than the %d-byte limit; shorten the action's parameters", r.Type, len(p), maxPayload)
	}
	return p, nil
}

// appendFrame appends the framed payload (package frame) to dst.
func appendFrame(dst, payload []byte) []byte { return frame.Append(dst, payload) }

// frames is the journal's frame format. Every payload this package writes
// is a known type byte followed by a JSON object; checking that first
// keeps the search for a valid record after a bad one from checksumming
// at every offset.
var frames = frame.Format{Min: 3, Max: maxPayload, Plausible: func(p []byte) bool {
	return p[0] >= byte(typeBegin) && p[0] <= byte(typeMark) && p[1] == '{' && p[len(p)-1] == '}'
}}

// encodeFrame returns r framed for the file.
func encodeFrame(r record) ([]byte, error) {
	p, err := encodePayload(r)
	if err != nil {
		return nil, err
	}
	return appendFrame(make([]byte, 0, frameHeaderSize+len(p)), p), nil
}

// decodePayload decodes a payload whose checksum has been verified. It is
// strict: unknown types, unknown JSON fields, trailing data and records
// missing their identifying fields are errors.
func decodePayload(p []byte) (record, error) {
	if len(p) == 0 {
		return record{}, errors.New("empty payload")
	}
	r := record{Type: recordType(p[0])}
	var dst any
	switch r.Type {
	case typeBegin:
		r.Begin = new(Op)
		dst = r.Begin
	case typeTask:
		r.Task = new(taskRecord)
		dst = r.Task
	case typeEnd:
		r.End = new(endRecord)
		dst = r.End
	case typeDecision:
		r.Decision = new(Decision)
		dst = r.Decision
	case typeCompleted:
		r.Completed = new(completedRecord)
		dst = r.Completed
	case typeProvenance:
		r.Provenance = new(provenanceRecord)
		dst = r.Provenance
	case typeSnapshot:
		r.Snapshot = new(Snapshot)
		dst = r.Snapshot
	case typeMark:
		r.Mark = new(markRecord)
		dst = r.Mark
	default:
		return record{}, fmt.Errorf("unknown record type %d", p[0])
	}
	dec := json.NewDecoder(bytes.NewReader(p[1:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return record{}, fmt.Errorf("%v record: %w", r.Type, err)
	}
	if dec.More() || dec.InputOffset() != int64(len(p)-1) {
		return record{}, fmt.Errorf("%v record: trailing data after the JSON body", r.Type)
	}
	if err := r.validate(); err != nil {
		return record{}, err
	}
	return r, nil
}

// validate checks the fields every record of r's type must have.
func (r record) validate() error {
	switch r.Type {
	case typeBegin:
		if r.Begin.ID == "" {
			return errors.New("begin record without an op id")
		}
	case typeTask:
		if r.Task.ID == "" || r.Task.UPID == "" {
			return errors.New("task record without an op id or UPID")
		}
	case typeEnd:
		if r.End.ID == "" {
			return errors.New("end record without an op id")
		}
	case typeCompleted:
		if r.Completed.ID == "" || r.Completed.IdemKey == "" {
			return errors.New("completed record without an op id or idempotency key")
		}
	case typeProvenance:
		if r.Provenance.CreateOp == "" {
			return errors.New("provenance record without a create op id")
		}
	case typeSnapshot:
		return validateSnapshot(r.Snapshot)
	}
	return nil
}

// CorruptError reports a journal file that cannot be trusted: damage that
// is not a torn tail. It wraps ErrCorrupt.
type CorruptError struct {
	Path   string // the journal file
	Offset int64  // byte offset of the bad record (or 0 for a bad header)
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("journal: corrupt record at offset %d of %s: %s; the journal holds in-flight ops and idempotency keys, so inspect the file (or restore it from a backup) rather than deleting it", e.Offset, e.Path, e.Reason)
}

// Unwrap returns ErrCorrupt.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// decoded is the result of reading a journal file.
type decoded struct {
	records []record
	offsets []int // file offset of each record
	// end is the offset just after the last whole record; bytes from end to
	// the end of the data are a torn tail.
	end int
	// tornHeader reports a file shorter than the header whose bytes are a
	// prefix of it: a crash while the file was being created.
	tornHeader bool
}

// decodeFile checks the header and frames of data. It returns a
// *CorruptError (with an empty Path) for damage that is not a torn tail.
func decodeFile(data []byte) (decoded, error) {
	h := fileHeader()
	if len(data) < headerSize {
		if bytes.HasPrefix(h, data) {
			return decoded{tornHeader: true}, nil
		}
		return decoded{}, &CorruptError{Reason: "file is shorter than the header and does not start with the journal magic"}
	}
	if !bytes.Equal(data[:8], magic[:]) {
		return decoded{}, &CorruptError{Reason: fmt.Sprintf("bad magic %q; this is not a steward journal", data[:8])}
	}
	if v := binary.LittleEndian.Uint32(data[8:]); v != formatVersion {
		return decoded{}, &CorruptError{Offset: 8, Reason: fmt.Sprintf("format version %d, this steward reads version %d; run the steward version that wrote it", v, formatVersion)}
	}
	d := decoded{}
	decodable := func(p []byte) bool { _, err := decodePayload(p); return err == nil }
	end, err := frames.Scan(data, headerSize, func(off int, p []byte) error {
		r, err := decodePayload(p)
		if err != nil {
			return &CorruptError{Offset: int64(off), Reason: err.Error()}
		}
		d.records = append(d.records, r)
		d.offsets = append(d.offsets, off)
		return nil
	}, decodable)
	var de *frame.DamageError
	switch {
	case errors.As(err, &de):
		return decoded{}, &CorruptError{Offset: int64(de.Offset), Reason: fmt.Sprintf("bad length or checksum, yet a valid record follows at offset %d", de.Next)}
	case err != nil:
		return decoded{}, err
	}
	d.end = end // bytes after end are a torn tail
	return d, nil
}
