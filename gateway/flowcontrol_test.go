package gateway

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/wire"
)

// TestFrameRateScripts runs the token bucket through the traces in
// testdata/framerate. Commands:
//
//	rate <frames per second>   a new bucket, full
//	at <ms>                    the clock
//	ok <n>                     n frames pass
//	refused <ms>               one frame is refused; the wait, rounded up
func TestFrameRateScripts(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/framerate/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no frame rate scripts: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runFrameRateScript(t, f) })
	}
}

func runFrameRateScript(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		bucket frameBucket
		rate   int
		now    int64
	)
	for i, text := range strings.Split(string(b), "\n") {
		text = strings.TrimSpace(text)
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("%s:%d %q: "+format, append([]any{path, i + 1, text}, args...)...)
		}
		f := strings.Fields(text)
		if len(f) != 2 {
			fail("want a command and a number")
		}
		n, err := strconv.Atoi(f[1])
		if err != nil || n < 0 {
			fail("bad number")
		}
		switch f[0] {
		case "rate":
			bucket, rate = frameBucket{}, n
		case "at":
			now = int64(n) * int64(time.Millisecond)
		case "ok":
			for k := range n {
				if ok, wait := bucket.take(now, rate); !ok {
					fail("frame %d of %d refused, wait %v", k+1, n, wait)
				}
			}
		case "refused":
			ok, wait := bucket.take(now, rate)
			if ms := (wait + time.Millisecond - 1) / time.Millisecond; ok || int(ms) != n {
				fail("passed %v, wait %v; want refused, %d ms", ok, wait, n)
			}
		default:
			fail("unknown command")
		}
	}
}

// rawMessages are complete client WebSocket frames for burst.
type rawMessages []byte

