package persistence

import (
	"encoding/binary"
	"fmt"
)

// Key layout. Every key starts with a one-byte tag and the user ID with a
// two-byte big-endian length in front of it, so the keys of one user form
// one contiguous range and no user's prefix is a prefix of another user's
// ("a" → 0x0001 'a', "ab" → 0x0002 'a' 'b'). Integers are big-endian so
// byte order is numeric order.
//
//	L user seq(8)                 → timeMS(8) data     sync log          (TTL)
//	E user                        → epoch(8) owner     ownership
//	H user                        → seq(8)             high-water mark
//	I user key                    → seq(8)             dedup index       (TTL)
//	O user seq(8) key             → data               pending outbox
//	D user len(2) device 'r'      → data               device record
//	D user len(2) device 'c'      → seq(8)             device cursor
//	C user convKey                → data               conversation state
//
// With BadgerOptions.Retention set, L and I keys are written with a badger
// TTL (see expiresAt) and H holds the highest seq ever appended, so the
// last seq survives every L key expiring; H is written only then. Keys
// without (TTL) never expire.
//
// The last component of a key (dedup key, outbox key, conversation key) is
// not length-prefixed: nothing follows it, so it cannot bleed into another
// key of the same prefix. The device ID is length-prefixed because the
// record/cursor byte follows it.
const (
	tagLog    = 'L'
	tagEpoch  = 'E'
	tagHWM    = 'H'
	tagDedup  = 'I'
	tagOutbox = 'O'
	tagDevice = 'D'
	tagConv   = 'C'

	deviceRecord = 'r'
	deviceCursor = 'c'
)

const (
	// maxIDLen bounds a user or device ID. Application IDs are at most 64
	// bytes (DESIGN.md §2); the store only needs them to fit a key.
	maxIDLen = 1024
	// maxTailLen bounds a free-form key tail (dedup, outbox, conversation
	// keys): badger refuses keys over 65,000 bytes.
	maxTailLen = 16 << 10
)

func checkUser(user string) error {
	if len(user) == 0 || len(user) > maxIDLen {
		return fmt.Errorf("persistence: user ID must be 1-%d bytes, got %d", maxIDLen, len(user))
	}
	return nil
}

func checkTail(what, s string) error {
	if len(s) > maxTailLen {
		return fmt.Errorf("persistence: %s longer than %d bytes", what, maxTailLen)
	}
	return nil
}

func checkDevice(id string) error {
	if len(id) > maxIDLen {
		return fmt.Errorf("persistence: device ID longer than %d bytes", maxIDLen)
	}
	return nil
}

// userPrefixLen is the length of tag + user.
func userPrefixLen(user string) int { return 1 + 2 + len(user) }

// appendUserPrefix appends tag + length-prefixed user to b.
func appendUserPrefix(b []byte, tag byte, user string) []byte {
	b = append(b, tag)
	b = binary.BigEndian.AppendUint16(b, uint16(len(user)))
	return append(b, user...)
}

func userPrefix(tag byte, user string) []byte {
	return appendUserPrefix(make([]byte, 0, userPrefixLen(user)), tag, user)
}

func logKeyLen(user string) int { return userPrefixLen(user) + 8 }

func appendLogKey(b []byte, user string, seq Seq) []byte {
	b = appendUserPrefix(b, tagLog, user)
	return binary.BigEndian.AppendUint64(b, uint64(seq))
}

func logKey(user string, seq Seq) []byte {
	return appendLogKey(make([]byte, 0, logKeyLen(user)), user, seq)
}

// seqFromLogKey reads the seq at the end of a log key.
func seqFromLogKey(k []byte) Seq {
	return Seq(binary.BigEndian.Uint64(k[len(k)-8:]))
}

func epochKey(user string) []byte { return userPrefix(tagEpoch, user) }

func hwmKey(user string) []byte { return userPrefix(tagHWM, user) }

func appendDedupKey(b []byte, user, key string) []byte {
	return append(appendUserPrefix(b, tagDedup, user), key...)
}

func dedupKey(user, key string) []byte {
	return appendDedupKey(make([]byte, 0, userPrefixLen(user)+len(key)), user, key)
}

func outboxKeyLen(user, key string) int { return userPrefixLen(user) + 8 + len(key) }

func appendOutboxKey(b []byte, user string, seq Seq, key string) []byte {
	b = appendUserPrefix(b, tagOutbox, user)
	b = binary.BigEndian.AppendUint64(b, uint64(seq))
	return append(b, key...)
}

func deviceKeyLen(user, device string) int { return userPrefixLen(user) + 2 + len(device) + 1 }

func appendDeviceKey(b []byte, user, device string, kind byte) []byte {
	b = appendUserPrefix(b, tagDevice, user)
	b = binary.BigEndian.AppendUint16(b, uint16(len(device)))
	b = append(b, device...)
	return append(b, kind)
}

// parseDeviceKey splits the part of a device key after the user prefix.
func parseDeviceKey(rest []byte) (device string, kind byte, ok bool) {
	if len(rest) < 3 {
		return "", 0, false
	}
	n := int(binary.BigEndian.Uint16(rest))
	if len(rest) != 2+n+1 {
		return "", 0, false
	}
	return string(rest[2 : 2+n]), rest[2+n], true
}

func appendConvKey(b []byte, user, conv string) []byte {
	return append(appendUserPrefix(b, tagConv, user), conv...)
}
