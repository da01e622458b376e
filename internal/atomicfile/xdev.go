package atomicfile

import (
	"errors"
	"syscall"
)

// isCrossDevice reports whether err says a rename crossed file systems.
func isCrossDevice(err error) bool { return errors.Is(err, syscall.EXDEV) }
