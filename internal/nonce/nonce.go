// Package nonce is the agent's durable record of signed-operation nonces
// already consumed, so a signed job runs at most once, also across agent
// restarts.
//
// # On-disk format
//
// The store is one append-only file, nonces.log, in the store's directory.
// It starts with the 8-byte magic "STWNONC2" and continues with records
// framed as every steward log is (package frame: uint32 little-endian
// length, uint32 little-endian CRC-32C, payload); a record's payload is
//
//	int64 little-endian  expiry (Unix seconds)
//	bytes                the nonce (1..MaxNonceLen printable ASCII bytes)
//
// testdata/nonces-v2.golden pins the bytes. A version-1 store (magic
// "STWNONC1", the same records with every integer big-endian) is read and
// rewritten as version 2 by Open, so existing state directories keep
// working.
//
// Use appends a record and fsyncs the file before it returns, so an
// acknowledged nonce survives a crash. On Open a torn tail (a short record,
// a bad length or a CRC mismatch with no decodable record after it, as a
// crash mid-append leaves behind) is cut off: everything before it is kept
// and the file is truncated to the last good record. A bad record followed
// by a good one is damage to acknowledged data: Open fails with a
// *CorruptError and changes nothing. Expired nonces are forgotten in memory at every
// Use; the file is compacted (rewritten to the live set with package
// atomicfile: temp file, fsync, rename, fsync of the directory) on Open
// and whenever it holds more than twice as many records as are live, so it
// stays bounded by Max.
//
// The store is bounded: once Max unexpired nonces are held, Use refuses new
// nonces with ErrFull rather than forgetting one that could still be
// replayed. Capacity frees up as nonces expire.
//
// One process may open a directory at a time; the store does not lock the
// directory against a second process.
package nonce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/steward-pve/steward/internal/atomicfile"
	"github.com/steward-pve/steward/internal/frame"
)

// FileName is the store's file inside its directory.
const FileName = "nonces.log"

// MaxNonceLen bounds the length of one nonce in bytes.
const MaxNonceLen = 128

// DefaultMax is Options.Max when it is zero.
const DefaultMax = 100000

const (
	magic     = "STWNONC2"
	magicV1   = "STWNONC1"
	headerLen = 8
	minRecord = 8 // expiry
)

// records is the frame format of a version-2 store.
var records = frame.Format{Min: minRecord + 1, Max: minRecord + MaxNonceLen}

var (
	// ErrReplayed is returned by Use for a nonce already used and not yet
	// expired: the signed operation it belongs to must not run again.
	ErrReplayed = errors.New("nonce: already used (replayed)")
	// ErrFull is returned by Use when the store holds Max unexpired nonces.
	// The operation must be refused; retry after older nonces expire or
	// raise the limit.
	ErrFull = errors.New("nonce: store full of unexpired nonces; refusing new signed operations until some expire")
)

// ErrCorrupt is wrapped by the *CorruptError Open returns.
var ErrCorrupt = errors.New("nonce: store corrupt")

