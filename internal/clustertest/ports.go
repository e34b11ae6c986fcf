package clustertest

import (
	"fmt"
	"net"
	"strconv"
)

// freePort returns a loopback port that was free a moment ago for TCP, and
// for UDP too when udp is set (memberlist binds both). Another process may
// take it before the node binds it; Start retries once on
// "address already in use".
func freePort(udp bool) (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("clustertest: free port: %w", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if !udp {
			ln.Close()
			return port, nil
		}
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		ln.Close()
		if err == nil {
			pc.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("clustertest: no port free for both TCP and UDP")
}

// addrs are one node's listen addresses.
type addrs struct {
	ws, api, gossip, remote string
}

func freeAddrs() (addrs, error) {
	var ports [4]int
	for i := range ports {
		p, err := freePort(i == 2)
		if err != nil {
			return addrs{}, err
		}
		ports[i] = p
	}
	at := func(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }
	return addrs{ws: at(ports[0]), api: at(ports[1]), gossip: at(ports[2]), remote: at(ports[3])}, nil
}
