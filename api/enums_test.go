package api

import (
	"context"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-im/tandem/actors"
	"github.com/tandem-im/tandem/auth"
	"github.com/tandem-im/tandem/proto/wire"
)

// These tests pin the HTTP side of the JSON rules docs/protocol.md ("JSON
// encoding rules") and docs/api.yaml document: which enum spellings and
// field names the server API accepts, and how it writes numbers and zero
// values. If one fails, fix the code or the docs, never only one of them.

// recordingMessages is fakeMessages that remembers the last conversation.
type recordingMessages struct {
	fakeMessages
	mu   sync.Mutex
	conv *wire.Conversation
}

func (r *recordingMessages) SendAs(ctx context.Context, from string, m *wire.Send, include bool) (*wire.Frame, error) {
	r.mu.Lock()
	r.conv = m.GetConversation()
	r.mu.Unlock()
	return r.fakeMessages.SendAs(ctx, from, m, include)
}

func (r *recordingMessages) History(ctx context.Context, user string, h *wire.HistoryRequest) (*wire.Frame, error) {
	r.mu.Lock()
	r.conv = h.GetConversation()
	r.mu.Unlock()
	return &wire.Frame{Body: &wire.Frame_HistoryPage{HistoryPage: &wire.HistoryPage{}}}, nil
}

func (r *recordingMessages) last() wire.Conversation_Type {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.conv.GetType()
	r.conv = nil
	return t
}

func newEnumServer(t *testing.T) (*httptest.Server, *recordingMessages) {
	t.Helper()
	keys, err := auth.New("0123456789abcdef0123")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingMessages{}
	s, err := New(Config{AdminKey: "adm", Minter: keys, Gatherer: prometheus.NewRegistry(), Sessions: fakeSessions{}, Messages: rec, Groups: fakeGroups{},
		ValidID: func(s string) bool { return s != "" && !strings.Contains(s, " ") }})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts, rec
}

// The conversation type is accepted in any case: "direct" as documented,
// and "DIRECT" as the WebSocket writes it.
func TestHTTPConversationTypeAnyCase(t *testing.T) {
	ts, rec := newEnumServer(t)
	for typ, want := range map[string]wire.Conversation_Type{
		"direct": wire.Conversation_DIRECT, "DIRECT": wire.Conversation_DIRECT, "Direct": wire.Conversation_DIRECT,
		"group": wire.Conversation_GROUP, "GROUP": wire.Conversation_GROUP,
	} {
		body := `{"from":"alice","conversation":{"type":"` + typ + `","id":"bob"},"type":1}`
		if code, m := do(t, "POST", ts.URL+"/v1/messages", "adm", body); code != 200 {
			t.Fatalf("type %q: %d %v", typ, code, m)
		}
		if got := rec.last(); got != want {
			t.Fatalf("type %q: sent %v", typ, got)
		}
		if code, m := do(t, "GET", ts.URL+"/v1/users/alice/history?conversation_type="+typ+"&conversation_id=bob", "adm", ""); code != 200 {
			t.Fatalf("history type %q: %d %v", typ, code, m)
		}
		if got := rec.last(); got != want {
			t.Fatalf("history type %q: asked %v", typ, got)
		}
	}
	// Numbers are not accepted for the conversation type on HTTP (the
	// WebSocket accepts 1 and 2), nor the proto's TYPE_UNSPECIFIED.
	for _, conv := range []string{`{"type":1,"id":"bob"}`, `{"type":"1","id":"bob"}`, `{"type":"TYPE_UNSPECIFIED","id":"bob"}`, `{"id":"bob"}`} {
		body := `{"from":"alice","conversation":` + conv + `,"type":1}`
		if code, m := do(t, "POST", ts.URL+"/v1/messages", "adm", body); code != 400 || errName(m) != "INVALID_ARGUMENT" {
			t.Fatalf("%s: %d %v", conv, code, m)
		}
	}
}

// Field names are the snake_case of docs/api.yaml; Go's JSON decoding
// matches them case-insensitively, but lowerCamelCase (the WebSocket's
// spelling) is an unknown field, and unknown fields are refused.
func TestHTTPFieldNamesAndUnknownFields(t *testing.T) {
	ts, _ := newEnumServer(t)
	if code, m := do(t, "POST", ts.URL+"/v1/messages", "adm", `{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1,"CLIENT_MESSAGE_ID":"u1"}`); code != 200 || m["message_id"] != "M-u1" {
		t.Fatalf("upper-case name: %d %v", code, m)
	}
	for _, body := range []string{
		`{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1,"clientMessageId":"c1"}`,
		`{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1,"future_field":true}`,
	} {
		code, m := do(t, "POST", ts.URL+"/v1/messages", "adm", body)
		if code != 400 || errName(m) != "INVALID_ARGUMENT" || !strings.Contains(m["error"].(map[string]any)["message"].(string), "unknown field") {
			t.Fatalf("%s: %d %v", body, code, m)
		}
	}
}

// 64-bit integers are JSON numbers on HTTP, in and out (the WebSocket
// writes them as strings); a string is refused.
func TestHTTPNumbersAndZeroValues(t *testing.T) {
	ts, _ := newEnumServer(t)
	code, m := do(t, "POST", ts.URL+"/v1/messages", "adm", `{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1,"client_message_id":"n1"}`)
	if code != 200 || m["seq"] != float64(7) {
		t.Fatalf("seq: %d %v", code, m)
	}
	// server_time_ms is always written, 0 included; duplicate only when true.
	if _, ok := m["server_time_ms"]; !ok {
		t.Fatalf("no server_time_ms: %v", m)
	}
	if _, ok := m["duplicate"]; ok {
		t.Fatalf("duplicate false written: %v", m)
	}
	if code, m := do(t, "POST", ts.URL+"/v1/messages", "adm", `{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":"1"}`); code != 400 || errName(m) != "INVALID_ARGUMENT" {
		t.Fatalf("type as string: %d %v", code, m)
	}
	// has_more is always written, false included.
	code, m = do(t, "GET", ts.URL+"/v1/users/alice/history?conversation_type=direct&conversation_id=bob", "adm", "")
	if code != 200 || m["has_more"] != false {
		t.Fatalf("has_more: %d %v", code, m)
	}
}

// The kick policy mode, its class names and the platform names are
// exact lower-case strings (the real validation is the actors'; the fake
// behind newEnumServer only mimics it).
func TestKickPolicyAndPlatformNamesExact(t *testing.T) {
	for _, mode := range []actors.PolicyMode{"single", "per_class", "tag", ""} {
		if err := (actors.Policy{Mode: mode}).Validate(); err != nil {
			t.Fatalf("mode %q: %v", mode, err)
		}
	}
	for _, mode := range []actors.PolicyMode{"SINGLE", "Per_Class", "per-class"} {
		if err := (actors.Policy{Mode: mode}).Validate(); err == nil {
			t.Fatalf("mode %q accepted", mode)
		}
	}
	if err := (actors.Policy{Limits: map[actors.Class]int{"WEB": 2}}).Validate(); err == nil {
		t.Fatal("class WEB accepted")
	}
	if c, ok := actors.PlatformClass("ios"); !ok || c != actors.ClassMobile {
		t.Fatalf("ios: %v %v", c, ok)
	}
	if _, ok := actors.PlatformClass("iOS"); ok {
		t.Fatal("platform iOS known")
	}
	ts, _ := newEnumServer(t)
	if code, m := do(t, "PUT", ts.URL+"/v1/kick-policy", "adm", `{"mode":"single"}`); code != 200 {
		t.Fatalf("single: %d %v", code, m)
	}
}
