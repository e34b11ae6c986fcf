package main

import (
	"context"
	"log/slog"
	"math"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tandem-im/tandem/proto/wire"
)

func TestScheduleRates(t *testing.T) {
	// Over T, all senders together schedule rate·T messages (±1 for the
	// rounding to nanoseconds), whatever the rate and the number of
	// senders; each sender its share.
	const T = 10 * time.Second
	for _, rate := range []float64{200, 1000, 333, 7.5, 12345} {
		for _, senders := range []int{1, 2, 7, 10} {
			total := 0
			for i := range senders {
				s := newSchedule(rate, senders, i)
				n := 0
				for s.at(uint64(n)) < T {
					n++
				}
				if share := rate * T.Seconds() / float64(senders); math.Abs(float64(n)-share) > 1 {
					t.Errorf("rate %g, %d senders: sender %d scheduled %d in %v, want %.1f", rate, senders, i, n, T, share)
				}
				total += n
			}
			if want := rate * T.Seconds(); math.Abs(float64(total)-want) > 1 {
				t.Errorf("rate %g, %d senders: %d scheduled in %v, want %.0f", rate, senders, total, T, want)
			}
		}
	}
}

func TestScheduleStaggered(t *testing.T) {
	// The senders take turns: merged, their grids are one grid of
	// 1/rate, so no two senders fire together.
	for _, tc := range []struct {
		rate    float64
		senders int
	}{{1000, 10}, {200, 2}, {333, 7}, {50, 3}} {
		var all []time.Duration
		for i := range tc.senders {
			s := newSchedule(tc.rate, tc.senders, i)
			if i > 0 && s.phase == 0 {
				t.Errorf("rate %g: sender %d starts at 0 like sender 0", tc.rate, i)
			}
			for k := range uint64(100) {
				all = append(all, s.at(k))
			}
		}
		slices.Sort(all)
		gap := time.Duration(float64(time.Second) / tc.rate)
		for j := 1; j < len(all); j++ {
			if d := all[j] - all[j-1]; d < gap-2 || d > gap+2 {
				t.Fatalf("rate %g, %d senders: times %v and %v are %v apart, want %v", tc.rate, tc.senders, all[j-1], all[j], d, gap)
			}
		}
	}
}

func TestLateness(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	var l lateness
	l.record(ms(10), ms(10), false)    // on time
	l.record(ms(20), ms(22), false)    // 2 ms: a timer's wake-up, not late
	l.record(ms(30), ms(32.5), false)  // late
	l.record(ms(40), ms(140), true)    // late, waited for the window
	l.record(ms(50), ms(140.2), false) // late: the backlog behind it
	if want := (lateness{sends: 5, late: 3, windowFull: 1, worst: ms(100)}); l != want {
		t.Errorf("lateness %+v, want %+v", l, want)
	}
	var m lateness
	m.merge(l)
	m.merge(lateness{sends: 2, late: 1, windowFull: 2, worst: ms(7)})
	if want := (lateness{sends: 7, late: 4, windowFull: 3, worst: ms(100)}); m != want {
		t.Errorf("merged %+v, want %+v", m, want)
	}
}

// fakeServer acks each send delay after it was written, except that acks
// due in [stallFrom, stallTo) are held until stallTo: a server stall.
type fakeServer struct {
	ck                 *clock
	delay              time.Duration
	stallFrom, stallTo time.Duration

	// Only the send loop.
	sent []sentMsg
}

type sentMsg struct {
	n        uint64
	at       time.Duration // the send time the content carries
	started  time.Duration // when the send loop wrote it
	clientID string
}

type fakePending struct {
	id   string
	done chan struct{}
}

func (p *fakePending) Done() <-chan struct{}          { return p.done }
func (p *fakePending) Result() (*wire.SendAck, error) { return &wire.SendAck{}, nil }
func (p *fakePending) ClientMessageID() string        { return p.id }

func (f *fakeServer) send(m *wire.Send) inFlight {
	now := f.ck.now()
	n, at, _ := parseContent(m.GetContent())
	f.sent = append(f.sent, sentMsg{n: n, at: at, started: now, clientID: m.GetClientMessageId()})
	ackAt := now + f.delay
	if ackAt >= f.stallFrom && ackAt < f.stallTo {
		ackAt = f.stallTo
	}
	p := &fakePending{id: m.GetClientMessageId(), done: make(chan struct{})}
	time.AfterFunc(ackAt-now, func() { close(p.done) })
	return p
}

