package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Request headers of every delivery.
const (
	HeaderEventID   = "X-Tandem-Event-Id"  // the body's "id" (not signed: de-duplicate on the body)
	HeaderTimestamp = "X-Tandem-Timestamp" // Unix seconds of this attempt
	HeaderSignature = "X-Tandem-Signature" // "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body)
)

// DefaultMaxSkew is the timestamp tolerance Verify uses when given none.
const DefaultMaxSkew = 5 * time.Minute

const sigPrefix = "sha256="

// Errors returned by Verify.
var (
	ErrNoSignature  = errors.New("webhook: missing timestamp or signature header")
	ErrBadSignature = errors.New("webhook: signature does not match")
	ErrStale        = errors.New("webhook: timestamp outside the allowed skew")
)

// Sign returns the X-Tandem-Signature value for body sent at unix
// seconds ts.
func Sign(secret string, ts int64, body []byte) string {
	return sigPrefix + hex.EncodeToString(mac(secret, strconv.FormatInt(ts, 10), body))
}

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks a delivery received at now: the signature over the
// timestamp header and body (compared in constant time), then that the
// timestamp is within maxSkew of now (DefaultMaxSkew if maxSkew <= 0). A
// receiver should read the body whole, call Verify, and only then decode
// it.
func Verify(secret string, header http.Header, body []byte, now time.Time, maxSkew time.Duration) error {
	tsText, sigText := header.Get(HeaderTimestamp), header.Get(HeaderSignature)
	if tsText == "" || sigText == "" {
		return ErrNoSignature
	}
	hexSig, ok := strings.CutPrefix(sigText, sigPrefix)
	if !ok {
		return fmt.Errorf("%w: scheme is not %q", ErrBadSignature, strings.TrimSuffix(sigPrefix, "="))
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return fmt.Errorf("%w: not hex", ErrBadSignature)
	}
	if !hmac.Equal(got, mac(secret, tsText, body)) {
		return ErrBadSignature
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q is not Unix seconds", ErrStale, tsText)
	}
	if maxSkew <= 0 {
		maxSkew = DefaultMaxSkew
	}
	skew := now.Sub(time.Unix(ts, 0))
	if skew > maxSkew || skew < -maxSkew {
		return fmt.Errorf("%w: %v off", ErrStale, skew.Round(time.Second))
	}
	return nil
}
