//go:build !race && unix

// Package interop_test runs WebSocket clients that share no code with the
// server against a real node: the npm `ws` package under Node.js and
// headless Chromium's own WebSocket. Both run scenario.mjs (login, a Send
// answered by SendAck, the Push at the recipient, a 70,000-byte frame,
// logout and the close handshake) on subprotocol tandem.v1.json.
//
// It starts a protoactor cluster member, so it stays out of the race run
// and runs in scripts/test.sh's race-free pass (./test/...). Its
// dependencies come from scripts/deps.sh (node, npm, chromium) and from
// this directory's package-lock.json (`npm ci`, run by the test when
// node_modules is missing). Under -short the browser test is skipped; in a
// full run a missing chromium fails it. Unix only (Chromium is stopped as
// a process group).
package interop_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/node"
)

const (
	adminKey  = "interop-admin-key"
	jwtSecret = "interop-jwt-secret-0123456789abcdef"
	// sentText crosses both clients' UTF-8 handling (2-, 3- and 4-byte
	// sequences) inside base64 inside JSON.
	sentText = "héllo bob — interop ✓ 🚀"
)

func TestNodeWS(t *testing.T) {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed; run scripts/deps.sh: %v", err)
	}
	npmCI(t)
	n := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin, "ws_client.mjs")
	cmd.Env = append(os.Environ(),
		"TANDEM_WS_URL=ws://"+n.WSAddr()+"/ws",
		"TANDEM_TOKEN_ALICE="+token(t, n, "alice"),
		"TANDEM_TOKEN_BOB="+token(t, n, "bob"),
		"TANDEM_TEXT="+sentText,
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	out := strings.TrimSpace(stdout.String())
	if runErr != nil {
		t.Fatalf("ws_client.mjs: %v\nstdout: %s\nstderr: %s", runErr, out, stderr.String())
	}
	var sum summary
	if err := json.Unmarshal([]byte(out[strings.LastIndexByte(out, '\n')+1:]), &sum); err != nil {
		t.Fatalf("summary %q: %v", out, err)
	}
	checkSummary(t, sum, stderr.String())
	if sum.WSLevel == nil || sum.WSLevel.Pong != "ws-level ping ✓" || sum.WSLevel.CloseEcho != 4321 {
		t.Fatalf("ws-level checks %+v, want the ping payload echoed and close 4321 echoed", sum.WSLevel)
	}
	t.Logf("npm ws: %+v", sum)
}

func TestChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("headless Chromium interop skipped under -short (a full run needs chromium from scripts/deps.sh)")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed; run scripts/deps.sh: %v", err)
	}
	n := startNode(t)
	cfg, err := json.Marshal(map[string]any{
		"wsURL":  "ws://" + n.WSAddr() + "/ws",
		"tokens": map[string]string{"alice": token(t, n, "alice"), "bob": token(t, n, "bob")},
		"text":   sentText,
	})
	if err != nil {
		t.Fatal(err)
	}

	// The page, the scenario and the result endpoint, on one origin.
	results := make(chan []byte, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, "browser.html")
	})
	mux.HandleFunc("GET /scenario.mjs", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		http.ServeFile(w, r, "scenario.mjs")
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(cfg)
	})
	mux.HandleFunc("POST /result", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case results <- b:
		default: // a second report: the first one counts
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	var browserOut bytes.Buffer
	cmd := exec.Command(chromium,
		"--headless=new", "--no-sandbox", "--disable-gpu",
		"--user-data-dir="+t.TempDir(),
		"--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
		// Loopback only: none of the browser's own services.
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-default-apps", "--disable-extensions", "--disable-domain-reliability",
		"--no-pings", "--metrics-recording-only", "--disable-client-side-phishing-detection",
		"--disable-features=Translate,OptimizationHints,MediaRouter",
		"http://"+ln.Addr().String()+"/",
	)
	cmd.Stdout, cmd.Stderr = &browserOut, &browserOut
	// Its zygote and renderers share its process group; its crash
	// handler (a group of its own) exits when the browser does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		// By its process id: the group Setpgid made, which is chromium's.
		if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
			t.Errorf("kill chromium (pgid %d): %v", pid, err)
		}
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("chromium (pid %d) did not exit after SIGKILL", pid)
		}
	}
	t.Cleanup(stop)

	var raw []byte
	select {
	case raw = <-results:
	case err := <-exited:
		exited <- err // for stop
		t.Fatalf("chromium exited (%v) before the page reported:\n%s", err, browserOut.String())
	case <-time.After(90 * time.Second):
		t.Fatalf("no result from the page after 90 s; chromium output:\n%s", browserOut.String())
	}
	var sum summary
	if err := json.Unmarshal(raw, &sum); err != nil {
		t.Fatalf("result %q: %v", raw, err)
	}
	checkSummary(t, sum, strings.Join(sum.Log, "\n"))
	if !strings.Contains(sum.Client, "Chrome") {
		t.Errorf("user agent %q is not Chromium's", sum.Client)
	}
	sum.Log = nil
	t.Logf("chromium: %+v", sum)
}