// paceRun runs one sender's paceLoop at 100 msgs/s, window 4, over a 1 s
// warm-up and a 2 s window against srv, on synctest's clock.
func paceRun(t *testing.T, srv *fakeServer) (*pair, schedule) {
	b := &bench{cfg: Config{Rate: 100, Window: 4, Size: minSize}.withDefaults(), log: slog.New(slog.DiscardHandler)}
	ck := &clock{start: time.Now(), warmupEnd: time.Second, end: 3 * time.Second}
	srv.ck = ck
	p := &pair{sender: "s", receiver: "r",
		ackedBySecond: make([]uint64, ck.seconds()), deliveredBySecond: make([]uint64, ck.seconds())}
	s := newSchedule(b.cfg.Rate, 1, 0)
	b.paceLoop(context.Background(), ck, p, s, srv.send)
	return p, s
}

func TestPaceLoopOnTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &fakeServer{delay: 2 * time.Millisecond}
		p, s := paceRun(t, srv)
		if len(srv.sent) != 300 || p.first != 100 || p.last != 300 {
			t.Fatalf("sent %d, measured [%d, %d); want 300, [100, 300)", len(srv.sent), p.first, p.last)
		}
		for _, m := range srv.sent {
			if m.at != s.at(m.n) || m.started != m.at {
				t.Fatalf("message %d: content time %v, started %v; want both its schedule %v", m.n, m.at, m.started, s.at(m.n))
			}
		}
		if want := (lateness{sends: 200}); p.pace != want {
			t.Errorf("lateness %+v, want %+v", p.pace, want)
		}
		if p.measuredAcked != 200 || p.ackLat.n != 200 || p.ackLat.min != int64(2*time.Millisecond) || p.ackLat.max != int64(2*time.Millisecond) {
			t.Errorf("acked %d, latencies %d in [%v, %v]; want 200 all 2ms",
				p.measuredAcked, p.ackLat.n, time.Duration(p.ackLat.min), time.Duration(p.ackLat.max))
		}
		if got := sum(p.ackedBySecond); got != 200 {
			t.Errorf("acks in the window %d, want 200", got)
		}
	})
}

func TestPaceLoopStall(t *testing.T) {
	// The server holds every ack due in [1.5 s, 2 s). The sends scheduled
	// at 1.50–1.53 fill the window; the one due at 1.54 goes out at 2 s,
	// 460 ms late, and the backlog behind it drains 4 sends per 2 ms
	// until the one due at 2.02 (at 2.024 s). Their latencies count from
	// their schedule: the stall shows in full.
	synctest.Test(t, func(t *testing.T) {
		srv := &fakeServer{delay: 2 * time.Millisecond, stallFrom: 1500 * time.Millisecond, stallTo: 2 * time.Second}
		p, s := paceRun(t, srv)
		if len(srv.sent) != 300 || p.pace.sends != 200 {
			t.Fatalf("sent %d, %d in the window; want every one of 300 and 200", len(srv.sent), p.pace.sends)
		}
		for _, m := range srv.sent {
			if m.at != s.at(m.n) {
				t.Fatalf("message %d carries %v, want its schedule %v", m.n, m.at, s.at(m.n))
			}
		}
		if p.pace.worst != 460*time.Millisecond || p.pace.late != 49 || p.pace.windowFull < 13 || p.pace.windowFull > 49 {
			t.Errorf("lateness %+v; want worst 460ms, 49 late, 13–49 of them waiting for the window", p.pace)
		}
		if p.measuredAcked != 200 || p.ackLat.max != int64(500*time.Millisecond) {
			t.Errorf("acked %d, worst send→ack %v; want 200 and 500ms (scheduled at 1.5 s, acked at 2 s)",
				p.measuredAcked, time.Duration(p.ackLat.max))
		}
		// 49 sends started late and 4 were held: over a quarter of the
		// 200 measured are far above the 2 ms the server takes.
		if q := p.ackLat.quantile(0.75); q < 20*time.Millisecond {
			t.Errorf("send→ack p75 %v: the stall is not in the percentiles", q)
		}
	})
}
