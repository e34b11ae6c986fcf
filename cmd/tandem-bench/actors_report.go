package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/wire"
)

// ActorsResult is what one `tandem-bench actors` run measured.
type ActorsResult struct {
	Config      ActorsConfig `json:"config"`
	Machine     machineInfo  `json:"machine"`
	Interrupted bool         `json:"interrupted"` // Ctrl-C: the load stopped early, the rest was drained

	Logins struct {
		Devices        uint64  `json:"devices"`
		OK             uint64  `json:"ok"`
		Failed         uint64  `json:"failed"`
		Kicked         uint64  `json:"kicked"`
		UsersActivated uint64  `json:"users_activated"` // users whose first login succeeded (a fresh store: each an actor start and a store activation)
		Seconds        float64 `json:"seconds"`
		PerSecond      float64 `json:"per_second"`
		// Over the first and the last tenth of the logins.
		FirstTenthPerSecond float64 `json:"first_tenth_per_second"`
		LastTenthPerSecond  float64 `json:"last_tenth_per_second"`
		Latency             Latency `json:"latency"`
	} `json:"logins"`

	Memory struct {
		// Live heap after GC of the whole process (node and bench) before
		// the first login and after the last, and the difference per user.
		HeapBaseline    uint64  `json:"heap_baseline"`
		HeapAfterLogins uint64  `json:"heap_after_logins"`
		PerUserBytes    float64 `json:"per_user_bytes"`
	} `json:"memory"`

	Chat struct {
		Seconds        float64 `json:"seconds"`
		Sent           uint64  `json:"sent"`
		Skipped        uint64  `json:"skipped"` // the sender's device was not online
		Acked          uint64  `json:"acked"`
		Refused        uint64  `json:"refused"`          // answered with an error
		Unacked        uint64  `json:"unacked"`          // neither by the end of the drain
		AckedPerSecond float64 `json:"acked_per_second"` // from the chat's start to the last ack (drain included)
		// WorstLatenessMs: the furthest behind its schedule the sender
		// loop sent a message (the bench's own limit, if large).
		WorstLatenessMs float64 `json:"worst_lateness_ms"`
		// Pushes of the messages to their recipients' devices: Expected is
		// acked × devices; FullyPushed messages reached every one.
		PushesExpected  uint64  `json:"pushes_expected"`
		Pushes          uint64  `json:"pushes"`
		FullyPushed     uint64  `json:"fully_pushed"`
		DuplicatePushes uint64  `json:"duplicate_pushes"`
		Carbons         uint64  `json:"carbons"`
		Foreign         uint64  `json:"foreign"` // frames that matched no message of the ledger
		Ack             Latency `json:"ack"`     // scheduled send → SendAck
		Push            Latency `json:"push"`    // scheduled send → Push at a recipient device
	} `json:"chat"`

	Ledger   *LedgerCheck      `json:"ledger,omitempty"` // nil: -no-verify
	Errors   map[string]uint64 `json:"errors,omitempty"`
	Series   []ActorsPoint     `json:"series"`
	Problems []string          `json:"problems,omitempty"`
}

// ActorsPoint is one second of progress.
type ActorsPoint struct {
	Seconds         float64 `json:"t"`
	Users           uint64  `json:"users"`
	LoginsPerSecond uint64  `json:"logins_per_second"`
	MsgsPerSecond   uint64  `json:"msgs_per_second"`
	Errors          uint64  `json:"errors"`
	LoginP99Ms      float64 `json:"login_p99_ms"`
	AckP99Ms        float64 `json:"ack_p99_ms"`
}

// LedgerCheck is the end-of-run check against the store: every acked
// message in its recipient's log (with its sender and message ID), every
// successful login's LOGGED_IN device event in its user's log.
type LedgerCheck struct {
	Messages        uint64   `json:"messages"`
	MessagesMissing uint64   `json:"messages_missing"`
	Logins          uint64   `json:"logins"`
	LoginsMissing   uint64   `json:"logins_missing"`
	ReadErrors      uint64   `json:"read_errors"`
	Examples        []string `json:"examples,omitempty"` // the first problems found
	Seconds         float64  `json:"seconds"`
}

