package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var (
	// ErrBadToken: the token is malformed, not HS256, badly signed, or has
	// no subject or expiry.
	ErrBadToken = errors.New("auth: bad token")
	// ErrExpired: the token was valid but its expiry has passed.
	ErrExpired = errors.New("auth: token expired")
)

// MaxTTL bounds the lifetime of a minted token.
const MaxTTL = 30 * 24 * time.Hour

// Keys signs and verifies tokens with one HS256 secret.
type Keys struct {
	secret []byte
	now    func() time.Time
	macs   *macs // HMAC states for the fast paths (fast.go)
}

// New returns Keys for secret, which must be at least 16 bytes.
func New(secret string) (*Keys, error) {
	if len(secret) < 16 {
		return nil, fmt.Errorf("auth: jwt secret must be at least 16 bytes, got %d", len(secret))
	}
	return &Keys{secret: []byte(secret), now: time.Now, macs: newMACs([]byte(secret))}, nil
}

// Mint returns a token for user that expires after ttl.
func (k *Keys) Mint(user string, ttl time.Duration) (string, time.Time, error) {
	if ttl <= 0 || ttl > MaxTTL {
		return "", time.Time{}, fmt.Errorf("auth: ttl %s outside (0, %s]", ttl, MaxTTL)
	}
	now := k.now()
	exp := now.Add(ttl).Truncate(time.Second)
	if tok, ok := k.mintFast(user, now, exp); ok {
		return tok, exp, nil
	}
	tok, err := k.mintLib(user, now, exp)
	return tok, exp, err
}

// mintLib is Mint through the JWT library (subjects JSON escapes).
func (k *Keys) mintLib(user string, now, exp time.Time) (string, error) {
	claims := jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(exp),
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(k.secret)
	if err != nil {
		return "", fmt.Errorf("auth: signing token: %w", err)
	}
	return tok, nil
}

// Verify checks token and returns its subject (the user ID) and expiry.
// Errors are ErrBadToken or ErrExpired, wrapped with the reason.
func (k *Keys) Verify(token string) (string, time.Time, error) {
	if user, exp, ok := k.verifyFast(token, k.now()); ok {
		return user, exp, nil
	}
	return k.verifyLib(token)
}

// verifyLib is Verify through the JWT library: every token the fast path
// does not accept at once, and every refusal.
func (k *Keys) verifyLib(token string) (string, time.Time, error) {
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return k.secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(k.now),
	)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "", time.Time{}, fmt.Errorf("%w: %v", ErrExpired, err)
	case err != nil:
		return "", time.Time{}, fmt.Errorf("%w: %v", ErrBadToken, err)
	case claims.Subject == "":
		return "", time.Time{}, fmt.Errorf("%w: no subject", ErrBadToken)
	}
	return claims.Subject, claims.ExpiresAt.Time, nil
}