// burst writes frames (wire frames, empty control frames, raw messages)
// to c in one write, so the server reads them back to back.
func burst(c *client, frames ...any) {
	c.t.Helper()
	var buf bytes.Buffer
	for _, f := range frames {
		var err error
		switch f := f.(type) {
		case *wire.Frame:
			var b []byte
			if b, err = proto.Marshal(f); err == nil {
				err = wsutil.WriteClientMessage(&buf, ws.OpBinary, b)
			}
		case ws.OpCode: // an empty control frame
			err = wsutil.WriteClientMessage(&buf, f, nil)
		case rawMessages: // complete client frames, as they are
			buf.Write(f)
		}
		if err != nil {
			c.t.Fatal(err)
		}
	}
	c.deadline()
	if _, err := c.conn.Write(buf.Bytes()); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func syncFrame(id uint64) *wire.Frame {
	return &wire.Frame{Id: id, Body: &wire.Frame_Sync{Sync: &wire.SyncRequest{}}}
}

// A flooding client gets RATE_LIMITED, with its request ids and a true
// retry hint, for every frame over the rate; the rest reach the Handler;
// the connection survives, and after the hint frames pass again.
func TestFrameRateLimited(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	const rate = 20 // a token per 50 ms
	srv := startServer(t, Config{MaxFrameRate: rate}, h)
	c := dial(t, srv)
	start := time.Now()
	c.login(1, "fred") // takes a token too
	const flood = 60
	var frames []any
	for i := range uint64(flood) {
		frames = append(frames, syncFrame(100+i))
	}
	burst(c, frames...)

	// Every flood frame is either handed on or refused.
	var handed, limited int
	waitStat(t, "every flood frame handed on or refused", func() bool {
		h.mu.Lock()
		handed = len(h.frames)
		h.mu.Unlock()
		limited = int(srv.Stats().FramesRateLimited)
		return handed+limited == flood
	})
	// The burst left after Login, plus what refilled while the flood was
	// read (a loaded machine reads slowly).
	if most := rate - 1 + int(time.Since(start)/(time.Second/rate)) + 1; handed < rate-1 || handed > most {
		t.Fatalf("%d frames of a burst of %d handed on at %d/s (a token went to Login), want %d to %d", handed, flood, rate, rate-1, most)
	}
	refused := map[uint64]bool{}
	var lastWait uint32
	for range limited {
		f := c.read()
		expectError(t, f, f.Id, wire.CodeRateLimited)
		e := f.GetError()
		if f.Id < 100 || f.Id >= 100+flood || refused[f.Id] {
			t.Fatalf("RATE_LIMITED for id %d: not a flood frame, or twice", f.Id)
		}
		if !e.GetTemporary() || e.GetRetryAfterMs() < 1 || e.GetRetryAfterMs() > 1000/rate {
			t.Fatalf("RATE_LIMITED: temporary %v, retry_after_ms %d; want true, 1-%d", e.GetTemporary(), e.GetRetryAfterMs(), 1000/rate)
		}
		refused[f.Id], lastWait = true, e.GetRetryAfterMs()
	}
	h.mu.Lock()
	for _, f := range h.frames {
		if refused[f.Id] {
			t.Errorf("frame %d was refused and handed on", f.Id)
		}
	}
	h.mu.Unlock()
	st := srv.Stats()
	if st.FramesRateLimited != uint64(len(refused)) || st.Errors[wire.CodeRateLimited] != uint64(len(refused)) {
		t.Fatalf("stats: %d rate limited, %d RATE_LIMITED errors; want %d", st.FramesRateLimited, st.Errors[wire.CodeRateLimited], len(refused))
	}

	// The hint is true: after it, a frame passes, on the same connection.
	time.Sleep(time.Duration(lastWait) * time.Millisecond)
	c.send(pingFrame(7))
	if f := c.read(); f.GetPong() == nil || f.Id != 7 {
		t.Fatalf("after the retry hint: %v, want Pong 7", f)
	}
	if n := srv.Sessions(); n != 1 {
		t.Fatalf("%d sessions, want the flooding one still there", n)
	}
}

// Over the rate, a wire Ping and a WebSocket ping get no answer at all
// (and the Login counts against the rate too).
func TestFrameRatePingsUnanswered(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{MaxFrameRate: 1}, h) // a burst of one: the Login
	c := dial(t, srv)
	burst(c, loginFrame(1, "ok:gina"), pingFrame(20), ws.OpPing, syncFrame(11))

	for _, want := range []string{"LoginOk 1", "RATE_LIMITED 11"} {
		hdr, p := c.readRaw()
		if hdr.OpCode != ws.OpBinary {
			t.Fatalf("got a %v frame, want %s (no pong over the rate)", hdr.OpCode, want)
		}
		f := c.decode(hdr.OpCode, p)
		switch want {
		case "LoginOk 1":
			if f.GetLoginOk() == nil || f.Id != 1 {
				t.Fatalf("got %v, want %s", f, want)
			}
		default:
			expectError(t, f, 11, wire.CodeRateLimited)
			if w := f.GetError().GetRetryAfterMs(); w < 1 || w > 1000 {
				t.Fatalf("retry_after_ms %d, want 1-1000", w)
			}
			time.Sleep(time.Duration(f.GetError().GetRetryAfterMs()) * time.Millisecond)
		}
	}
	if st := srv.Stats(); st.FramesRateLimited != 3 {
		t.Fatalf("FramesRateLimited = %d, want 3 (Ping, ping, Sync)", st.FramesRateLimited)
	}

	// A token later, a Ping is answered, and it is the next frame out.
	c.send(pingFrame(21))
	hdr, p := c.readRaw()
	if f := c.decode(hdr.OpCode, p); f.GetPong() == nil || f.Id != 21 {
		t.Fatalf("got %v, want Pong 21", f)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.frames) != 0 {
		t.Fatalf("handler got %v, want nothing", h.frames)
	}
}

