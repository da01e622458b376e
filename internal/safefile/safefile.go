// Package safefile reads files that operators (or anyone who can write to
// the directories they point the agent at) control: the desired-state
// file, signed jobs and their signatures, allowed_signers, the signing
// policy, the PVE token and CA files, pending payloads. Such a path may
// name anything, and a careless or hostile entry must never hang or kill
// the reader:
//
//   - A FIFO would block open(2) until a writer appears, forever. Files are
//     opened with O_RDONLY|O_NONBLOCK|O_CLOEXEC|O_NOCTTY, so the open
//     returns at once whatever the file is.
//   - A device (/dev/zero, /dev/urandom, a tty), socket or directory is
//     refused: only regular files are read. The type is checked with
//     stat(2) before the open (so a device is normally never opened at
//     all) and again with fstat(2) on the open descriptor (so a path
//     swapped between the two checks is still caught).
//   - A huge file is refused with an error naming the file, its size and
//     the limit; at most limit+1 bytes are ever read, even from a file
//     that grows while it is read.
//
// # Symlinks
//
// ReadFile follows symbolic links; what it checks is the target, which
// must be a regular file. Configuration files are legitimately symlinks
// (a desired.yaml deployed by configuration management, a CA bundle
// linked from /etc/pve), and what makes a symlink dangerous here is its
// target's type and size, both of which are checked on the opened
// descriptor. ReadFileNoFollow refuses a symlink in the last path
// component (O_NOFOLLOW): it is for directories whose entries are data
// dropped by a program, not configuration (the signed-jobs inbox, the
// agent's own pending payloads), where a symlink has no legitimate use
// and would let whoever can write the directory make the agent read a
// file they cannot read themselves.
//
// The package is Unix-only (O_NONBLOCK, O_NOFOLLOW), like the agent.
package safefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// NotRegularError is a path that names something other than a regular
// file (after following symlinks, for ReadFile).
type NotRegularError struct {
	Path string
	Mode fs.FileMode // the type found; fs.ModeSymlink for a refused symlink
}

func (e *NotRegularError) Error() string {
	return fmt.Sprintf("%s is %s, not a regular file; replace it with a regular file", e.Path, describe(e.Mode))
}

// TooLargeError is a file larger than the limit the caller allowed.
// Size is the size fstat reported, or, when the file grew past the limit
// while it was read, the number of bytes read (limit+1).
type TooLargeError struct {
	Path  string
	Size  int64
	Limit int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s is %d bytes; at most %d allowed", e.Path, e.Size, e.Limit)
}

// describe names a file type for humans.
func describe(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "not a regular file (" + m.Type().String() + ")"
}

// ReadFile returns the contents of the regular file at path (following
// symlinks), at most limit bytes. It never blocks on a FIFO or device and
// never reads more than limit+1 bytes. Errors name the path: a
// *NotRegularError, a *TooLargeError, or the *fs.PathError of the failed
// open, stat or read (errors.Is(err, fs.ErrNotExist) works). Messages
// start with the path, like *fs.PathError's, so callers add their own
// context without a "safefile:" prefix in between. limit must be positive.
func ReadFile(path string, limit int64) ([]byte, error) {
	return read(path, limit, false)
}

// ReadFileNoFollow is ReadFile refusing a symlink as the last path
// component with a *NotRegularError whose Mode is fs.ModeSymlink.
func ReadFileNoFollow(path string, limit int64) ([]byte, error) {
	return read(path, limit, true)
}

// Stat returns the FileInfo of the regular file at path (following
// symlinks), or the error ReadFile would give for a file that is not one.
// It opens nothing.
func Stat(path string) (fs.FileInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, &NotRegularError{Path: path, Mode: st.Mode().Type()}
	}
	return st, nil
}

func read(path string, limit int64, noFollow bool) ([]byte, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("safefile: reading %s: limit %d is not positive", path, limit)
	}
	// The stat before the open keeps devices from ever being opened
	// (opening some has side effects); the fstat after it is the check
	// that counts.
	stat := os.Stat
	if noFollow {
		stat = os.Lstat
	}
	if st, err := stat(path); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, &NotRegularError{Path: path, Mode: st.Mode().Type()}
	}
	flags := os.O_RDONLY | syscall.O_NONBLOCK | syscall.O_CLOEXEC | syscall.O_NOCTTY
	if noFollow {
		flags |= syscall.O_NOFOLLOW
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		if noFollow && errors.Is(err, syscall.ELOOP) {
			return nil, &NotRegularError{Path: path, Mode: fs.ModeSymlink}
		}
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, &NotRegularError{Path: path, Mode: st.Mode().Type()}
	}
	if st.Size() > limit {
		return nil, &TooLargeError{Path: path, Size: st.Size(), Limit: limit}
	}
	buf := make([]byte, 0, min(st.Size(), limit)+1)
	data, err := readAll(f, buf, limit+1)
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: path, Err: err}
	}
	if int64(len(data)) > limit {
		return nil, &TooLargeError{Path: path, Size: int64(len(data)), Limit: limit}
	}
	return data, nil
}

// readAll appends up to max bytes of r to buf.
func readAll(r io.Reader, buf []byte, max int64) ([]byte, error) {
	lr := io.LimitReader(r, max)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
