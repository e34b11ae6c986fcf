//go:build !race

package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/internal/clustertest"
	"github.com/tandem-im/tandem/proto/wire"
)

// TestGroupNodeLoss: a group whose members are spread over 3 nodes, two
// members sending to it continuously; kill -9 one node. Every acked group
// message is in every member's log exactly once afterwards (read through a
// survivor by fresh devices): fan-outs the dead node had pending — as the
// group's node or a sender's — are re-driven by the survivors.
func TestGroupNodeLoss(t *testing.T) {
	c, _ := pgCluster(t, 3, "grouploss")
	var members []string
	for i := range 12 {
		members = append(members, fmt.Sprintf("gm%d", i))
	}
	// Three groups, so that one of them is likely placed on the node
	// that dies.
	groups := []string{"team-a", "team-b", "team-c"}
	for _, g := range groups {
		body := fmt.Sprintf(`{"group_id":%q,"members":["%s"]}`, g, strings.Join(members, `","`))
		req, _ := http.NewRequest("POST", c.Node(0).APIURL()+"/v1/groups", bytes.NewReader([]byte(body)))
		req.Header.Set("Authorization", "Bearer "+clustertest.AdminKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("create group %s: %v %v", g, err, resp)
		}
		resp.Body.Close()
	}

	// Two senders, each on its own node, sending to every group in turn.
	type ack struct{ group, id string }
	var (
		mu     sync.Mutex
		acked  []ack
		failed int
		stop   = make(chan struct{})
		wg     sync.WaitGroup
	)
	for s, from := range []string{"gm0", "gm1"} {
		urls := c.WSURLs()
		urls = append(urls[s:], urls[:s]...)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cl, err := client.Dial(ctx, client.Options{URLs: urls, Token: c.Token(from), DeviceID: "sender", Platform: "linux",
			Reconnect: true, BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				g := groups[n%len(groups)]
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				a, err := cl.Send(ctx, &wire.Send{ClientMessageId: fmt.Sprintf("%s-%d", from, n), Type: 1, Content: []byte("hi"),
					Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: g}})
				cancel()
				mu.Lock()
				if err != nil {
					failed++
				} else {
					acked = append(acked, ack{g, a.GetMessageId()})
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	time.Sleep(3 * time.Second)
	c.Kill(1)
	time.Sleep(6 * time.Second)
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(acked) == 0 {
		t.Fatal("no group message was acked")
	}
	// Every member's log, through node 2, until every acked message is
	// there (the fan-out completes after the ack), at most 30 s.
	deadline := time.Now().Add(30 * time.Second)
	for _, m := range members {
		for {
			got, err := groupMessageIDs(c, c.Node(2).WSURL(), m)
			if err != nil {
				t.Fatal(err)
			}
			missing := 0
			for _, a := range acked {
				switch got[a.id] {
				case 0:
					missing++
				case 1:
				default:
					t.Fatalf("%s's log has group message %s %d times", m, a.id, got[a.id])
				}
			}
			if missing == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's log misses %d of %d acked group messages", m, missing, len(acked))
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	t.Logf("group node loss: %d group messages acked (%d sends failed, never acked), each in all %d members' logs exactly once", len(acked), failed, len(members))
}

// groupMessageIDs reads user's whole log with a fresh device at wsURL and
// counts the group messages in it by message ID; it checks that the log
// is dense.
func groupMessageIDs(c *clustertest.Cluster, wsURL, user string) (map[string]int, error) {
	entries, err := clustertest.ReadLog(wsURL, c.Token(user), user)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	seqs := make([]uint64, 0, len(entries))
	for _, e := range entries {
		seqs = append(seqs, e.GetSeq())
		if m := e.GetMessage(); m != nil && m.GetConversation().GetType() == wire.Conversation_GROUP {
			out[m.GetMessageId()]++
		}
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			return nil, fmt.Errorf("%s's log: entry %d has seq %d (seqs %v…)", user, i, s, seqs[:min(len(seqs), 10)])
		}
	}
	return out, nil
}