// summary is what scenario.mjs returns.
type summary struct {
	OK         bool   `json:"ok"`
	Error      string `json:"error"`
	Client     string `json:"client"`
	Protocol   string `json:"protocol"`
	Extensions string `json:"extensions"`
	SendAck    struct {
		MessageID string `json:"messageId"`
		Seq       int    `json:"seq"`
	} `json:"sendAck"`
	Push struct {
		MessageID    string `json:"messageId"`
		Seq          int    `json:"seq"`
		Sender       string `json:"sender"`
		Conversation string `json:"conversation"`
		Text         string `json:"text"`
	} `json:"push"`
	Pongs   []int          `json:"pongs"`
	Closes  map[string]int `json:"closes"`
	WSLevel *struct {
		Pong      string `json:"pong"`
		CloseEcho int    `json:"closeEcho"`
	} `json:"wsLevel"`
	Log []string `json:"log"`
}

func checkSummary(t *testing.T, s summary, log string) {
	t.Helper()
	if !s.OK {
		t.Fatalf("scenario failed: %s\nclient log:\n%s", s.Error, log)
	}
	var problems []string
	check := func(ok bool, format string, args ...any) {
		if !ok {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	check(s.Protocol == "tandem.v1.json", "negotiated subprotocol %q, want tandem.v1.json", s.Protocol)
	check(s.Extensions == "", "negotiated extensions %q, want none (the client offered permessage-deflate)", s.Extensions)
	check(s.SendAck.MessageID != "" && s.SendAck.Seq > 0, "SendAck %+v", s.SendAck)
	check(s.Push.MessageID == s.SendAck.MessageID, "pushed message %q, acked %q", s.Push.MessageID, s.SendAck.MessageID)
	check(s.Push.Seq > 0 && s.Push.Sender == "alice" && s.Push.Conversation == "alice",
		"push %+v, want a message from alice in bob's conversation with alice", s.Push)
	check(s.Push.Text == sentText, "pushed text %q, want %q", s.Push.Text, sentText)
	check(slices.Equal(s.Pongs, []int{70000, 70000}), "pongs for the 70,000-byte pings %v", s.Pongs)
	check(s.Closes["alice"] == 1000 && s.Closes["bob"] == 1000, "close codes after logout %v, want 1000", s.Closes)
	if len(problems) > 0 {
		t.Fatalf("%s\nclient log:\n%s", strings.Join(problems, "\n"), log)
	}
}

// npmCI installs this directory's locked npm packages if node_modules is
// missing.
func npmCI(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join("node_modules", "ws", "package.json")); err == nil {
		return
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("npm is not installed; run scripts/deps.sh: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error").CombinedOutput()
	if err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}
}

func startNode(t *testing.T) *node.Node {
	t.Helper()
	cfg := node.Config{
		DataDir:    t.TempDir(),
		WSAddr:     "127.0.0.1:0",
		APIAddr:    "127.0.0.1:0",
		GossipAddr: "127.0.0.1:0",
		RemoteAddr: "127.0.0.1:0",
		AdminKey:   adminKey,
		JWTSecret:  jwtSecret,
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	n, err := node.Start(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() { n.Stop() })
	return n
}

func token(t *testing.T, n *node.Node, user string) string {
	t.Helper()
	tok, err := client.MintToken(context.Background(), "http://"+n.APIAddr(), adminKey, user, time.Hour)
	if err != nil {
		t.Fatalf("mint a token for %s: %v", user, err)
	}
	return tok
}
