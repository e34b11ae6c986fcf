package auth

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The fast mint writes byte for byte what the library writes.
func TestMintFastIsTheLibrarysToken(t *testing.T) {
	k, _ := New(secret)
	now := time.Unix(1_800_000_000, 123_456_789)
	exp := now.Add(time.Hour).Truncate(time.Second)
	for _, user := range []string{"alice", "u-123_x.y", strings.Repeat("z", 300)} {
		lib, err := k.mintLib(user, now, exp)
		if err != nil {
			t.Fatal(err)
		}
		fast, ok := k.mintFast(user, now, exp)
		if !ok || fast != lib {
			t.Errorf("mintFast(%q) = %q, %v; the library writes %q", user, fast, ok, lib)
		}
	}
	// Subjects JSON may escape (and any non-ASCII) are left to the library.
	for _, user := range []string{`a"b`, `a\b`, "a<b", "a&b", "a\x01b", "ünïcode", "a\u2028b"} {
		if _, ok := k.mintFast(user, now, exp); ok {
			t.Errorf("mintFast(%q) wrote a token; it must leave such subjects to the library", user)
		}
		tok, _, err := k.Mint(user, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if got, _, err := k.Verify(tok); err != nil || got != user {
			t.Errorf("Verify(Mint(%q)) = %q, %v", user, got, err)
		}
	}
}

// verifyAgrees checks that Verify answers what the library alone does,
// and that the fast path accepts only what the library accepts, with the
// same subject and expiry.
func verifyAgrees(t *testing.T, k *Keys, tok string) (fast bool) {
	t.Helper()
	libUser, libExp, libErr := k.verifyLib(tok)
	user, exp, err := k.Verify(tok)
	if user != libUser || !exp.Equal(libExp) || (err == nil) != (libErr == nil) ||
		(err != nil && err.Error() != libErr.Error()) {
		t.Fatalf("Verify(%q) = %q %v %v; the library: %q %v %v", tok, user, exp, err, libUser, libExp, libErr)
	}
	fu, fe, ok := k.verifyFast(tok, k.now())
	if ok && (libErr != nil || fu != libUser || !fe.Equal(libExp)) {
		t.Fatalf("verifyFast(%q) accepted %q %v; the library: %q %v %v", tok, fu, fe, libUser, libExp, libErr)
	}
	return ok
}

func TestVerifyFastAgreesWithLibrary(t *testing.T) {
	k, _ := New(secret)
	other, _ := New(secret + "-other")
	sign := func(header, payload string, key []byte) string {
		enc := base64.RawURLEncoding
		text := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
		sig, err := jwt.SigningMethodHS256.Sign(text, key)
		if err != nil {
			t.Fatal(err)
		}
		return text + "." + enc.EncodeToString(sig)
	}
	const hdr = `{"alg":"HS256","typ":"JWT"}`
	future, past := time.Now().Add(time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
	good, _, _ := k.Mint("alice", time.Hour)
	forged, _, _ := other.Mint("alice", time.Hour)
	parts := strings.Split(good, ".")
	payload := fmt.Sprintf
	for _, tc := range []struct {
		name, tok string
		fast      bool // the fast path is expected to accept it
	}{
		{"minted", good, true},
		{"header in another order", sign(`{"typ":"JWT","alg":"HS256"}`, payload(`{"sub":"a","exp":%d}`, future), k.secret), false},
		{"no iat", sign(hdr, payload(`{"sub":"a","exp":%d}`, future), k.secret), true},
		{"fractional exp", sign(hdr, payload(`{"sub":"a","exp":%d.5}`, future), k.secret), true},
		{"nbf passed", sign(hdr, payload(`{"sub":"a","exp":%d,"nbf":%d}`, future, past), k.secret), true},
		{"nbf to come", sign(hdr, payload(`{"sub":"a","exp":%d,"nbf":%d}`, future, future), k.secret), false},
		{"expired", sign(hdr, payload(`{"sub":"a","exp":%d}`, past), k.secret), false},
		{"no exp", sign(hdr, `{"sub":"a"}`, k.secret), false},
		{"no sub", sign(hdr, payload(`{"exp":%d}`, future), k.secret), false},
		{"exp a string", sign(hdr, `{"sub":"a","exp":"soon"}`, k.secret), false},
		{"aud of the wrong type", sign(hdr, payload(`{"sub":"a","exp":%d,"aud":5}`, future), k.secret), false},
		{"trailing JSON", sign(hdr, payload(`{"sub":"a","exp":%d} {}`, future), k.secret), false},
		{"exp with a leading zero", sign(hdr, payload(`{"sub":"a","exp":0%d}`, future), k.secret), false},
		{"exp past float64's integers", sign(hdr, `{"sub":"a","exp":99999999999999999}`, k.secret), true},
		{"fractional iat", sign(hdr, payload(`{"sub":"a","exp":%d,"iat":1.5}`, future), k.secret), true},
		{"iat first", sign(hdr, payload(`{"iat":1,"sub":"a b","exp":%d}`, future), k.secret), true},
		{"empty subject", sign(hdr, payload(`{"sub":"","exp":%d}`, future), k.secret), false},
		{"escaped subject", sign(hdr, payload(`{"sub":"a\u003cb","exp":%d}`, future), k.secret), true},
		{"forged", forged, false},
		{"tampered payload", parts[0] + "." + parts[1] + "x." + parts[2], false},
		{"short signature", parts[0] + "." + parts[1] + "." + parts[2][:20], false},
		{"padded signature", good + "=", false},
		{"four segments", good + ".x", false},
		{"two segments", parts[0] + "." + parts[1], false},
		{"empty", "", false},
		{"garbage", "not.a.jwt", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := verifyAgrees(t, k, tc.tok); got != tc.fast {
				t.Errorf("fast path accepted: %v, want %v", got, tc.fast)
			}
		})
	}
}

// FuzzVerify: whatever the token, Verify answers what the library does,
// and the fast path never accepts what the library refuses.
func FuzzVerify(f *testing.F) {
	k, _ := New(secret)
	good, _, _ := k.Mint("alice", time.Hour)
	f.Add(good)
	f.Add(good + ".")
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Add("not.a.jwt")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) { verifyAgrees(t, k, tok) })
}