// castagnoli is the CRC table of version-1 records.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options configure a Store. The zero value is usable.
type Options struct {
	// Max is the most unexpired nonces held at once; 0 means DefaultMax.
	Max int
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Store is a durable set of used nonces with expiries. Its methods are safe
// for concurrent use.
type Store struct {
	dir string
	max int
	now func() time.Time

	mu      sync.Mutex
	f       *os.File
	live    map[string]int64 // nonce → expiry, Unix seconds
	records int              // records in the file, live or not
	closed  bool
}

// Open opens or creates the store in dir (created with mode 0700 if
// missing), loading every unexpired nonce. A torn tail is repaired; any
// other read failure is an error, and the caller must not run signed
// operations without a store.
func Open(dir string, opts Options) (*Store, error) {
	if opts.Max < 0 {
		return nil, fmt.Errorf("nonce: Max %d is negative", opts.Max)
	}
	if opts.Max == 0 {
		opts.Max = DefaultMax
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nonce: create store directory: %w", err)
	}
	s := &Store{dir: dir, max: opts.Max, now: opts.Now, live: make(map[string]int64)}
	path := filepath.Join(dir, FileName)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("nonce: read %s: %w", path, err)
	default:
		if err := s.load(path, data); err != nil {
			return nil, err
		}
	}
	// Start from a compact file: this drops expired records and any torn tail.
	if err := s.rewriteLocked(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) load(path string, data []byte) error {
	if len(data) < headerLen {
		if len(data) == 0 || string(data) == magic[:len(data)] || string(data) == magicV1[:len(data)] {
			return nil // crashed while creating: empty store
		}
		return fmt.Errorf("nonce: %s is not a nonce store (bad header); move it aside if it is not needed", path)
	}
	now := s.now().Unix()
	keep := func(nonce string, exp int64) {
		if exp > now {
			s.live[nonce] = exp
		}
	}
	switch string(data[:headerLen]) {
	case magic:
		_, err := records.Scan(data, headerLen, func(_ int, p []byte) error {
			keep(string(p[8:]), int64(binary.LittleEndian.Uint64(p[:8])))
			return nil
		}, nil)
		var de *frame.DamageError
		if errors.As(err, &de) {
			return &CorruptError{Path: path, Offset: int64(de.Offset)}
		}
		return err
	case magicV1:
		return s.loadV1(path, data, keep)
	}
	return fmt.Errorf("nonce: %s is not a nonce store (bad header); move it aside if it is not needed", path)
}

// loadV1 reads a version-1 store (big-endian frames); Open then rewrites
// it as version 2.
func (s *Store) loadV1(path string, data []byte, keep func(string, int64)) error {
	rest := data[headerLen:]
	for len(rest) > 0 {
		nonce, exp, n, ok := decodeRecordV1(rest)
		if !ok {
			off := len(data) - len(rest)
			if decodableAfterV1(rest) {
				return &CorruptError{Path: path, Offset: int64(off)}
			}
			break // torn tail (nothing decodable after it): never acknowledged
		}
		rest = rest[n:]
		keep(nonce, exp)
	}
	return nil
}

// decodableAfterV1 reports whether a valid version-1 record starts
// anywhere after the first byte of b.
func decodableAfterV1(b []byte) bool {
	for i := 1; i+8 < len(b); i++ {
		if _, _, _, ok := decodeRecordV1(b[i:]); ok {
			return true
		}
	}
	return false
}

// CorruptError is a nonce store damaged other than by a torn final
// append: a record before the end fails its checksum or framing. Open
// refuses it rather than forget nonces that may have been spent; it wraps
// ErrCorrupt.
type CorruptError struct {
	Path   string
	Offset int64
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("nonce: %s is damaged at offset %d (a record before the end is unreadable), so spent nonces could be forgotten; "+
		"move the file aside and restart: the agent rebuilds the store from its journal, which records the nonce of every signed op", e.Path, e.Offset)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// decodeRecordV1 decodes one version-1 record (big-endian length and
// CRC-32C, big-endian expiry).
func decodeRecordV1(b []byte) (nonce string, exp int64, n int, ok bool) {
	if len(b) < 8 {
		return "", 0, 0, false
	}
	l := binary.BigEndian.Uint32(b[0:4])
	if l < minRecord+1 || l > minRecord+MaxNonceLen || uint64(len(b)-8) < uint64(l) {
		return "", 0, 0, false
	}
	payload := b[8 : 8+l]
	if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(b[4:8]) {
		return "", 0, 0, false
	}
	return string(payload[8:]), int64(binary.BigEndian.Uint64(payload[:8])), 8 + int(l), true
}

// encodeRecord returns the version-2 record of nonce, expiring at exp.
func encodeRecord(nonce string, exp int64) []byte {
	p := binary.LittleEndian.AppendUint64(make([]byte, 0, 8+len(nonce)), uint64(exp))
	return frame.Append(nil, append(p, nonce...))
}

// Use records nonce as used until expires. It returns nil only after the
// record is durable on disk. It returns ErrReplayed if nonce is held and
// not expired, ErrFull if the store is at capacity, and an error for a
// nonce that is empty, longer than MaxNonceLen or not printable ASCII, for
// an expiry not in the future, or for an I/O failure (the nonce then counts
// as not used, and the operation must not run).
func (s *Store) Use(nonce string, expires time.Time) error {
	if err := validNonce(nonce); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("nonce: store is closed")
	}
	now := s.now().Unix()
	exp := expires.Unix()
	if expires.Sub(time.Unix(exp, 0)) > 0 {
		exp++ // round up: never forget a nonce early
	}
	if exp <= now {
		return fmt.Errorf("nonce: expiry %s is not in the future", expires.UTC().Format(time.RFC3339))
	}
	s.pruneLocked(now)
	if old, ok := s.live[nonce]; ok && old > now {
		return ErrReplayed
	}
	if len(s.live) >= s.max {
		return ErrFull
	}
	if s.records >= 2*len(s.live)+64 {
		if err := s.rewriteLocked(); err != nil {
			return err
		}
	}
	if _, err := s.f.Write(encodeRecord(nonce, exp)); err != nil {
		return fmt.Errorf("nonce: append to %s: %w", s.f.Name(), err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("nonce: fsync %s: %w", s.f.Name(), err)
	}
	s.records++
	s.live[nonce] = exp
	return nil
}

// Used reports whether nonce is held and not expired. It does not block
// on I/O.
func (s *Store) Used(nonce string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.live[nonce]
	return ok && exp > s.now().Unix()
}

// Full reports whether the store holds Max unexpired nonces, so that Use
// of a new one would fail with ErrFull.
func (s *Store) Full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(s.now().Unix())
	return len(s.live) >= s.max
}

// Len returns how many unexpired nonces the store holds.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(s.now().Unix())
	return len(s.live)
}

// Close closes the store's file. Use after Close returns an error.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.f.Close()
}

func (s *Store) pruneLocked(now int64) {
	for n, exp := range s.live {
		if exp <= now {
			delete(s.live, n)
		}
	}
}

// rewriteLocked replaces the file with one holding exactly the live set,
// in version 2 (atomicfile: temp file, fsync, rename, fsync directory);
// then reopens it for appending.
func (s *Store) rewriteLocked() error {
	path := filepath.Join(s.dir, FileName)
	b := make([]byte, 0, headerLen+len(s.live)*(frame.HeaderSize+8+32))
	b = append(b, magic...)
	for _, n := range slices.Sorted(maps.Keys(s.live)) {
		b = append(b, encodeRecord(n, s.live[n])...)
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("nonce: compact: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("nonce: reopen %s: %w", path, err)
	}
	if s.f != nil {
		s.f.Close()
	}
	s.f = f
	s.records = len(s.live)
	return nil
}

func validNonce(n string) error {
	if n == "" {
		return errors.New("nonce: empty nonce")
	}
	if len(n) > MaxNonceLen {
		return fmt.Errorf("nonce: nonce is %d bytes; at most %d allowed", len(n), MaxNonceLen)
	}
	if !utf8.ValidString(n) {
		return errors.New("nonce: nonce is not valid UTF-8")
	}
	for i := 0; i < len(n); i++ {
		if n[i] < 0x21 || n[i] > 0x7e {
			return fmt.Errorf("nonce: nonce has a non-printable or non-ASCII byte at offset %d", i)
		}
	}
	return nil
}

var _ io.Closer = (*Store)(nil)
