package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/proto/wire"
)

// A client worker of `tandem-bench conns` (conns.go): a re-executed copy
// of this binary (connsWorkerEnv set) that holds its share of the
// connections, so that no process needs more than its file-descriptor
// limit. It reads one workerSetup line, then workerCommand lines, on
// stdin, and answers each with one workerReply line on stdout; logs go to
// stderr. It exits when stdin ends or on "stop".
//
// Each connection is a lean device: a gobwas/ws dial with subprotocol
// tandem.v1, a Login, the LoginOk, and then one goroutine that reads and
// decodes what the server pushes (answering WebSocket pings) and counts
// kicks and drops. It sends nothing after the Login: the nodes run with a
// heartbeat timeout longer than the run.

// connsWorkerEnv, set to "1" in a process's environment, makes this binary
// a client worker instead of the benchmark.
const connsWorkerEnv = "TANDEM_BENCH_CONNS_WORKER"

// Device IDs and platforms of the two phases. The platforms are of
// different kick-policy classes (mobile, desktop): a user's second device
// kicks nobody under the default per_class policy, nor under tag (no tag).
const (
	phaseNew    = "a" // every connection a new user
	phaseSecond = "b" // a second device of a user from phase a
)

var phaseDevice = map[string]struct{ id, platform string }{
	phaseNew:    {"conns-a", "android"},
	phaseSecond: {"conns-b", "linux"},
}

// workerSetup is a worker's first stdin line.
type workerSetup struct {
	Index       int           `json:"index"`   // this worker, 0..Clients-1
	Clients     int           `json:"clients"` // workers in all
	Servers     []serverAddrs `json:"servers"`
	AdminKey    string        `json:"admin_key"` // every node's
	Run         string        `json:"run"`       // user IDs: conns-<run>-<u>
	Concurrency int           `json:"concurrency"`
	Timeout     time.Duration `json:"timeout"` // per mint, dial and login
	// SourceIP, if set, is the local address the connections are bound
	// to: with -reuse-port every connection goes to one address and port,
	// and one source address has only the kernel's ephemeral port range
	// (~28,000) towards it, so each worker takes its own loopback address.
	SourceIP string `json:"source_ip,omitempty"`
}

type serverAddrs struct {
	WS  string `json:"ws"`  // ws://127.0.0.1:port/ws
	API string `json:"api"` // http://127.0.0.1:port
}

// workerCommand: Op "connect" logs in, for every user u in [From, To)
// that this worker owns (ownerOf), the device of Phase on the server
// serverOf(u); "status" reports; "stop" closes everything and exits.
type workerCommand struct {
	Op    string `json:"op"`
	Phase string `json:"phase,omitempty"`
	From  int    `json:"from,omitempty"`
	To    int    `json:"to,omitempty"`

	Broadcast *bcastTrack `json:"broadcast,omitempty"` // the bcast-* ops (broadcast_worker.go)
}

// workerReply answers every command (and the setup, with Op "ready").
type workerReply struct {
	Op          string   `json:"op"`
	Connected   int      `json:"connected"`    // this command's logins that succeeded
	Failed      int      `json:"failed"`       // this command's logins that did not
	DialRetries int      `json:"dial_retries"` // this command's dials tried again (before any Login was sent)
	Open        int      `json:"open"`         // logged-in connections now open
	Kicks       int      `json:"kicks"`        // Kick frames received, since the start
	Drops       int      `json:"drops"`        // connections that ended while open, since the start
	Frames      int64    `json:"frames"`       // frames received after the logins, since the start
	Errors      []string `json:"errors,omitempty"`
	Err         string   `json:"err,omitempty"` // the command itself failed

	Broadcast *bcastTally `json:"broadcast,omitempty"` // the bcast-* ops (broadcast_worker.go)
}

// serverOf and ownerOf place user u: servers take users round-robin, and
// each worker holds users of every server.
func serverOf(u, servers int) int         { return u % servers }
func ownerOf(u, servers, clients int) int { return (u / servers) % clients }

// userID is user u's ID in run.
func userID(run string, u int) string { return fmt.Sprintf("conns-%s-%d", run, u) }

// connsWorkerMain runs a worker on stdin/stdout; the exit status.
func connsWorkerMain(ctx context.Context, log *slog.Logger) int {
	raiseFileLimit(log)
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 1<<20)
	out := json.NewEncoder(os.Stdout)
	if !in.Scan() {
		log.Error("conns worker: no setup line on stdin", "err", in.Err())
		return 1
	}
	var setup workerSetup
	if err := json.Unmarshal(in.Bytes(), &setup); err != nil {
		log.Error("conns worker: setup", "err", err)
		return 1
	}
	w := newConnsWorker(setup, log)
	defer w.closeAll()
	if err := out.Encode(w.reply("ready")); err != nil {
		log.Error("conns worker: write to stdout", "err", err)
		return 1
	}
	for in.Scan() {
		var cmd workerCommand
		var r workerReply
		if err := json.Unmarshal(in.Bytes(), &cmd); err != nil {
			r = workerReply{Op: "error", Err: err.Error()}
		} else {
			r = w.do(ctx, cmd)
		}
		if err := out.Encode(r); err != nil {
			log.Error("conns worker: write to stdout", "err", err)
			return 1
		}
		if cmd.Op == "stop" {
			return 0
		}
	}
	if err := in.Err(); err != nil {
		log.Error("conns worker: read stdin", "err", err)
		return 1
	}
	return 0
}

