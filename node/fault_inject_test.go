//go:build faultinject && !race

package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/wire"
)

// TestFaultStoreFailsWhileServing makes a commit fail as a failed fsync
// would (EIO, the faultinject hook) while two users send over real
// WebSockets: the senders in the failed batch get UNAVAILABLE, never an
// ack; nothing is acked after it; /readyz says the store failed; the node
// ends (Stop returns a *StoreFailedError: tandem exits 5); a restart on
// the same dir has every acked message, seqs consecutive, and takes the
// refused ones again.
func TestFaultStoreFailsWhileServing(t *testing.T) {
	dir := t.TempDir()
	n := startDF(t, dir)
	alice := dfDial(t, n, "alice", "a1")
	bob := dfDial(t, n, "bob", "b1")
	dfDial(t, n, "carol", "c1")
	l := newLedger()
	senders := map[string]*dfDevice{"alice": alice, "bob": bob}
	for name, d := range senders {
		for i := range 10 {
			if _, err := l.send(t, d, fmt.Sprintf("%s-before-%d", name, i), "carol"); err != nil {
				t.Fatal(err)
			}
		}
	}

	persistence.FailCommitsAfter(n.store.(*persistence.Local), 3)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var refusals []error
	for name, d := range senders {
		wg.Go(func() {
			for i := 0; ; i++ {
				_, err := l.send(t, d, fmt.Sprintf("%s-during-%d", name, i), "carol")
				if err != nil {
					mu.Lock()
					refusals = append(refusals, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range refusals {
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code() != wire.CodeUnavailable || ce.Wire.GetRetryAfterMs() != 2000 ||
			!strings.Contains(ce.Wire.GetMessage(), "storage failed") {
			t.Fatalf("send in or after the failed commit: %v, want UNAVAILABLE \"storage failed ...\" with retry_after_ms 2000", err)
		}
	}
	select {
	case <-n.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the node did not end within 5 s of the store failing")
	}
	code, body, _ := httpGet(t, "http://"+n.APIAddr()+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "store failed") {
		t.Fatalf("/readyz after the store failed: %d %s", code, body)
	}
	err := n.Stop()
	var sf *StoreFailedError
	if !errors.As(err, &sf) || !errors.Is(err, persistence.ErrStoreFailed) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Stop after the store failed: %v, want a *StoreFailedError wrapping EIO", err)
	}

	// Restart on the same dir: what was acked is there; the refused sends
	// are taken now (not duplicates: they were never stored).
	n2 := startDF(t, dir)
	alice2 := dfDial(t, n2, "alice", "a1")
	bob2 := dfDial(t, n2, "bob", "b1")
	senders = map[string]*dfDevice{"alice": alice2, "bob": bob2}
	l.mu.Lock()
	var retry []string
	for cmid := range l.refused {
		retry = append(retry, cmid)
	}
	l.mu.Unlock()
	if len(retry) < 1 {
		t.Fatal("no send refused")
	}
	for _, cmid := range retry {
		ack, err := l.send(t, senders[strings.SplitN(cmid, "-", 2)[0]], cmid, "carol")
		if err != nil || ack.GetDuplicate() {
			t.Fatalf("resend of %s after the restart: %v (duplicate %v)", cmid, err, ack.GetDuplicate())
		}
	}
	want := map[string]map[string]bool{"carol": {}, "alice": {}, "bob": {}}
	for cmid, ack := range l.acked {
		want["carol"][ack.GetMessageId()] = true
		want[strings.SplitN(cmid, "-", 2)[0]][ack.GetMessageId()] = true
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil && countMessages(t, n2, "carol") < len(l.acked) {
		time.Sleep(20 * time.Millisecond)
	}
	for user, w := range want {
		checkLogs(t, n2, user, w)
	}
	t.Logf("%d acked (%d refused, then resent after the restart)", len(l.acked), len(retry))
}
