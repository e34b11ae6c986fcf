package persistence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2/record"
)

// checkPebbleManifest refuses a pebble store whose current MANIFEST has a
// damaged record before its end. Pebble reads a MANIFEST up to the first
// record that fails its checksum and treats the rest as not written,
// which is right for the tail a crash leaves (an incomplete last record:
// record.ErrUnexpectedEOF) but, for a record damaged in the middle, opens
// an older version of the store and deletes the tables the lost records
// added: acked data gone without an error. The record reader tells the two
// apart (it reads ahead for valid chunks after the bad one).
func checkPebbleManifest(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ioRefusal(dir, "cannot be listed", err)
	}
	var current string
	for _, e := range ents {
		// marker.manifest.<iteration>.<MANIFEST-n>: the last iteration is
		// the current one (one marker file is kept).
		if rest, ok := strings.CutPrefix(e.Name(), "marker.manifest."); ok {
			if i := strings.Index(rest, "."); i >= 0 {
				current = rest[i+1:]
			}
		}
	}
	if current == "" || current == "MANIFEST-000000" {
		return nil // a new store
	}
	p := filepath.Join(dir, current)
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return damaged(p, "is missing while its marker names it (pebble would start empty)", err)
	}
	if err != nil {
		return ioRefusal(p, "cannot be read", err)
	}
	defer f.Close()
	rr := record.NewReader(f, 0)
	for n := 0; ; n++ {
		off := rr.Offset()
		r, err := rr.Next()
		if err == nil {
			_, err = io.Copy(io.Discard, r)
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, record.ErrUnexpectedEOF):
			// The reader found no valid chunk in a later block: a crash's
			// incomplete last record, or damage within the last block.
			if bad, at := badChunkBeforeEnd(p, off); bad {
				return damaged(p, fmt.Sprintf("has a damaged record (number %d, chunk at byte %d) before its end: pebble would open an older version of the store and delete newer tables", n+1, at), err)
			}
			return nil
		case errors.Is(err, record.ErrInvalidChunk), errors.Is(err, record.ErrZeroedChunk):
			return damaged(p, fmt.Sprintf("has a damaged record (number %d) before its end: pebble would open an older version of the store and delete newer tables", n+1), err)
		default:
			return ioRefusal(p, "cannot be read", err)
		}
	}
}

// badChunkBeforeEnd walks the MANIFEST's chunks (pebble's legacy record
// format: 32 KiB blocks, chunk header of a masked CRC-32C, a little-endian
// length and a type) from off and reports whether a chunk that is whole
// by its length fails its checksum while non-zero bytes follow it: that
// is damage, where a crash's tear leaves the last chunk short or nothing
// after it.
func badChunkBeforeEnd(path string, off int64) (bool, int64) {
	b, err := os.ReadFile(path)
	if err != nil {
		return false, 0
	}
	const block, header = 32 << 10, 7
	for pos := off; pos < int64(len(b)); {
		if left := block - pos%block; left < header {
			pos += left // the writer zero-pads a block's tail
			continue
		}
		if pos+header > int64(len(b)) {
			return false, 0
		}
		sum := binary.LittleEndian.Uint32(b[pos:])
		n := int64(binary.LittleEndian.Uint16(b[pos+4:]))
		end := pos + header + n
		if sum == 0 && n == 0 {
			return false, 0 // zeroes: the end of what was written
		}
		if end > int64(len(b)) {
			return false, 0 // cut short: a tear
		}
		if maskedCRC(b[pos+6:end]) != sum {
			return slices.ContainsFunc(b[end:], func(c byte) bool { return c != 0 }), pos
		}
		pos = end
	}
	return false, 0
}

// maskedCRC is pebble's (and LevelDB's) masked CRC-32C.
func maskedCRC(b []byte) uint32 {
	c := crc32.Checksum(b, castagnoli)
	return (c>>15 | c<<17) + 0xa282ead8
}