// FuzzVerifyClaims: any payload, signed with the right key and the
// minted header, so that the fast path's claim reading is what differs.
func FuzzVerifyClaims(f *testing.F) {
	k, _ := New(secret)
	future := time.Now().Add(time.Hour).Unix()
	for _, p := range []string{
		fmt.Sprintf(`{"sub":"alice","exp":%d,"iat":%d}`, future, future-3600),
		fmt.Sprintf(`{"sub":"a","exp":%d}`, future),
		fmt.Sprintf(`{"sub":"a","exp":%d.25,"nbf":1}`, future),
		`{"sub":"a","exp":1}`, `{"sub":"a\u0041","exp":9999999999}`, `{"exp":9999999999}`, `{}`, `[]`, `{"sub":"a","exp":09}`,
	} {
		f.Add(p)
	}
	enc := base64.RawURLEncoding
	f.Fuzz(func(t *testing.T, payload string) {
		text := hs256Header + "." + enc.EncodeToString([]byte(payload))
		sig, err := jwt.SigningMethodHS256.Sign(text, k.secret)
		if err != nil {
			t.Fatal(err)
		}
		verifyAgrees(t, k, text+"."+enc.EncodeToString(sig))
	})
}

func BenchmarkVerify(b *testing.B) {
	k, _ := New(secret)
	tok, _, _ := k.Mint("user-123456", time.Hour)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := k.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("library", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := k.verifyLib(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkMint(b *testing.B) {
	k, _ := New(secret)
	now := time.Now()
	exp := now.Add(time.Hour)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			k.mintFast("user-123456", now, exp)
		}
	})
	b.Run("library", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := k.mintLib("user-123456", now, exp); err != nil {
				b.Fatal(err)
			}
		}
	})
}
