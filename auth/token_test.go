package auth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const secret = "0123456789abcdef-test-secret"

func TestMintVerify(t *testing.T) {
	k, err := New(secret)
	if err != nil {
		t.Fatal(err)
	}
	tok, exp, err := k.Mint("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	user, gotExp, err := k.Verify(tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if user != "alice" || !gotExp.Equal(exp) {
		t.Fatalf("Verify = %q %v, want alice %v", user, gotExp, exp)
	}
}

func TestVerifyRejects(t *testing.T) {
	k, _ := New(secret)
	other, _ := New(secret + "-other")
	good, _, _ := k.Mint("alice", time.Hour)
	forged, _, _ := other.Mint("alice", time.Hour)

	past, _ := New(secret)
	past.now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	expired, _, _ := past.Mint("alice", time.Hour)

	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "alice"}).SignedString([]byte(secret))
	noSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}).SignedString([]byte(secret))
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.RegisteredClaims{Subject: "alice", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}).SignedString([]byte(secret))
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{Subject: "alice", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + parts[1] + "x." + parts[2]

	for _, tc := range []struct {
		name, tok string
		want      error
	}{
		{"empty", "", ErrBadToken},
		{"garbage", "not.a.jwt", ErrBadToken},
		{"forged", forged, ErrBadToken},
		{"tampered", tampered, ErrBadToken},
		{"expired", expired, ErrExpired},
		{"no expiry", noExp, ErrBadToken},
		{"no subject", noSub, ErrBadToken},
		{"other alg", hs512, ErrBadToken},
		{"alg none", none, ErrBadToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := k.Verify(tc.tok); !errors.Is(err, tc.want) {
				t.Fatalf("Verify(%s) err = %v, want %v", tc.name, err, tc.want)
			}
		})
	}
}

func TestNewAndMintBounds(t *testing.T) {
	if _, err := New("short"); err == nil {
		t.Fatal("New accepted a 5-byte secret")
	}
	k, _ := New(secret)
	for _, ttl := range []time.Duration{0, -time.Second, MaxTTL + time.Second} {
		if _, _, err := k.Mint("alice", ttl); err == nil {
			t.Fatalf("Mint accepted ttl %s", ttl)
		}
	}
}
