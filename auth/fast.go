package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
)

// The common case without the general JWT library: a token with the
// HS256 header below is checked with a pooled HMAC, and its claims are
// read directly when they are in the form Mint writes (with one JSON
// decode otherwise); Mint writes that form itself. It matters where every
// login pays for it: the library's header decode into a map, its parser
// and a new HMAC per call were 12 % of a login storm's CPU (mint and
// verify, session 11).
//
// Verify's fast path only ever says yes: a token it does not accept at
// once (another header, a bad signature, an expired or not-yet-valid
// token, anything unusual) goes through the library, which gives the
// answer and the error, so the two paths cannot disagree (FuzzVerify and
// FuzzVerifyClaims check that).

// hs256Header is the header of a token Mint writes: the one the library
// writes for HS256, `{"alg":"HS256","typ":"JWT"}`.
var hs256Header = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// macs is a pool of HMAC-SHA256 states keyed with one secret.
type macs struct{ pool sync.Pool }

func newMACs(secret []byte) *macs {
	m := &macs{}
	m.pool.New = func() any { return &macState{h: hmac.New(sha256.New, secret)} }
	return m
}

// macState is one pooled HMAC and the scratch the fast paths need.
type macState struct {
	h   hash.Hash
	buf []byte // token text to check, then a segment to decode
	dec []byte // the decoded payload
	sum [sha256.Size]byte
	sig [sha256.Size]byte
}

func (m *macs) get() *macState { return m.pool.Get().(*macState) }

func (m *macs) put(s *macState) {
	if cap(s.buf) <= 4096 && cap(s.dec) <= 4096 {
		m.pool.Put(s)
	}
}

// mac returns the HMAC of text in s.sum.
func (s *macState) mac(text string) []byte {
	s.buf = append(s.buf[:0], text...)
	s.h.Reset()
	s.h.Write(s.buf)
	return s.h.Sum(s.sum[:0])
}

// verifyFast accepts token if it is a valid HS256 token in Mint's form
// for now; ok false means "ask the library", never "bad".
func (k *Keys) verifyFast(token string, now time.Time) (user string, exp time.Time, ok bool) {
	head, rest, found := strings.Cut(token, ".")
	if !found || head != hs256Header {
		return "", time.Time{}, false
	}
	payload, sig, found := strings.Cut(rest, ".")
	if !found || strings.IndexByte(sig, '.') >= 0 || base64.RawURLEncoding.DecodedLen(len(sig)) != sha256.Size {
		return "", time.Time{}, false
	}
	s := k.macs.get()
	defer k.macs.put(s)
	s.buf = append(s.buf[:0], sig...)
	if n, err := base64.RawURLEncoding.Decode(s.sig[:], s.buf); err != nil || n != sha256.Size {
		return "", time.Time{}, false
	}
	if !hmac.Equal(s.mac(token[:len(head)+1+len(payload)]), s.sig[:]) {
		return "", time.Time{}, false
	}
	var err error
	s.buf = append(s.buf[:0], payload...)
	if s.dec, err = base64.RawURLEncoding.AppendDecode(s.dec[:0], s.buf); err != nil {
		return "", time.Time{}, false
	}
	if user, exp, ok := mintedClaims(s.dec); ok {
		if user == "" || !now.Before(exp) {
			return "", time.Time{}, false
		}
		return user, exp, true
	}
	var c jwt.RegisteredClaims // decoded as the library decodes it
	if json.Unmarshal(s.dec, &c) != nil || c.Subject == "" || c.ExpiresAt == nil || !now.Before(c.ExpiresAt.Time) ||
		(c.NotBefore != nil && now.Before(c.NotBefore.Time)) {
		return "", time.Time{}, false
	}
	return c.Subject, c.ExpiresAt.Time, true
}

// mintedClaims reads a payload exactly in Mint's form,
// {"sub":"…","exp":N,"iat":M} (iat optional) with a subject of plain ASCII
// and no escapes and whole seconds float64 holds exactly, as the
// library's decoder would read it; ok false for anything else.
func mintedClaims(p []byte) (user string, exp time.Time, ok bool) {
	rest, found := cutPrefix(p, `{"sub":"`)
	if !found {
		return "", time.Time{}, false
	}
	end := 0
	for ; end < len(rest) && rest[end] != '"'; end++ {
		if c := rest[end]; c < 0x20 || c >= 0x7f || c == '\\' {
			return "", time.Time{}, false
		}
	}
	if end == len(rest) {
		return "", time.Time{}, false
	}
	sub := rest[:end]
	if rest, found = cutPrefix(rest[end+1:], `,"exp":`); !found {
		return "", time.Time{}, false
	}
	secs, rest, found := cutSeconds(rest)
	if !found {
		return "", time.Time{}, false
	}
	if r, found := cutPrefix(rest, `,"iat":`); found {
		if _, rest, found = cutSeconds(r); !found {
			return "", time.Time{}, false
		}
	}
	if len(rest) != 1 || rest[0] != '}' {
		return "", time.Time{}, false
	}
	return string(sub), time.Unix(secs, 0), true
}

func cutPrefix(p []byte, prefix string) ([]byte, bool) {
	if len(p) < len(prefix) || string(p[:len(prefix)]) != prefix {
		return p, false
	}
	return p[len(prefix):], true
}

// cutSeconds reads 1 to 15 decimal digits (exact in a float64, as the
// library decodes them), not starting with 0 unless it is the only one.
func cutSeconds(p []byte) (int64, []byte, bool) {
	n, i := int64(0), 0
	for ; i < len(p) && i < 16 && p[i] >= '0' && p[i] <= '9'; i++ {
		n = n*10 + int64(p[i]-'0')
	}
	if i == 0 || i > 15 || (p[0] == '0' && i > 1) {
		return 0, p, false
	}
	return n, p[i:], true
}

// mintFast writes the token the library would for these claims (same
// header, claims in the same order), or ok false for a subject that is not
// plain ASCII the library's JSON encoder copies as it is.
func (k *Keys) mintFast(user string, now, exp time.Time) (string, bool) {
	for i := 0; i < len(user); i++ {
		if c := user[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return "", false // escaped or checked by the library's JSON encoder
		}
	}
	s := k.macs.get()
	defer k.macs.put(s)
	var p [256]byte
	payload := append(p[:0], `{"sub":"`...)
	payload = append(payload, user...)
	payload = append(payload, `","exp":`...)
	payload = strconv.AppendInt(payload, exp.Unix(), 10)
	payload = append(payload, `,"iat":`...)
	payload = strconv.AppendInt(payload, now.Unix(), 10)
	payload = append(payload, '}')

	enc := base64.RawURLEncoding
	out := make([]byte, 0, len(hs256Header)+2+enc.EncodedLen(len(payload))+enc.EncodedLen(sha256.Size))
	out = append(out, hs256Header...)
	out = append(out, '.')
	out = enc.AppendEncode(out, payload)
	s.h.Reset()
	s.h.Write(out)
	out = append(out, '.')
	out = enc.AppendEncode(out, s.h.Sum(s.sum[:0]))
	// out was sized exactly and is not written again: the token is its
	// bytes, not a copy of them (half of a mint's allocation).
	return unsafe.String(unsafe.SliceData(out), len(out)), true
}
