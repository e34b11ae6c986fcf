package main

import (
	"context"
	"sync"
	"time"

	"github.com/tandem-im/tandem/proto/wire"
)

// Open loop (-rate): every sender sends on a fixed grid of scheduled
// times, whatever the server does. A message's latencies are measured
// from its scheduled time, so a stall delays every message scheduled
// during it and shows up in full in the percentiles (no coordinated
// omission). When a sender falls behind (its window is full, or a socket
// write blocks), each overdue message is sent as soon as possible and
// counted as late; it is still measured from its schedule.

// lateAfter: a send that starts more than this after its scheduled time
// counts as late. Below it is the ordinary wake-up delay of a timer: on
// the development VM, an idle Go timer fires up to about 1.5 ms late.
const lateAfter = 2 * time.Millisecond

// schedule is one sender's grid: message k is due at phase + k·interval
// on the run's clock. The interval is kept in (fractional) nanoseconds so
// that a rate that does not divide a second does not drift.
type schedule struct {
	phase    time.Duration
	interval float64 // nanoseconds
}

// newSchedule is sender i's grid (of senders in all) for a total rate
// of msgs/s spread evenly: each sender sends rate/senders msgs/s, and
// sender i's grid is offset by i/senders of an interval, so the senders
// take turns instead of firing together.
func newSchedule(rate float64, senders, i int) schedule {
	iv := float64(time.Second) * float64(senders) / rate
	return schedule{phase: time.Duration(iv * float64(i) / float64(senders)), interval: iv}
}

// at is message k's scheduled time.
func (s schedule) at(k uint64) time.Duration {
	return s.phase + time.Duration(float64(k)*s.interval)
}

// lateness counts how far behind its schedule a sender started the sends
// it recorded.
type lateness struct {
	sends      uint64        // sends recorded
	late       uint64        // started more than lateAfter after their scheduled time
	windowFull uint64        // the window was full when they were due
	worst      time.Duration // the most any send started after its scheduled time
}

// record notes a send due at due that started at started, and whether it
// had to wait for a window slot.
func (l *lateness) record(due, started time.Duration, windowFull bool) {
	l.sends++
	d := started - due
	if d > lateAfter {
		l.late++
	}
	l.worst = max(l.worst, d)
	if windowFull {
		l.windowFull++
	}
}

func (l *lateness) merge(o lateness) {
	l.sends += o.sends
	l.late += o.late
	l.windowFull += o.windowFull
	l.worst = max(l.worst, o.worst)
}

// paceLoop sends p's messages on schedule s, each once it is due and a
// slot of the window (Window sends in flight) is free, through the last
// one scheduled before the window's end (so it goes on past the end while
// it is behind), or until ctx is done; then it waits for their outcomes.
// A message's content carries its scheduled time, and its latencies are
// measured from it. The lateness of the sends scheduled in the window is
// kept in p.pace.
func (b *bench) paceLoop(ctx context.Context, ck *clock, p *pair, s schedule, send sendFunc) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, b.cfg.Window)
	conv := &wire.Conversation{Type: wire.Conversation_DIRECT, Id: p.receiver} // shared, never modified
	prefix := p.sender + "-"
	defer func() {
		if !p.started {
			p.first = p.next
		}
		p.last = p.next
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		n := p.next
		due := s.at(n)
		if due >= ck.end {
			return
		}
		if wait := due - ck.now(); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		full := false
		select {
		case sem <- struct{}{}:
		default:
			full = true
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
		started := ck.now()
		p.next++
		if !p.started && due >= ck.warmupEnd {
			p.first, p.started = n, true
		}
		if ck.inWindow(due) {
			p.pace.record(due, started, full)
		}
		pend := send(b.message(prefix, n, conv, due))
		wg.Go(func() {
			<-pend.Done()
			b.onAck(ck, p, n, due, pend)
			<-sem
		})
	}
}
