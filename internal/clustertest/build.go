package clustertest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// binary is ./cmd/tandem built once per test binary.
type binary struct {
	path  string
	flags map[string]bool // flags the binary accepts, from its -h output
}

var (
	buildOnce sync.Once
	built     binary
	buildErr  error
)

// tandemBinary builds ./cmd/tandem into <module root>/tmp/tandem (once),
// or takes $TANDEM_TEST_BINARY, and lists its flags.
func tandemBinary() (binary, error) {
	buildOnce.Do(func() { built, buildErr = buildTandem() })
	return built, buildErr
}

func buildTandem() (binary, error) {
	path := os.Getenv("TANDEM_TEST_BINARY")
	if path == "" {
		root, err := moduleRoot()
		if err != nil {
			return binary{}, err
		}
		dir := filepath.Join(root, "tmp")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return binary{}, fmt.Errorf("clustertest: %w", err)
		}
		// tmp/ holds build output only: keep it out of git status.
		if err := os.WriteFile(filepath.Join(dir, ".gitignore"), []byte("*\n"), 0o644); err != nil {
			return binary{}, fmt.Errorf("clustertest: %w", err)
		}
		// Several test binaries may build at once: each builds to its own
		// file and renames it into place, so a process never execs a
		// half-written binary.
		path = filepath.Join(dir, "tandem")
		part := fmt.Sprintf("%s.%d.part", path, os.Getpid())
		cmd := exec.Command("go", "build", "-o", part, "./cmd/tandem")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(part)
			return binary{}, fmt.Errorf("clustertest: go build ./cmd/tandem: %w\n%s", err, out)
		}
		if err := os.Rename(part, path); err != nil {
			return binary{}, fmt.Errorf("clustertest: %w", err)
		}
	}
	flags, err := binaryFlags(path)
	if err != nil {
		return binary{}, err
	}
	return binary{path: path, flags: flags}, nil
}

var flagLine = regexp.MustCompile(`(?m)^\s+-{1,2}([a-z0-9][a-z0-9-]*)`)

// binaryFlags runs `tandem -h` and collects the flag names it lists.
func binaryFlags(path string) (map[string]bool, error) {
	var out bytes.Buffer
	cmd := exec.Command(path, "-h")
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) { // -h exits 0 or 2
		return nil, fmt.Errorf("clustertest: %s -h: %w", path, err)
	}
	flags := map[string]bool{}
	for _, m := range flagLine.FindAllStringSubmatch(out.String(), -1) {
		flags[m[1]] = true
	}
	if !flags["ws-addr"] {
		return nil, fmt.Errorf("clustertest: %s -h lists no --ws-addr:\n%s", path, out.String())
	}
	return flags, nil
}

// moduleRoot is the folder of the main module's go.mod.
func moduleRoot() (string, error) {
	if out, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		if p := strings.TrimSpace(string(out)); p != "" && p != os.DevNull {
			return filepath.Dir(p), nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("clustertest: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("clustertest: no go.mod above the working directory")
		}
		dir = parent
	}
}
