//go:build !linux

package desiredfile

import "io/fs"

// idOf uses size, mtime and mode only; the racy-window rule and the
// content hash cover what ctime and the inode would add.
func idOf(st fs.FileInfo) fileID {
	return fileID{size: st.Size(), mtime: st.ModTime(), mode: st.Mode()}
}
