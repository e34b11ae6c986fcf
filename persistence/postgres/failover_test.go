package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tandem-im/tandem/internal/pgtest"
	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/persistence/postgres"
)

// writer is a simulated user actor: it appends to its user's log in
// windows of pipelined appends and records what was acked. On a failure
// it activates again (retrying until the store answers, as a restarted
// actor would) and goes on after the last durable seq.
type writer struct {
	user string

	mu         sync.Mutex
	acked      map[persistence.Seq]string // seq → data of every acked append
	violations []string                   // completions out of order, successes after a failure
}

func (w *writer) ackedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *writer) run(ctx context.Context, s persistence.Store, window int) {
	var epoch persistence.Epoch
	var next persistence.Seq
	activate := func() bool {
		for ctx.Err() == nil {
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			e, last, err := s.Activate(actx, w.user, "writer")
			cancel()
			if err == nil {
				epoch, next = e, last+1
				return true
			}
			time.Sleep(20 * time.Millisecond)
		}
		return false
	}
	if !activate() {
		return
	}
	for ctx.Err() == nil {
		type result struct {
			data string
			err  error
		}
		results := make([]result, window)
		var done sync.WaitGroup
		calls := 0
		for i := range window {
			seq := next + persistence.Seq(i)
			results[i].data = fmt.Sprintf("%s#%d@%d", w.user, seq, epoch)
			done.Add(1)
			s.Append(persistence.AppendRequest{User: w.user, Epoch: epoch,
				Entries: []persistence.Entry{{Seq: seq, TimeMS: time.Now().UnixMilli(), Data: []byte(results[i].data)}}},
				func(err error) {
					if calls != i { // done callbacks run on one goroutine: calls needs no lock
						w.mu.Lock()
						w.violations = append(w.violations, fmt.Sprintf("seq %d completed as number %d of its window", seq, calls))
						w.mu.Unlock()
					}
					calls++
					results[i].err = err
					done.Done()
				})
		}
		done.Wait()
		failed := false
		w.mu.Lock()
		for i, r := range results {
			seq := next + persistence.Seq(i)
			switch {
			case r.err == nil && failed:
				w.violations = append(w.violations, fmt.Sprintf("seq %d acked after an earlier append of the window failed", seq))
			case r.err == nil:
				w.acked[seq] = r.data
			default:
				failed = true
			}
		}
		w.mu.Unlock()
		if failed {
			if !activate() {
				return
			}
			continue
		}
		next += persistence.Seq(window)
	}
}

// startWriters runs n writers until the returned stop is called; stop
// waits for them and returns them.
func startWriters(s persistence.Store, n, window int) (ws []*writer, stop func() []*writer) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		w := &writer{user: fmt.Sprint("writer", i), acked: map[persistence.Seq]string{}}
		ws = append(ws, w)
		wg.Go(func() { w.run(ctx, s, window) })
	}
	return ws, func() []*writer {
		cancel()
		wg.Wait()
		return ws
	}
}

// waitAcked waits until every writer has at least min acked appends.
func waitAcked(t *testing.T, ws []*writer, min func(*writer) int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, w := range ws {
		for w.ackedCount() < min(w) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d acked after %v, want %d", w.user, w.ackedCount(), within, min(w))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// checkDurable checks that every acked append is in the log with its data,
// and that the log is dense.
func checkDurable(t *testing.T, s persistence.Store, ws []*writer) {
	t.Helper()
	for _, w := range ws {
		for _, v := range w.violations {
			t.Errorf("%s: %s", w.user, v)
		}
		got, err := s.Read(t.Context(), w.user, 0, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		log := map[persistence.Seq]string{}
		for i, e := range got {
			if e.Seq != persistence.Seq(i+1) {
				t.Fatalf("%s: entry %d has seq %d", w.user, i, e.Seq)
			}
			log[e.Seq] = string(e.Data)
		}
		for seq, data := range w.acked {
			if log[seq] != data {
				t.Errorf("%s: acked seq %d = %q is %q in the log", w.user, seq, data, log[seq])
			}
		}
		t.Logf("%s: %d acked, %d in the log", w.user, len(w.acked), len(got))
	}
}

// TestServerKilledDuringCommits: the server is killed (kill -9) while
// writers append. Appends in flight fail (none is reported as success
// after its user saw a failure), nothing hangs, and after the server
// restarts every acked append is there.
func TestServerKilledDuringCommits(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a server of its own")
	}
	srv := pgtest.Start(t)
	url := srv.URL("postgres")
	// The failures are expected: not logged.
	s := openStore(t, url, postgres.Options{CommitTimeout: 5 * time.Second, ConnectTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	ws, stop := startWriters(s, 8, 8)
	waitAcked(t, ws, func(*writer) int { return 40 }, 30*time.Second)
	srv.Kill()
	time.Sleep(300 * time.Millisecond)
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("writers still waiting 30 s after the server was killed")
	}
	if st := s.Stats(); st.Failed == 0 {
		t.Errorf("stats %+v: no append failed after the kill", st)
	}

	// Close with appends queued and the server gone: every done is called,
	// with an error, and Close returns.
	var r results
	for i := range 1000 {
		r.submit(s, persistence.AppendRequest{User: ws[i%len(ws)].user, Epoch: 1, Entries: entry(persistence.Seq(i+1), []byte("late"))})
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for i, err := range r.wait(t) {
		if err == nil {
			t.Fatalf("append %d acked with the server down", i)
		}
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Close with the server down took %v", took)
	}

	srv.Restart(t)
	checkDurable(t, openStore(t, url, postgres.Options{}), ws)
}

// TestFailover: with a synchronous standby and a multi-host URL
// (target_session_attrs=read-write), the primary is killed and the standby
// promoted while writers append: the store reconnects to the new primary,
// the writers go on after activating again, and no acked append is lost.
func TestFailover(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a primary and a standby of its own")
	}
	primary := pgtest.Start(t)
	standby := pgtest.StartStandby(t, primary)
	url := pgtest.URLs("postgres", primary, standby)
	s := openStore(t, url, postgres.Options{CommitTimeout: 5 * time.Second, ConnectTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	ws, stop := startWriters(s, 8, 8)
	waitAcked(t, ws, func(*writer) int { return 40 }, 30*time.Second)

	before := map[*writer]int{}
	for _, w := range ws {
		before[w] = w.ackedCount()
	}
	start := time.Now()
	primary.Kill()
	standby.Promote(t)
	waitAcked(t, ws, func(w *writer) int { return before[w] + 40 }, 30*time.Second)
	t.Logf("every writer acked 40 more appends %v after the kill", time.Since(start).Round(time.Millisecond))
	stop()

	checkDurable(t, openStore(t, standby.URL("postgres"), postgres.Options{}), ws)
}