// connsWorker holds one worker's connections.
type connsWorker struct {
	setup workerSetup
	log   *slog.Logger
	http  *http.Client

	// Only the command loop.
	tokens map[int]string // user → login token (minted in phase a)

	mu    sync.Mutex
	conns map[net.Conn]struct{} // logged in and open
	errs  []string              // the first few distinct problems

	stopping            atomic.Bool
	kicks, drops        atomic.Int64
	frames, dialRetries atomic.Int64

	// Set by a bcast-track command; the readers hand it every frame.
	bcast atomic.Pointer[bcastTracker]
}

func newConnsWorker(setup workerSetup, log *slog.Logger) *connsWorker {
	if setup.Concurrency <= 0 {
		setup.Concurrency = DefaultConnsConcurrency
	}
	if setup.Timeout <= 0 {
		setup.Timeout = 30 * time.Second
	}
	tr := &http.Transport{MaxIdleConnsPerHost: setup.Concurrency, MaxConnsPerHost: setup.Concurrency, IdleConnTimeout: 10 * time.Second}
	return &connsWorker{
		setup:  setup,
		log:    log,
		http:   &http.Client{Transport: tr, Timeout: setup.Timeout},
		tokens: make(map[int]string),
		conns:  make(map[net.Conn]struct{}),
	}
}

func (w *connsWorker) reply(op string) workerReply {
	w.mu.Lock()
	defer w.mu.Unlock()
	return workerReply{
		Op: op, Open: len(w.conns), Kicks: int(w.kicks.Load()), Drops: int(w.drops.Load()),
		Frames: w.frames.Load(), Errors: append([]string(nil), w.errs...),
	}
}

func (w *connsWorker) problem(err error) {
	const keep = 8
	w.mu.Lock()
	defer w.mu.Unlock()
	msg := err.Error()
	for _, e := range w.errs {
		if e == msg {
			return
		}
	}
	if len(w.errs) < keep {
		w.errs = append(w.errs, msg)
	}
}

func (w *connsWorker) do(ctx context.Context, cmd workerCommand) workerReply {
	switch cmd.Op {
	case "status":
		return w.reply("status")
	case "stop":
		w.closeAll()
		return w.reply("stopped")
	case opBcastTrack, opBcastCount, opBcastStatus:
		return w.doBroadcast(cmd)
	case "connect":
		if _, ok := phaseDevice[cmd.Phase]; !ok {
			return workerReply{Op: "error", Err: fmt.Sprintf("connect: unknown phase %q", cmd.Phase)}
		}
		retries0 := w.dialRetries.Load()
		ok, failed := w.connect(ctx, cmd)
		r := w.reply("connected")
		r.Connected, r.Failed, r.DialRetries = ok, failed, int(w.dialRetries.Load()-retries0)
		return r
	default:
		return workerReply{Op: "error", Err: fmt.Sprintf("unknown op %q", cmd.Op)}
	}
}

// connect logs in this worker's users of [From, To), Concurrency at a
// time. Phase a mints each user's token first; phase b reuses it.
func (w *connsWorker) connect(ctx context.Context, cmd workerCommand) (ok, failed int) {
	s := w.setup
	var users []int
	for u := cmd.From; u < cmd.To; u++ {
		if ownerOf(u, len(s.Servers), s.Clients) == s.Index {
			users = append(users, u)
		}
	}
	if cmd.Phase == phaseNew {
		// Mint the tokens first, so that no API connection is open while
		// the WebSockets are measured (CloseIdleConnections below).
		toks := make([]string, len(users))
		errs := w.parallel(len(users), func(i int) error {
			srv := s.Servers[serverOf(users[i], len(s.Servers))]
			mctx, cancel := context.WithTimeout(ctx, s.Timeout)
			defer cancel()
			t, err := w.mint(mctx, srv.API, userID(s.Run, users[i]))
			toks[i] = t
			return err
		})
		w.http.CloseIdleConnections()
		for i, u := range users {
			if errs[i] != nil {
				w.problem(errs[i]) // its login then fails with "no token"
				continue
			}
			w.tokens[u] = toks[i]
		}
	}
	errs := w.parallel(len(users), func(i int) error {
		u := users[i]
		tok, have := w.tokens[u]
		if !have {
			return fmt.Errorf("user %d: no token", u)
		}
		return w.login(ctx, s.Servers[serverOf(u, len(s.Servers))].WS, tok, phaseDevice[cmd.Phase].id, phaseDevice[cmd.Phase].platform)
	})
	for _, err := range errs {
		if err != nil {
			failed++
			w.problem(err)
		} else {
			ok++
		}
	}
	return ok, failed
}

