// Package atomicfile replaces small files so that readers, and a machine
// that loses power at any instant, see either the old content or the new
// content in full, never a mix or a truncated file.
//
// The sequence is the classic one: create a temporary file in the target's
// directory, write, fsync the file, rename it over the target, fsync the
// directory so the rename itself is durable. On any error before the rename
// the temporary file is removed and the target is untouched.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// Write atomically replaces the file at path with data and permission bits
// perm (not subject to the umask). The file is durable when Write returns
// nil.
//
// If path exists it must be a regular file; a symlink, directory or device
// is refused rather than replaced. On error the target keeps its previous
// content unless the error says the directory sync failed, in which case the
// new content is in place but its durability is not guaranteed. Temporary
// files are named "."+base+".tmp*" in the same directory; a crash between
// create and rename can leave one behind, which the caller may remove.
//
// Write is safe for concurrent use; concurrent writers to one path each
// produce a complete file and the last rename wins.
func Write(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, nil)
}

// write is Write with a hook called before each step; a non-nil error from
// the hook fails that step. Tests use it to drive every failure path on a
// real file system.
func write(path string, data []byte, perm os.FileMode, hook func(step string) error) (err error) {
	step := func(name string) error {
		if hook == nil {
			return nil
		}
		return hook(name)
	}
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("atomicfile: %s exists and is not a regular file (mode %v); remove it or choose another path", path, fi.Mode().Type())
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("atomicfile: %w", err)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if err := step("create"); err != nil {
		return fmt.Errorf("atomicfile: create temporary file in %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("atomicfile: create temporary file in %s: %w", dir, err)
	}
	tmp := f.Name()
	closed, renamed := false, false
	defer func() {
		if err != nil && !renamed {
			if !closed {
				f.Close()
			}
			os.Remove(tmp)
		}
	}()
	if err = step("write"); err == nil {
		_, err = f.Write(data)
	}
	if err != nil {
		return fmt.Errorf("atomicfile: write %s: %w", tmp, err)
	}
	if err = step("chmod"); err == nil {
		err = f.Chmod(perm)
	}
	if err != nil {
		return fmt.Errorf("atomicfile: chmod %s: %w", tmp, err)
	}
	if err = step("sync"); err == nil {
		err = f.Sync()
	}
	if err != nil {
		return fmt.Errorf("atomicfile: fsync %s: %w", tmp, err)
	}
	closed = true
	if err = step("close"); err == nil {
		err = f.Close()
	} else {
		f.Close()
	}
	if err != nil {
		return fmt.Errorf("atomicfile: close %s: %w", tmp, err)
	}
	if err = step("rename"); err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("atomicfile: rename %s to %s: %w", tmp, path, err)
	}
	// The rename happened: the temporary name no longer exists and the
	// target holds the new content, so the deferred cleanup must not run.
	// A directory sync failure is still reported: the rename may not be
	// durable.
	renamed = true
	if serr := step("syncdir"); serr != nil {
		return fmt.Errorf("atomicfile: fsync directory %s after replacing %s: %w", dir, path, serr)
	}
	if serr := syncDir(dir); serr != nil {
		return fmt.Errorf("atomicfile: fsync directory %s after replacing %s: %w", dir, path, serr)
	}
	return nil
}

// syncDir makes a rename in dir durable. Windows cannot fsync a directory
// and does not need to: NTFS journals the rename.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Move moves the regular file at src to dst, which must not exist, and
// makes the move durable: both directories are synced before Move returns
// nil. Within one file system it is a rename, so at any instant the file
// is in exactly one of the two places. Across file systems (EXDEV) it
// writes a durable copy at dst with src's permission bits, then removes
// src: a crash in between leaves the file in both places, never in
// neither.
func Move(src, dst string) error {
	st, err := os.Lstat(src)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("atomicfile: %s is not a regular file", src)
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("atomicfile: moving %s: %s already exists", src, dst)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := rename(src, dst); err != nil {
		var le *os.LinkError
		if !errors.As(err, &le) || !isCrossDevice(le.Err) {
			return err
		}
		data, rerr := os.ReadFile(src)
		if rerr != nil {
			return rerr
		}
		if err := Write(dst, data, st.Mode().Perm()); err != nil {
			return err
		}
		if err := os.Remove(src); err != nil {
			return err
		}
	} else if err := syncDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("atomicfile: syncing %s after moving %s there: %w", filepath.Dir(dst), filepath.Base(src), err)
	}
	if err := syncDir(filepath.Dir(src)); err != nil {
		return fmt.Errorf("atomicfile: syncing %s after moving %s out: %w", filepath.Dir(src), filepath.Base(src), err)
	}
	return nil
}
