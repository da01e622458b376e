package atomicfile

import (
	"errors"
	"os"
	"syscall"
)

// rename is os.Rename; tests replace it to take Move's cross-device path.
var rename = os.Rename

// isCrossDevice reports whether err says a rename crossed file systems.
func isCrossDevice(err error) bool { return errors.Is(err, syscall.EXDEV) }
