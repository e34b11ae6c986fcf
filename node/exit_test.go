package node

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/tandem-im/tandem/persistence"
)

// TestExitCode: each of Run's outcomes maps to its documented exit code.
func TestExitCode(t *testing.T) {
	damaged := func() error {
		// A real refusal: a data dir path that is a file.
		err := persistence.CheckDir("exit_test.go", false)
		if !errors.Is(err, persistence.ErrUnusable) {
			t.Fatalf("CheckDir(a file) = %v", err)
		}
		return err
	}
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"clean stop", nil, ExitOK},
		{"serving error", errors.New("gateway: accept: too many open files"), ExitError},
		{"address in use", &StartError{Err: listenErr("WebSockets", "127.0.0.1:7400", fmt.Errorf("bind: %w", syscall.EADDRINUSE))}, ExitError},
		{"invalid config", &StartError{Err: &configError{errors.New("--log-level x")}}, ExitBadFlags},
		{"data dir refused", &StartError{Err: damaged()}, ExitDataDir},
		{"data dir refused, wrapped", &StartError{Err: fmt.Errorf("open the store: %w", damaged())}, ExitDataDir},
		{"abandoned steps", &ShutdownError{Abandoned: []string{"store close"}}, ExitAbandoned},
		{"abandoned after a serving error", &ShutdownError{Abandoned: []string{"cluster stop"}, Err: errors.New("x")}, ExitAbandoned},
	} {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("%s: ExitCode(%v) = %d, want %d", tc.name, tc.err, got, tc.want)
		}
	}
}
