package cluster

import (
	"bytes"
	"context"
	"log"
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"
)

// LoggerFactory adapts l for protoactor:
//
//	sys := actor.NewActorSystem(actor.WithLoggerFactory(cluster.LoggerFactory(logger)))
//
// Records carry lib=protoactor and the actor system ID. protoactor logs
// routine events (endpoints, topology, gossip) at Info; they are lowered
// to Debug. Warn and Error pass through.
func LoggerFactory(l *slog.Logger) func(*actor.ActorSystem) *slog.Logger {
	return func(sys *actor.ActorSystem) *slog.Logger {
		return slog.New(quietInfo{l.Handler()}).With("lib", "protoactor", "system", sys.ID)
	}
}

// quietInfo lowers Info records to Debug.
type quietInfo struct{ h slog.Handler }

func lower(l slog.Level) slog.Level {
	if l == slog.LevelInfo {
		return slog.LevelDebug
	}
	return l
}

func (q quietInfo) Enabled(ctx context.Context, l slog.Level) bool {
	return q.h.Enabled(ctx, lower(l))
}

func (q quietInfo) Handle(ctx context.Context, r slog.Record) error {
	r.Level = lower(r.Level)
	return q.h.Handle(ctx, r)
}

func (q quietInfo) WithAttrs(as []slog.Attr) slog.Handler { return quietInfo{q.h.WithAttrs(as)} }
func (q quietInfo) WithGroup(name string) slog.Handler    { return quietInfo{q.h.WithGroup(name)} }

// newMemberlistLogger returns a *log.Logger for memberlist that routes
// each line to l by its prefix: [DEBUG] to Debug, [INFO] to Info, [WARN]
// and [ERR]/[ERROR] to Warn (memberlist's errors are mostly a peer that
// went away, which the cluster handles).
func newMemberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(memberlistWriter{l.With("lib", "memberlist")}, "", 0)
}

type memberlistWriter struct{ l *slog.Logger }

var mlLevels = []struct {
	prefix []byte
	level  slog.Level
}{
	{[]byte("[DEBUG]"), slog.LevelDebug},
	{[]byte("[INFO]"), slog.LevelInfo},
	{[]byte("[WARN]"), slog.LevelWarn},
	{[]byte("[ERR]"), slog.LevelWarn},
	{[]byte("[ERROR]"), slog.LevelWarn},
}

// Write receives one line per call from log.Logger.
func (w memberlistWriter) Write(p []byte) (int, error) {
	n := len(p)
	line := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, lv := range mlLevels {
		if bytes.HasPrefix(line, lv.prefix) {
			level = lv.level
			line = bytes.TrimSpace(line[len(lv.prefix):])
			break
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	ctx := context.Background()
	if w.l.Enabled(ctx, level) {
		w.l.Log(ctx, level, string(line))
	}
	return n, nil
}
