//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package node

import (
	"syscall"

	"golang.org/x/sys/unix"
)

const reusePortSupported = true

// setReusePort is a net.ListenConfig.Control that sets SO_REUSEPORT on
// the socket before it is bound.
func setReusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}
