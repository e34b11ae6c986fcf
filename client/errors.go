package client

import (
	"errors"
	"fmt"

	"github.com/tandem-im/tandem/proto/wire"
)

var (
	// ErrClosed: the client was closed (Close or Logout); nothing more is
	// sent or received.
	ErrClosed = errors.New("client: closed")
	// ErrConnectionLost: the connection dropped while a request that is not
	// resent after a reconnect (anything but a stored Send) was in flight.
	ErrConnectionLost = errors.New("client: connection lost")
)

// Error is an Error frame the server answered with, for a request or a
// login. Use errors.As to get it, or ErrorCode.
type Error struct {
	Wire *wire.Error
}

func (e *Error) Error() string {
	return fmt.Sprintf("client: server error %d %s: %s", e.Wire.GetCode(), e.Wire.GetName(), e.Wire.GetMessage())
}

// Code is the catalogue code of the error.
func (e *Error) Code() wire.Code { return wire.Code(e.Wire.GetCode()) }

// Temporary reports whether retrying the same request may succeed.
func (e *Error) Temporary() bool { return e.Wire.GetTemporary() }

// ErrorCode returns the catalogue code of the server Error inside err, or
// 0 if err carries none.
func ErrorCode(err error) wire.Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code()
	}
	return 0
}

// KickError is why a client stopped after the server kicked its session
// without allowing an automatic reconnect (Kick.may_reconnect false).
type KickError struct {
	Kick *wire.Kick
}

func (e *KickError) Error() string {
	return fmt.Sprintf("client: kicked: %s (close code %d, new device %q)",
		e.Kick.GetReason(), e.Kick.GetCloseCode(), e.Kick.GetNewDevicePlatform())
}

// decodeError is a server frame that could not be decoded; the connection
// goes on.
type decodeError struct{ err error }

func (e *decodeError) Error() string { return "client: undecodable server frame: " + e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }
