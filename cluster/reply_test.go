package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// replyEcho answers each string with itself and its sender's RequestId,
// after holding it for the time the string's "slow" prefix asks.
type replyEcho struct{}

func (replyEcho) Receive(ctx actor.Context) {
	m, ok := ctx.Message().(*wrapperspb.StringValue)
	if !ok {
		return
	}
	if m.Value == "slow" {
		time.Sleep(150 * time.Millisecond)
	}
	ctx.Respond(wrapperspb.String(fmt.Sprintf("%s#%d", m.Value, ctx.Sender().GetRequestId())))
}

// recordingSender is a SenderContext that notes the reply PID a request
// went with.
type recordingSender struct {
	actor.SenderContext
	reply *actor.PID
}

func (s *recordingSender) RequestWithCustomSender(pid *actor.PID, message any, sender *actor.PID) {
	s.reply = sender
	s.SenderContext.RequestWithCustomSender(pid, message, sender)
}

// Every caller gets its own answer, not another's; a caller whose context
// ends first gets ErrTimeout and the answer that comes late goes nowhere;
// a request to a stopped actor gets ErrDeadLetter; and the process
// registry does not grow per request (a future would add one process each).
func TestRepliesAnswerTheirCaller(t *testing.T) {
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	r, err := startReplies(sys)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := startReplies(sys); !errors.Is(err, errReplyTaken) {
		t.Fatalf("second registration: %v, want errReplyTaken", err)
	}
	echo := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return replyEcho{} }))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ask := func(ctx context.Context, to *actor.PID, s string) (string, uint32, error) {
		rec := &recordingSender{SenderContext: sys.Root}
		res, err := r.request(ctx, rec, to, wrapperspb.String(s))
		rid := rec.reply.GetRequestId()
		if err != nil {
			return "", rid, err
		}
		return res.(*wrapperspb.StringValue).Value, rid, nil
	}

	processes := func() (n int) {
		for _, b := range sys.ProcessRegistry.LocalPIDs.LocalPIDs {
			n += b.Count()
		}
		return n
	}
	before, seq := processes(), atomic.LoadUint64(&sys.ProcessRegistry.SequenceID)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var wrong []string
	for i := range 2000 {
		wg.Go(func() {
			want := fmt.Sprint("m", i)
			got, rid, err := ask(ctx, echo, want)
			if err != nil || got != fmt.Sprintf("%s#%d", want, rid) || rid == 0 {
				mu.Lock()
				wrong = append(wrong, fmt.Sprintf("%s: %q (rid %d), %v", want, got, rid, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(wrong) > 0 {
		t.Fatalf("%d of 2000 callers got the wrong answer, e.g. %s", len(wrong), wrong[0])
	}
	if after, seqAfter := processes(), atomic.LoadUint64(&sys.ProcessRegistry.SequenceID); after != before || seqAfter != seq {
		t.Fatalf("process registry %d → %d processes, names %d → %d over 2000 requests: the replies must not register a process each",
			before, after, seq, seqAfter)
	}

	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	if _, rid, err := ask(short, echo, "slow"); !errors.Is(err, actor.ErrTimeout) {
		t.Fatalf("request outliving its context: %v, want ErrTimeout", err)
	} else if r.take(rid) != nil {
		t.Fatal("a timed-out request is still registered")
	}
	// The slow answer arrives now, for nobody; the next caller gets its own.
	time.Sleep(200 * time.Millisecond)
	if got, rid, err := ask(ctx, echo, "after"); err != nil || got != fmt.Sprintf("after#%d", rid) {
		t.Fatalf("after a timeout: %q, %v", got, err)
	}

	sys.Root.Stop(echo) // no StopFuture: protoactor's futures race under -race
	for {
		// A request that reaches the actor while it stops is dropped
		// (protoactor sends no dead letter for it): short attempts.
		attempt, cancelAttempt := context.WithTimeout(ctx, 200*time.Millisecond)
		_, _, err := ask(attempt, echo, "gone")
		cancelAttempt()
		if errors.Is(err, actor.ErrDeadLetter) {
			break
		}
		if ctx.Err() != nil || (err != nil && !errors.Is(err, actor.ErrTimeout)) {
			t.Fatalf("request to a stopped actor: %v, want ErrDeadLetter", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range r.shards {
		if n := len(r.shards[i].m); n != 0 {
			t.Fatalf("shard %d holds %d requests after every one ended", i, n)
		}
	}
}
