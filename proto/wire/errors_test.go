package wire

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestCatalogueDocumented keeps docs/errors.md in step with the catalogue.
func TestCatalogueDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/errors.md")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, c := range Codes() {
		row := "| " + strconv.Itoa(int(c)) + " | `" + c.Name() + "` |"
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/errors.md has no row %q", row)
		}
		if names[c.Name()] {
			t.Errorf("name %s used twice", c.Name())
		}
		names[c.Name()] = true
	}
	for _, n := range []string{"BAD_FRAME", "FRAME_TOO_LARGE", "NOT_LOGGED_IN", "ALREADY_LOGGED_IN", "BAD_TOKEN",
		"TOKEN_EXPIRED", "INVALID_ARGUMENT", "FORBIDDEN", "NOT_FOUND", "LOGIN_CONFLICT", "CURSOR_TOO_OLD",
		"RECALL_WINDOW_PASSED", "NOT_GROUP_MEMBER", "RATE_LIMITED", "UNAVAILABLE", "INTERNAL"} {
		if !names[n] {
			t.Errorf("DESIGN.md §8 requires the name %s", n)
		}
	}
	if e := Err(CodeUnavailable, "x"); !e.Temporary || e.Name != "UNAVAILABLE" || e.Code != 1014 {
		t.Errorf("Err(UNAVAILABLE) = %v", e)
	}
}
