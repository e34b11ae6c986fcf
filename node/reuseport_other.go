//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package node

import (
	"errors"
	"syscall"
)

const reusePortSupported = false

// setReusePort: Config.Validate refuses --reuse-port here first.
func setReusePort(_, _ string, _ syscall.RawConn) error {
	return errors.New("SO_REUSEPORT is not available on this system")
}
