package actors

import (
	"errors"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/wire"
)

// writeGate is what a store that refuses writes before they are made
// offers (the badger store: disk full, or failed after a write or sync
// error): WriteErr is nil while it takes writes. The actors ask it before
// a step that would write, and refuse that step with UNAVAILABLE and a
// retry hint, their state untouched, instead of letting the append fail
// (which stops the actor and sends its sessions to log in again). Reads
// go on. A store without it (PostgreSQL) refuses through failed appends.
type writeGate interface {
	WriteErr() error
}

// Retry hints for refusals by the store.
const (
	diskFullRetryAfterMS    = 1000 // space may be freed any time: the guard looks every 250 ms
	storeFailedRetryAfterMS = 2000 // the node restarts (or its users move to another node)
)

// writeErr is why the store refuses writes now, or nil.
func (r *Runtime) writeErr() error {
	if r.gate == nil {
		return nil
	}
	return r.gate.WriteErr()
}

// storeRefusal is what a client is told when the store refused or failed a
// write: the reason and how long to wait before retrying (0: no hint).
// fallback is the message for any other store error.
func storeRefusal(err error, fallback string) (string, uint32) {
	switch {
	case errors.Is(err, persistence.ErrDiskFull):
		return "storage full; retry", diskFullRetryAfterMS
	case errors.Is(err, persistence.ErrStoreFailed):
		return "storage failed on this node; retry", storeFailedRetryAfterMS
	}
	return fallback, 0
}

// storeErr is the UNAVAILABLE error for a store refusal or failure.
func storeErr(err error, fallback string) *wire.Error {
	msg, after := storeRefusal(err, fallback)
	e := wire.Err(wire.CodeUnavailable, msg)
	e.RetryAfterMs = after
	return e
}

// storeErrFrame is storeErr as the reply to request id.
func storeErrFrame(id uint64, err error, fallback string) *wire.Frame {
	return &wire.Frame{Id: id, Body: &wire.Frame_Error{Error: storeErr(err, fallback)}}
}

// writesFrame reports whether handling f writes to the user's log or
// state: refused while the store refuses writes. Transient sends, syncs,
// history, conversation lists and cursor acks (flushed on a later tick)
// do not.
func writesFrame(f *wire.Frame) bool {
	switch b := f.GetBody().(type) {
	case *wire.Frame_Send:
		return !b.Send.GetOptions().GetTransient()
	case *wire.Frame_Edit, *wire.Frame_Recall, *wire.Frame_MarkRead, *wire.Frame_ConversationOp:
		return true
	}
	return false
}
