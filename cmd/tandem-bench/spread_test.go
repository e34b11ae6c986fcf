package main

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/tandem-im/tandem/client"
)

func TestNodesOfPairs(t *testing.T) {
	// 10 pairs on 3 nodes: senders 4/3/3, receivers 3/4/3, every pair
	// across two nodes.
	const pairs, nodes = 10, 3
	var senders, receivers [nodes]int
	for i := range pairs {
		s, r := senderNode(i, nodes), receiverNode(i, nodes)
		senders[s]++
		receivers[r]++
		if s == r {
			t.Errorf("pair %d: sender and receiver both on node %d", i, s)
		}
	}
	if senders != [nodes]int{4, 3, 3} || receivers != [nodes]int{3, 4, 3} {
		t.Errorf("senders per node %v, receivers %v; want [4 3 3] and [3 4 3]", senders, receivers)
	}
	for i := range 5 {
		if s, r := senderNode(i, 1), receiverNode(i, 1); s != 0 || r != 0 {
			t.Errorf("one node: pair %d on %d and %d", i, s, r)
		}
	}
}

func TestDeviceURLs(t *testing.T) {
	for n := 1; n <= 5; n++ {
		urls := make([]string, n)
		for i := range urls {
			urls[i] = fmt.Sprintf("ws://127.0.0.1:%d/ws", 7400+10*i)
		}
		for node := range n {
			for k := range 20 {
				tok := fmt.Sprintf("token-%d", k)
				got := deviceURLs(urls, node, deviceID, tok)
				// The client starts at its hashed index: that must be the node.
				if s := clientStartIndex(deviceID, tok, n); got[s] != urls[node] {
					t.Fatalf("n=%d node=%d %s: start %d is %s, want %s", n, node, tok, s, got[s], urls[node])
				}
				// A rotation of urls: the same cyclic order, every URL once.
				i := slices.Index(got, urls[0])
				for j := range n {
					if got[(i+j)%n] != urls[j] {
						t.Fatalf("n=%d node=%d %s: %v is not a rotation of %v", n, node, tok, got, urls)
					}
				}
			}
		}
	}
}

// TestDeviceURLsWithClient checks the copy of the client's start index
// against the client itself: with every endpoint refusing connections,
// Dial reports each failed attempt but the last (OnReconnect), the first
// one on the endpoint it started at.
func TestDeviceURLsWithClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	const n = 3
	urls := make([]string, n)
	for i := range urls {
		urls[i] = fmt.Sprintf("ws://%s/ws%d", addr, i) // refused: nobody listens
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for node := range n {
		for k := range 4 {
			tok := fmt.Sprintf("token-%d-%d", node, k)
			var first string
			_, err := client.Dial(ctx, client.Options{
				URLs:     deviceURLs(urls, node, deviceID, tok),
				Token:    tok,
				DeviceID: deviceID,
				OnReconnect: func(ev client.ReconnectEvent) {
					if first == "" && ev.Kind == client.ReconnectFailed {
						first = ev.URL
					}
				},
			})
			if err == nil {
				t.Fatal("Dial succeeded with nobody listening")
			}
			if first != urls[node] {
				t.Errorf("node %d, %s: the client dialled %s first, want %s", node, tok, first, urls[node])
			}
		}
	}
}
