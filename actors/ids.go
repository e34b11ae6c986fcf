package actors

import (
	"fmt"
	"unsafe"

	"github.com/oklog/ulid/v2"
)

// MaxIDLen is the longest user, group, device or client message ID.
const MaxIDLen = 64

// ValidID reports whether s is a valid user, group or device ID: 1–64
// bytes of [A-Za-z0-9_.@:-] (DESIGN.md §2).
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '_', c == '.', c == '@', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// checkID returns an error naming what is wrong with an ID, or nil.
func checkID(what, s string) error {
	if !ValidID(s) {
		return fmt.Errorf("%s %q must be 1-%d bytes of [A-Za-z0-9_.@:-]", what, truncate(s, 80), MaxIDLen)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// NewMessageID returns a server message ID: a ULID (26 characters,
// Crockford base32), time-sortable to the millisecond and unique across the
// cluster by its 80 random bits; monotonic within one process.
func NewMessageID() string { return ulid.Make().String() }

// newLoginIDIn writes a fresh login ID into buf and returns it, a string
// of buf's bytes: buf must not be written again.
func newLoginIDIn(buf *[ulid.EncodedSize]byte) string {
	id := ulid.Make()
	_ = id.MarshalTextTo(buf[:]) // fails only for a short buffer
	return unsafe.String(&buf[0], len(buf))
}
