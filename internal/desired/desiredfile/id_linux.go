package desiredfile

import (
	"io/fs"
	"syscall"
	"time"
)

func idOf(st fs.FileInfo) fileID {
	id := fileID{size: st.Size(), mtime: st.ModTime(), mode: st.Mode()}
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		id.ctime = time.Unix(s.Ctim.Unix())
		id.ino, id.dev = s.Ino, s.Dev
	}
	return id
}
