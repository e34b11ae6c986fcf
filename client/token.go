package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// MintToken asks the server API at apiURL (e.g. "http://127.0.0.1:7401")
// for a login token for user, valid for ttl (0: the server's default).
// For tests and benchmarks; an app backend may mint JWTs itself.
func MintToken(ctx context.Context, apiURL, adminKey, user string, ttl time.Duration) (string, error) {
	body, err := json.Marshal(struct {
		UserID     string `json:"user_id"`
		TTLSeconds int64  `json:"ttl_seconds,omitempty"`
	}{user, int64(ttl / time.Second)})
	if err != nil {
		return "", fmt.Errorf("client: mint token for %q: %w", user, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(apiURL, "/")+"/v1/tokens", bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("client: mint token for %q: %w", user, err)
	}
	req.Header.Set("Authorization", "Bearer "+adminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("client: mint token for %q: %w", user, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("client: mint token for %q: read answer: %w", user, err)
	}
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("client: mint token for %q: %s: %s", user, resp.Status, strings.TrimSpace(string(b)))
	}
	var out struct {
		Token       string `json:"token"`
		ExpiresAtMs int64  `json:"expires_at_ms"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return "", fmt.Errorf("client: mint token for %q: decode answer: %w", user, err)
	}
	if out.Token == "" {
		return "", fmt.Errorf("client: mint token for %q: answer has no token", user)
	}
	return out.Token, nil
}
