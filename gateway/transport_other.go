//go:build !linux

package gateway

import "errors"

// epollSupported: the epoll transport exists on Linux only.
const epollSupported = false

func newEpollTransport(*Server) (transport, error) {
	return nil, errors.New("gateway: the epoll transport needs Linux")
}

// pconn is the epoll transport's state in a session: none here.
type pconn struct{}