func (r *ActorsResult) problems() int { return len(r.Problems) }

// fill copies the counters into res.
func (r *actorsRun) fill(res *ActorsResult, loginEnd, chatStart, chatEnd time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := &res.Logins
	l.Devices, l.OK, l.Failed, l.Kicked, l.UsersActivated = uint64(len(r.online)), r.logins, r.loginFails, r.kicks, r.users
	l.Seconds = loginEnd.Seconds()
	if l.Seconds > 0 {
		l.PerSecond = float64(r.logins) / l.Seconds
	}
	tenth := float64(len(r.online)) / 10
	if d := r.marks[10]; d > 0 {
		l.FirstTenthPerSecond = tenth / d.Seconds()
	}
	if d := r.marks[100] - r.marks[90]; r.marks[100] > 0 && r.marks[90] > 0 && d > 0 {
		l.LastTenthPerSecond = tenth / d.Seconds()
	}
	l.Latency = latency(&r.loginLat)

	c := &res.Chat
	c.Seconds = (chatEnd - chatStart).Seconds()
	c.Sent, c.Skipped, c.Acked, c.Refused = uint64(len(r.ledger)), r.skipped, r.acks, r.sendErrs
	c.Unacked = c.Sent - c.Acked - c.Refused
	if d := r.lastAck - chatStart; r.acks > 0 && d > 0 {
		c.AckedPerSecond = float64(r.acks) / d.Seconds()
	}
	c.WorstLatenessMs = ms(r.lateness)
	c.PushesExpected = r.acks * uint64(r.cfg.Devices)
	c.Pushes, c.FullyPushed, c.DuplicatePushes, c.Carbons, c.Foreign = r.pushes, r.fullyPushed, r.dups, r.carbons, r.foreign
	c.Ack, c.Push = latency(&r.ackLat), latency(&r.pushLat)
	if len(r.errs) > 0 {
		res.Errors = maps.Clone(r.errs)
	}
}

// soundness lists what makes the run's figures not count.
func (r *actorsRun) soundness(res *ActorsResult) []string {
	var p []string
	if res.Logins.Failed > 0 {
		p = append(p, fmt.Sprintf("%d logins failed", res.Logins.Failed))
	}
	if res.Logins.Kicked > 0 {
		p = append(p, fmt.Sprintf("%d devices were kicked", res.Logins.Kicked))
	}
	if res.Chat.Unacked > 0 {
		p = append(p, fmt.Sprintf("%d messages neither acked nor refused after the drain", res.Chat.Unacked))
	}
	if res.Chat.Refused > 0 {
		p = append(p, fmt.Sprintf("%d messages refused", res.Chat.Refused))
	}
	if lc := res.Ledger; lc != nil {
		if lc.MessagesMissing > 0 {
			p = append(p, fmt.Sprintf("ack ledger: %d of %d acked messages missing from their recipients' logs", lc.MessagesMissing, lc.Messages))
		}
		if lc.LoginsMissing > 0 {
			p = append(p, fmt.Sprintf("ack ledger: %d of %d logins without their device event in the log", lc.LoginsMissing, lc.Logins))
		}
		if lc.ReadErrors > 0 {
			p = append(p, fmt.Sprintf("ack ledger: %d logs could not be read", lc.ReadErrors))
		}
	}
	return p
}

// logReader reads a user's log from the store (node.Node.ReadLog).
type logReader interface {
	ReadLog(ctx context.Context, user string, after uint64, limit int) ([]persistence.Entry, error)
}

