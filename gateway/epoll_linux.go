//go:build linux

package gateway

// epollSupported: the epoll transport is being written; until it lands
// the goroutine transport is the only one.
const epollSupported = false

func newEpollTransport(*Server) (transport, error) {
	panic("gateway: epoll transport not implemented yet")
}
