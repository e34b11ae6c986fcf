package main

import "hash/fnv"

// Spreading the devices over the nodes of a cluster.
//
// Every device gets all the nodes' URLs, so a reconnect can move it like
// any client's, but rotated so that its first login lands on the node
// chosen for it: sender i on node i%N and its receiver on node (i+1)%N,
// so with N > 1 every message enters the cluster on one node and leaves
// it on another. The client starts a device with a static token at a
// hashed offset in its list (client.startIndex); the rotation puts the
// chosen node at that offset. setup checks with Client.URL where each
// device really logged in, and the result reports it (Placement).

// senderNode and receiverNode are the nodes pair i's devices start on.
func senderNode(i, nodes int) int   { return i % nodes }
func receiverNode(i, nodes int) int { return (i + 1) % nodes }

// deviceURLs is urls rotated so that a client with this device ID and
// static token logs in first at urls[node], then goes on through the
// others in their order.
func deviceURLs(urls []string, node int, deviceID, token string) []string {
	n := len(urls)
	start := clientStartIndex(deviceID, token, n)
	out := make([]string, n)
	for k := range out {
		out[(start+k)%n] = urls[(node+k)%n]
	}
	return out
}

// clientStartIndex mirrors client.startIndex for a static token: the
// offset in a list of n URLs where the client dials first. The client's
// own behaviour is what counts; TestDeviceURLsWithClient checks that
// this copy matches it.
func clientStartIndex(deviceID, token string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(deviceID))
	h.Write([]byte{0})
	h.Write([]byte(token))
	return int(h.Sum64() % uint64(n))
}