// verify reads every user's log that should hold something from the
// store, 4 users at a time.
func (r *actorsRun) verify(ctx context.Context, rd logReader) *LedgerCheck {
	t0 := time.Now()
	r.mu.Lock()
	ledger := slices.Clone(r.ledger)
	r.mu.Unlock()
	byRecipient := make([][]int32, r.cfg.Users)
	for k, e := range ledger {
		if e.acked {
			byRecipient[e.recipient] = append(byRecipient[e.recipient], int32(k))
		}
	}
	lc := &LedgerCheck{}
	var mu sync.Mutex // lc
	var next int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				mu.Lock()
				u := int(next)
				next++
				mu.Unlock()
				if u >= r.cfg.Users {
					return
				}
				var devs []int
				for d := range r.cfg.Devices {
					if r.activated[u].Load() && r.loggedIn(u*r.cfg.Devices+d) {
						devs = append(devs, d)
					}
				}
				if len(devs) == 0 && len(byRecipient[u]) == 0 {
					continue
				}
				got := checkUserLog(ctx, rd, u, devs, byRecipient[u], ledger)
				mu.Lock()
				lc.Logins += uint64(len(devs))
				lc.Messages += uint64(len(byRecipient[u]))
				lc.LoginsMissing += got.loginsMissing
				lc.MessagesMissing += got.messagesMissing
				if got.err != nil {
					lc.ReadErrors++
				}
				for _, s := range got.examples {
					if len(lc.Examples) < 20 {
						lc.Examples = append(lc.Examples, s)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	lc.Seconds = time.Since(t0).Seconds()
	return lc
}

// loggedIn: device i's login succeeded (it may have been kicked since).
func (r *actorsRun) loggedIn(i int) bool { return r.online[i].Load() == devOnline }

type userLogCheck struct {
	loginsMissing, messagesMissing uint64
	examples                       []string
	err                            error
}

// checkUserLog reads user u's whole log and looks for a LOGGED_IN event of
// each device in devs and each ledger message in msgs (indexes).
func checkUserLog(ctx context.Context, rd logReader, u int, devs []int, msgs []int32, ledger []ledgerEntry) userLogCheck {
	var out userLogCheck
	user := vuser(u)
	ids := map[string]string{} // message ID → sender
	loggedIn := map[string]bool{}
	var after uint64
	for {
		page, err := rd.ReadLog(ctx, user, after, 1000)
		if err != nil {
			out.err = err
			out.examples = append(out.examples, fmt.Sprintf("reading %s's log after seq %d: %v", user, after, err))
			return out
		}
		for _, e := range page {
			after = uint64(e.Seq)
			var en wire.Entry
			if err := proto.Unmarshal(e.Data, &en); err != nil {
				continue
			}
			if m := en.GetMessage(); m != nil {
				ids[m.GetMessageId()] = m.GetSender()
			}
			if dv := en.GetDevice(); dv != nil && dv.GetKind() == wire.DeviceEvent_LOGGED_IN {
				loggedIn[dv.GetDevice().GetDeviceId()] = true
			}
		}
		if len(page) < 1000 {
			break
		}
	}
	for _, d := range devs {
		if !loggedIn[vdevice(d)] {
			out.loginsMissing++
			out.examples = append(out.examples, fmt.Sprintf("login of %s's device %s: no LOGGED_IN event in its log", user, vdevice(d)))
		}
	}
	for _, k := range msgs {
		e := ledger[k]
		if s, ok := ids[e.msgID]; !ok || s != vuser(int(e.sender)) {
			out.messagesMissing++
			out.examples = append(out.examples, fmt.Sprintf("message %s from %s (seq %d in the sender's log), acked: not in %s's log", e.msgID, vuser(int(e.sender)), e.seq, user))
		}
	}
	return out
}

// print writes the summary table.
func (r *ActorsResult) print(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "tandem-bench actors: %s, %d users × %d devices (%v), concurrency %d",
		c.Target.describe(), c.Users, c.Devices, c.Platforms, c.Concurrency)
	if c.LoginRate > 0 {
		fmt.Fprintf(w, ", login rate %.0f/s", c.LoginRate)
	}
	if c.MsgRate > 0 {
		fmt.Fprintf(w, ", chat %.3g msg/s per user for %v", c.MsgRate, c.Duration)
	}
	if c.Ramp > 0 {
		fmt.Fprintf(w, ", ramp %v", c.Ramp)
	}
	fmt.Fprintf(w, "\nmachine: %d CPUs, load %.2f before, %.2f after\n", r.Machine.CPUs, r.Machine.LoadBefore[0], r.Machine.LoadAfter[0])
	if r.Interrupted {
		fmt.Fprintln(w, "INTERRUPTED: the load stopped early; what was in flight was drained")
	}
	l := r.Logins
	fmt.Fprintf(w, "\n%-28s %d of %d ok, %d failed, %d kicked\n", "logins", l.OK, l.Devices, l.Failed, l.Kicked)
	fmt.Fprintf(w, "%-28s %d\n", "users activated", l.UsersActivated)
	fmt.Fprintf(w, "%-28s %.0f over %.1f s (first tenth %.0f, last tenth %.0f)\n", "logins/s", l.PerSecond, l.Seconds, l.FirstTenthPerSecond, l.LastTenthPerSecond)
	fmt.Fprintf(w, "%-28s p50 %.2f  p99 %.2f  max %.2f ms\n", "login latency", l.Latency.P50, l.Latency.P99, l.Latency.Max)
	m := r.Memory
	fmt.Fprintf(w, "%-28s %.1f MiB before, %.1f MiB after the logins: %.0f B per user\n", "heap live after GC", float64(m.HeapBaseline)/(1<<20), float64(m.HeapAfterLogins)/(1<<20), m.PerUserBytes)
	if ch := r.Chat; ch.Sent+ch.Skipped > 0 {
		fmt.Fprintf(w, "%-28s %d sent, %d acked, %d refused, %d unacked, %d skipped (sender offline)\n", "messages", ch.Sent, ch.Acked, ch.Refused, ch.Unacked, ch.Skipped)
		fmt.Fprintf(w, "%-28s %.0f (chat %.1f s, to the last ack); sender loop at worst %.1f ms late\n", "acked msgs/s", ch.AckedPerSecond, ch.Seconds, ch.WorstLatenessMs)
		fmt.Fprintf(w, "%-28s p50 %.2f  p99 %.2f  max %.2f ms\n", "send → ack", ch.Ack.P50, ch.Ack.P99, ch.Ack.Max)
		fmt.Fprintf(w, "%-28s p50 %.2f  p99 %.2f  max %.2f ms\n", "send → push (recipient)", ch.Push.P50, ch.Push.P99, ch.Push.Max)
		fmt.Fprintf(w, "%-28s %d of %d expected (%d messages to every device), %d duplicates, %d carbons, %d foreign\n", "pushes", ch.Pushes, ch.PushesExpected, ch.FullyPushed, ch.DuplicatePushes, ch.Carbons, ch.Foreign)
	}
	if lc := r.Ledger; lc != nil {
		fmt.Fprintf(w, "%-28s %d of %d acked messages missing, %d of %d logins missing, %d read errors (%.1f s)\n", "ack ledger (store)", lc.MessagesMissing, lc.Messages, lc.LoginsMissing, lc.Logins, lc.ReadErrors, lc.Seconds)
		for _, e := range lc.Examples {
			fmt.Fprintln(w, "  missing:", e)
		}
	} else {
		fmt.Fprintf(w, "%-28s not checked (-no-verify)\n", "ack ledger (store)")
	}
	for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
		fmt.Fprintf(w, "%-28s %d\n", "error "+k, r.Errors[k])
	}
	for _, p := range r.Problems {
		fmt.Fprintln(w, "NOT SOUND:", p)
	}
}