// parallel runs f(0..n-1), Concurrency at a time; f may read w.tokens
// (not written meanwhile).
func (w *connsWorker) parallel(n int, f func(i int) error) []error {
	errs := make([]error, n)
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range min(w.setup.Concurrency, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				errs[i] = f(i)
			}
		})
	}
	wg.Wait()
	return errs
}

// mint asks the server API for user's login token on the worker's own
// HTTP client (bounded connections per server, closed after the phase).
func (w *connsWorker) mint(ctx context.Context, apiURL, user string) (string, error) {
	body, err := json.Marshal(map[string]string{"user_id": user})
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL+"/v1/tokens", bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("mint a token for %s: %w", user, err)
	}
	req.Header.Set("Authorization", "Bearer "+w.setup.AdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("mint a token for %s: %w", user, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("mint a token for %s: read the answer: %w", user, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("mint a token for %s: %s: %s", user, resp.Status, strings.TrimSpace(string(b)))
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.Token == "" {
		return "", fmt.Errorf("mint a token for %s: answer %q: %v", user, b, err)
	}
	return out.Token, nil
}

// login dials url (again after a failed dial, up to 3 times: nothing was
// sent yet), logs the device in and starts its reader.
func (w *connsWorker) login(ctx context.Context, url, token, device, platform string) error {
	var (
		nc  net.Conn
		br  *bufio.Reader
		err error
	)
	d := ws.Dialer{Protocols: []string{client.SubprotocolProto}, Timeout: w.setup.Timeout}
	if w.setup.SourceIP != "" {
		nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(w.setup.SourceIP)}}
		d.NetDial = nd.DialContext
	}
	for attempt := range 3 {
		if attempt > 0 {
			w.dialRetries.Add(1)
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
		}
		if nc, br, _, err = d.Dial(ctx, url); err == nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("dial %s: %w", url, err)
	}
	var rd io.Reader = nc
	if br != nil {
		rd = br // bytes the server sent with its handshake answer
	}
	rw := struct {
		io.Reader
		io.Writer
	}{rd, nc}
	if err := w.loginExchange(nc, rw, token, device, platform); err != nil {
		nc.Close()
		return err
	}
	w.mu.Lock()
	if w.stopping.Load() {
		w.mu.Unlock()
		nc.Close()
		return errors.New("stopping")
	}
	w.conns[nc] = struct{}{}
	w.mu.Unlock()
	go w.read(nc, rw)
	return nil
}

func (w *connsWorker) loginExchange(nc net.Conn, rw io.ReadWriter, token, device, platform string) error {
	if err := nc.SetDeadline(time.Now().Add(w.setup.Timeout)); err != nil {
		return err
	}
	login, err := proto.Marshal(&wire.Frame{Id: 1, Body: &wire.Frame_Login{Login: &wire.Login{
		Token: token, DeviceId: device, Platform: platform,
	}}})
	if err != nil {
		return err
	}
	if err := wsutil.WriteClientMessage(nc, ws.OpBinary, login); err != nil {
		return fmt.Errorf("send Login: %w", err)
	}
	for {
		p, _, err := wsutil.ReadServerData(rw)
		if err != nil {
			return fmt.Errorf("wait for LoginOk: %w", err)
		}
		var f wire.Frame
		if err := proto.Unmarshal(p, &f); err != nil {
			return fmt.Errorf("wait for LoginOk: decode a frame: %w", err)
		}
		switch b := f.GetBody().(type) {
		case *wire.Frame_LoginOk:
			return nc.SetDeadline(time.Time{})
		case *wire.Frame_Error:
			return fmt.Errorf("login refused: %s: %s", b.Error.GetName(), b.Error.GetMessage())
		case *wire.Frame_Kick:
			w.kicks.Add(1)
			return fmt.Errorf("kicked while logging in: %s", b.Kick.GetReason())
		}
	}
}

// read reads nc until it ends, counting frames and kicks; an end the
// worker did not cause is a drop.
func (w *connsWorker) read(nc net.Conn, rw io.ReadWriter) {
	for {
		p, _, err := wsutil.ReadServerData(rw)
		if err != nil {
			w.mu.Lock()
			_, open := w.conns[nc]
			delete(w.conns, nc)
			w.mu.Unlock()
			if open && !w.stopping.Load() {
				w.drops.Add(1)
				w.problem(fmt.Errorf("connection dropped: %w", err))
			}
			nc.Close()
			return
		}
		w.frames.Add(1)
		var f wire.Frame
		if err := proto.Unmarshal(p, &f); err != nil {
			w.problem(fmt.Errorf("decode a pushed frame: %w", err))
			continue
		}
		if t := w.bcast.Load(); t != nil {
			t.frame(nc, &f)
		}
		if k := f.GetKick(); k != nil {
			w.kicks.Add(1)
			w.problem(fmt.Errorf("kicked: %s (close code %d)", k.GetReason(), k.GetCloseCode()))
		}
	}
}

// closeAll ends every connection (readers then exit without a drop).
func (w *connsWorker) closeAll() {
	w.stopping.Store(true)
	w.mu.Lock()
	defer w.mu.Unlock()
	for nc := range w.conns {
		nc.Close()
	}
	clear(w.conns)
}
