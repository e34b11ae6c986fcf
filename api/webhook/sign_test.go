package webhook

import (
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func signedHeader(secret string, ts int64, body []byte) http.Header {
	h := http.Header{}
	h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderSignature, Sign(secret, ts, body))
	return h
}

func TestVerify(t *testing.T) {
	const secret = "s3cret"
	now := time.Unix(1767229200, 0)
	body := []byte(`{"id":"x","type":"user.online","user_id":"alice","at_ms":1}`)
	good := signedHeader(secret, now.Unix(), body)

	tests := []struct {
		name   string
		secret string
		header http.Header
		body   []byte
		skew   time.Duration
		want   error
	}{
		{"valid", secret, good, body, time.Minute, nil},
		{"valid within skew", secret, signedHeader(secret, now.Unix()-50, body), body, time.Minute, nil},
		{"default skew", secret, signedHeader(secret, now.Unix()-240, body), body, 0, nil},
		{"tampered body", secret, good, []byte(`{"id":"x","type":"user.online","user_id":"mallory","at_ms":1}`), time.Minute, ErrBadSignature},
		{"wrong secret", "other", good, body, time.Minute, ErrBadSignature},
		{"stale timestamp", secret, signedHeader(secret, now.Unix()-120, body), body, time.Minute, ErrStale},
		{"future timestamp", secret, signedHeader(secret, now.Unix()+120, body), body, time.Minute, ErrStale},
		{"stale past default skew", secret, signedHeader(secret, now.Unix()-600, body), body, 0, ErrStale},
		{"timestamp swapped", secret, func() http.Header {
			h := good.Clone()
			h.Set(HeaderTimestamp, strconv.FormatInt(now.Unix()+1, 10))
			return h
		}(), body, time.Minute, ErrBadSignature},
		{"no headers", secret, http.Header{}, body, time.Minute, ErrNoSignature},
		{"no signature", secret, http.Header{HeaderTimestamp: good[HeaderTimestamp]}, body, time.Minute, ErrNoSignature},
		{"other scheme", secret, func() http.Header {
			h := good.Clone()
			h.Set(HeaderSignature, "sha1="+good.Get(HeaderSignature)[len("sha256="):])
			return h
		}(), body, time.Minute, ErrBadSignature},
		{"not hex", secret, func() http.Header {
			h := good.Clone()
			h.Set(HeaderSignature, "sha256=zz")
			return h
		}(), body, time.Minute, ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.secret, tt.header, tt.body, now, tt.skew)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

// The signature is exactly the documented construction, so receivers in
// other languages can compute it.
func TestSignKnownAnswer(t *testing.T) {
	// printf '1700000000.{}' | openssl dgst -sha256 -hmac key
	got := Sign("key", 1700000000, []byte("{}"))
	want := "sha256=" + "9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
	if got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("key", "1700000000", "sha256=00", []byte("{}"))
	f.Add("key", "-1", "sha256=", []byte(""))
	f.Add("", "99999999999999999999", "sha1=ab", []byte("x"))
	now := time.Unix(1700000000, 0)
	f.Fuzz(func(t *testing.T, secret, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderSignature, sig)
		if err := Verify(secret, h, body, now, time.Minute); err == nil {
			t.Fatalf("forged signature %q accepted", sig) // needs an HMAC forgery
		}
		// What Sign produces always verifies.
		if n, err := strconv.ParseInt(ts, 10, 64); err == nil && n > 0 && n < 1<<40 {
			if err := Verify(secret, signedHeader(secret, n, body), body, time.Unix(n, 0), time.Minute); err != nil {
				t.Fatalf("own signature rejected: %v", err)
			}
		}
	})
}
