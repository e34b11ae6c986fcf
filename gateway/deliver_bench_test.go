package gateway

import (
	"bufio"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/wire"
)

// BenchmarkDeliverIdle is the cost of one push to a logged-in connection
// whose write queue is idle (the usual case of a fan-out): Deliver, the
// writer goroutine, the write, and the client reading it before the next.
func BenchmarkDeliverIdle(b *testing.B) {
	for _, tr := range testTransports() {
		b.Run(tr, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := New(Config{Transport: tr}, newFakeHandler())
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ctx, ln) }()
			defer func() { cancel(); <-done }()
			for srv.Addr() == nil {
				time.Sleep(time.Millisecond)
			}
			conn, br, _, err := ws.Dialer{}.Dial(context.Background(), "ws://"+srv.Addr().String()+"/ws")
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			var r io.Reader = conn
			if br != nil {
				r = io.MultiReader(br, conn)
			}
			r = bufio.NewReader(r)
			lb, _ := proto.Marshal(&wire.Frame{Id: 1, Body: &wire.Frame_Login{Login: &wire.Login{Token: "ok:bob", DeviceId: "d"}}})
			if err := wsutil.WriteClientBinary(conn, lb); err != nil {
				b.Fatal(err)
			}
			if _, err := wsutil.ReadServerBinary(struct {
				io.Reader
				io.Writer
			}{r, conn}); err != nil {
				b.Fatal(err)
			}
			var id uint64 // the only session
			srv.mu.RLock()
			for k := range srv.sessions {
				id = k
			}
			srv.mu.RUnlock()
			got := make(chan struct{}, 1)
			go func() { // ends when the connection does
				for {
					hd, err := ws.ReadHeader(r)
					if err != nil {
						return
					}
					if _, err := io.CopyN(io.Discard, r, hd.Length); err != nil {
						return
					}
					select {
					case got <- struct{}{}:
					default: // after the loop: the shutdown's Kick and close
					}
				}
			}()
			push := []*wire.Frame{{Body: &wire.Frame_Push{Push: &wire.Push{Transient: []*wire.Message{{Content: make([]byte, 64)}}}}}}
			b.ReportAllocs()
			for b.Loop() {
				if !srv.Deliver(id, push) {
					b.Fatal("refused")
				}
				<-got
			}
		})
	}
}
