package node

import (
	"errors"
	"strings"

	"github.com/tandem-im/tandem/cluster"
	"github.com/tandem-im/tandem/persistence"
)

// Exit codes of the tandem command (docs/operations.md, "Exit codes").
const (
	ExitOK          = 0 // stopped cleanly
	ExitError       = 1 // any other error (an address in use, a locked data dir, a serving error)
	ExitBadFlags    = 2 // bad flags or configuration
	ExitDataDir     = 3 // start refused: the data dir is unusable or its store damaged
	ExitAbandoned   = 4 // stopped, but shutdown steps were abandoned at the deadline
	ExitStoreFailed = 5 // the store failed while serving (a write or sync error): restart to recover from what is durable
	ExitBlocked     = 6 // the cluster cut this node off (declared dead while it ran): restart it to rejoin
)

// ExitUsage is the exit code table, for `tandem -h`.
const ExitUsage = `Exit codes:
  0  stopped cleanly
  1  another error (address in use, data dir locked by another tandem, serving error)
  2  bad flags or configuration
  3  start refused: the data dir is unusable (a file, not writable, read-only, full,
     no mmap) or its store is damaged; the message names the file and what to do
  4  stopped, but shutdown steps were abandoned at --shutdown-timeout (they are
     logged; acknowledged messages were durable before their acks)
  5  the store failed while serving (a write or fsync error): nothing was acked
     after it; fix the disk and restart to continue from what is durable
  6  the cluster cut this node off: the other members declared it dead while it
     ran (overload, a long pause, a partition) and never take it back; restart it
     (a restarted node joins with a new member ID)
  A second SIGTERM or SIGINT during the stop ends the process at once (128+signal).
`

// ShutdownError is what Run returns when the node stopped but steps of
// its shutdown were abandoned at the deadline. Err is the serving error
// that ended the node, if any.
type ShutdownError struct {
	Abandoned []string
	Err       error
}

func (e *ShutdownError) Error() string {
	msg := "shutdown steps abandoned at the deadline: " + strings.Join(e.Abandoned, ", ")
	if e.Err != nil {
		msg += " (after: " + e.Err.Error() + ")"
	}
	return msg
}
func (e *ShutdownError) Unwrap() error { return e.Err }

// ExitCode is the command's exit code for Run's error (ParseFlags' errors
// are ExitBadFlags).
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	// A failed store is the news even when the stop after it abandoned
	// steps (badger's close retries a failed flush forever).
	if _, ok := errors.AsType[*StoreFailedError](err); ok {
		return ExitStoreFailed
	}
	if errors.Is(err, cluster.ErrBlocked) { // also when steps of the stop after it were abandoned
		return ExitBlocked
	}
	if _, ok := errors.AsType[*ShutdownError](err); ok {
		return ExitAbandoned
	}
	if _, ok := errors.AsType[*StartError](err); ok {
		if errors.Is(err, persistence.ErrUnusable) || errors.Is(err, persistence.ErrDamaged) {
			return ExitDataDir
		}
		if errors.Is(err, errConfig) {
			return ExitBadFlags
		}
		return ExitError
	}
	return ExitError
}

// errConfig marks a configuration that Validate refused.
var errConfig = errors.New("node: invalid configuration")

// configError is Validate's error as Start returns it: its text, matching
// errConfig.
type configError struct{ err error }

func (e *configError) Error() string        { return e.err.Error() }
func (e *configError) Unwrap() error        { return e.err }
func (e *configError) Is(target error) bool { return target == errConfig }
