//go:build !linux

package gateway

// epollSupported: the epoll transport exists on Linux only.
const epollSupported = false

func newEpollTransport(*Server) (transport, error) {
	panic("gateway: epoll transport on a system without epoll")
}