// Over the rate, what is not a request the rate could refuse is answered
// as always, so that Errors with id 0 keep their meaning: undecodable
// (BAD_FRAME), id 0 (INVALID_ARGUMENT), oversize (FRAME_TOO_LARGE).
func TestFrameRateKeepsIDZeroErrors(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{MaxFrameRate: 1, MaxFrameBytes: 64}, h)
	c := dial(t, srv)
	oversize, err := proto.Marshal(&wire.Frame{Id: 4, Body: &wire.Frame_Sync{Sync: &wire.SyncRequest{}}})
	if err != nil {
		t.Fatal(err)
	}
	oversize = append(oversize, make([]byte, 100)...)
	var buf bytes.Buffer
	for _, p := range [][]byte{{0xff, 0xff}, oversize} {
		if err := wsutil.WriteClientMessage(&buf, ws.OpBinary, p); err != nil {
			t.Fatal(err)
		}
	}
	burst(c, loginFrame(1, "ok:jill"), syncFrame(0), rawMessages(buf.Bytes()), syncFrame(5))

	if f := c.read(); f.GetLoginOk() == nil {
		t.Fatalf("got %v, want LoginOk", f)
	}
	expectError(t, c.read(), 0, wire.CodeInvalidArgument)
	expectError(t, c.read(), 0, wire.CodeBadFrame)
	expectError(t, c.read(), 0, wire.CodeFrameTooLarge)
	expectError(t, c.read(), 5, wire.CodeRateLimited)
	if st := srv.Stats(); st.FramesRateLimited != 1 || st.FramesIn != 5 {
		t.Fatalf("rate limited %d, frames in %d; want 1 (the Sync), 5", st.FramesRateLimited, st.FramesIn)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.frames) != 0 {
		t.Fatalf("handler got %v, want nothing", h.frames)
	}
}

// A client that stays under the rate never sees RATE_LIMITED, whatever it
// sends: frames, wire Pings and WebSocket pings.
func TestFrameRateWellBehaved(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	const rate = 200
	srv := startServer(t, Config{MaxFrameRate: rate}, h)
	c := dial(t, srv)
	c.login(1, "hank")

	// 0.6 s at 3/4 of the rate, on a ticker (it drops ticks rather than
	// bunching them): 90 frames.
	tick := time.NewTicker(time.Second / (rate * 3 / 4))
	defer tick.Stop()
	const n = 90
	var syncs int
	for i := range uint64(n) {
		<-tick.C
		switch i % 3 {
		case 0:
			burst(c, pingFrame(1000+i))
			if f := c.read(); f.GetPong() == nil || f.Id != 1000+i {
				t.Fatalf("got %v, want Pong %d", f, 1000+i)
			}
		case 1:
			burst(c, ws.OpPing)
		default:
			burst(c, syncFrame(1000+i))
			syncs++
		}
	}
	h.handed(t, syncs)
	if st := srv.Stats(); st.FramesRateLimited != 0 || st.Errors[wire.CodeRateLimited] != 0 {
		t.Fatalf("a client under the rate was limited: %d frames, %d errors", st.FramesRateLimited, st.Errors[wire.CodeRateLimited])
	}
}

// A negative MaxFrameRate turns flow control off: a burst far over the
// default rate is handed on whole.
//
// Not parallel: the burst is CPU-heavy under the race detector, and the
// heartbeat tests, which are parallel, time sessions in 100 ms steps.
func TestFrameRateOff(t *testing.T) {
	h := newFakeHandler()
	srv := startServer(t, Config{MaxFrameRate: -1}, h)
	c := dial(t, srv)
	c.login(1, "ivy")
	const n = DefaultMaxFrameRate + DefaultMaxFrameRate/2
	frames := make([]any, 0, n)
	for i := range uint64(n) {
		frames = append(frames, syncFrame(100+i))
	}
	burst(c, frames...)
	h.handed(t, n)
	if st := srv.Stats(); st.FramesRateLimited != 0 {
		t.Fatalf("FramesRateLimited = %d with flow control off", st.FramesRateLimited)
	}
}
