package node

import (
	"strings"
	"testing"
	"time"
)

func TestParseFlagsDefaultsAndEnv(t *testing.T) {
	t.Setenv("TANDEM_WS_ADDR", "127.0.0.1:9000")
	t.Setenv("TANDEM_COMPENSATION_DAYS", "3")
	t.Setenv("TANDEM_API_ADDR", "127.0.0.1:9999") // the flag below wins
	c, err := ParseFlags([]string{"--api-addr", "127.0.0.1:9001", "--seeds", "a:1, b:2", "--unsafe-multi-node-badger"})
	if err != nil {
		t.Fatal(err)
	}
	if c.WSAddr != "127.0.0.1:9000" || c.APIAddr != "127.0.0.1:9001" || c.CompensationDays != 3 {
		t.Fatalf("env twins / flag precedence wrong: %+v", c)
	}
	if len(c.Seeds) != 2 || c.Seeds[1] != "b:2" {
		t.Fatalf("seeds = %q", c.Seeds)
	}
	if c.HeartbeatTimeout != 60*time.Second || c.Store != "badger" || c.DataDir != "data" {
		t.Fatalf("defaults wrong: %+v", c)
	}
}

func TestValidateRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"multi-node badger", []string{"--seeds", "x:1"}, "unsafe-multi-node-badger"},
		{"postgres not yet", []string{"--store", "postgres://x/y"}, "PostgreSQL"},
		{"unknown store", []string{"--store", "mysql"}, "--store"},
		{"short secret", []string{"--jwt-secret", "short"}, "16 bytes"},
		{"compensation too long", []string{"--compensation-days", "8"}, "compensation days"},
		{"retention too short", []string{"--retention", "1h"}, "retention"},
		{"log level", []string{"--log-level", "loud"}, "log-level"},
		{"stray argument", []string{"serve"}, "unexpected arguments"},
		{"kick policy", []string{"--kick-policy", "lottery"}, "kick policy"},
		{"class limits syntax", []string{"--class-limits", "web"}, "class-limits"},
		{"class limits class", []string{"--class-limits", "fridge=2"}, "unknown platform class"},
		{"class limits zero", []string{"--class-limits", "web=0"}, "must be 1-1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFlags(tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseFlags(%v) err = %v, want mention of %q", tc.args, err, tc.want)
			}
		})
	}
	t.Setenv("TANDEM_HEARTBEAT_TIMEOUT", "soon")
	if _, err := ParseFlags(nil); err == nil || !strings.Contains(err.Error(), "TANDEM_HEARTBEAT_TIMEOUT") {
		t.Fatalf("a bad environment value must be named: %v", err)
	}
}

func TestSecretGeneratedOnceAndKept(t *testing.T) {
	dir := t.TempDir()
	a, err := secret("", dir, "admin-key")
	if err != nil || len(a) < 32 {
		t.Fatalf("generated %q, %v", a, err)
	}
	b, err := secret("", dir, "admin-key")
	if err != nil || b != a {
		t.Fatalf("second start read %q, want the stored %q", b, a)
	}
	if c, _ := secret("given", dir, "admin-key"); c != "given" {
		t.Fatalf("a configured secret must win, got %q", c)
	}
}
