package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-im/tandem/auth"
	"github.com/tandem-im/tandem/proto/wire"
)

// fakeSessions stands in for the actors (the real ones are tested end to
// end in test/e2e): alice has a phone and a laptop, everybody else is
// offline, "broken" fails to be kicked, and a question about "partitioned"
// fails as if a node did not answer.
type fakeSessions struct{}

type fakeGroups struct{}

func (fakeGroups) GroupOp(_ context.Context, group, op, _, name string, members []string) (string, []string, *wire.Error, error) {
	if group == "missing" {
		return "", nil, wire.Err(wire.CodeNotFound, "no such group"), nil
	}
	return name, members, nil, nil
}

// fakeMessages answers sends from "alice" with an ack and everybody else's
// with FORBIDDEN (the real rules are tested end to end).
type fakeMessages struct{}

func (fakeMessages) SendAs(_ context.Context, from string, m *wire.Send, include bool) (*wire.Frame, error) {
	if from == "full" { // the store refused: what the actors answer while the disk is full
		e := wire.Err(wire.CodeUnavailable, "storage full; retry")
		e.RetryAfterMs = 1500
		return &wire.Frame{Body: &wire.Frame_Error{Error: e}}, nil
	}
	if from != "alice" {
		return wire.ErrFrame(0, wire.CodeForbidden, "no"), nil
	}
	return &wire.Frame{Body: &wire.Frame_SendAck{SendAck: &wire.SendAck{MessageId: "M-" + m.GetClientMessageId(), Seq: 7}}}, nil
}

func (fakeMessages) History(_ context.Context, user string, h *wire.HistoryRequest) (*wire.Frame, error) {
	return &wire.Frame{Body: &wire.Frame_HistoryPage{HistoryPage: &wire.HistoryPage{HasMore: true, Messages: []*wire.Message{
		{MessageId: "M9", Sender: user, Content: []byte(h.GetConversation().GetId()), Recalled: h.GetLimit() == 7}}}}}, nil
}

func (fakeMessages) RecallAs(context.Context, string, *wire.Recall) (*wire.Frame, error) {
	return &wire.Frame{Body: &wire.Frame_Ok{Ok: &wire.Ok{}}}, nil
}

func (fakeSessions) KickPolicy() (string, map[string]int) {
	return "per_class", map[string]int{"web": 10}
}

func (fakeSessions) SetKickPolicy(_ context.Context, mode string, _ map[string]int) (*wire.Error, error) {
	if mode == "partitioned" {
		return nil, errors.New("actors: a cluster member did not answer")
	}
	if mode != "single" && mode != "per_class" && mode != "tag" {
		return wire.Err(wire.CodeInvalidArgument, "kick policy: bad mode"), nil
	}
	return nil, nil
}

func (fakeSessions) OnlineStatus(_ context.Context, users []string) (map[string][]*wire.DeviceInfo, error) {
	out := map[string][]*wire.DeviceInfo{}
	for _, u := range users {
		switch u {
		case "partitioned":
			return nil, errors.New("actors: a cluster member did not answer")
		case "alice":
			out[u] = aliceDevices()
		}
	}
	return out, nil
}

func aliceDevices() []*wire.DeviceInfo {
	return []*wire.DeviceInfo{
		{DeviceId: "phone", Platform: "ios", LoginId: "L1", SinceMs: 1},
		{DeviceId: "laptop", Platform: "macos", LoginId: "L2", SinceMs: 2, LoginExt: "MBP"},
	}
}

func (f fakeSessions) Kick(_ context.Context, user, device string) ([]*wire.DeviceInfo, error) {
	if user == "broken" {
		return nil, errors.New("timeout")
	}
	var out []*wire.DeviceInfo
	if user != "alice" {
		return nil, nil
	}
	for _, d := range aliceDevices() {
		if device == "" || d.GetDeviceId() == device {
			out = append(out, d)
		}
	}
	return out, nil
}

func newTestServer(t *testing.T, ready func() error) (*httptest.Server, *auth.Keys) {
	t.Helper()
	keys, err := auth.New("0123456789abcdef0123")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "tandem_test_total", Help: "t"})
	reg.MustRegister(c)
	c.Add(3)
	s, err := New(Config{AdminKey: "adm", Minter: keys, Gatherer: reg, Ready: ready, Sessions: fakeSessions{}, Messages: fakeMessages{}, Groups: fakeGroups{},
		ValidID: func(s string) bool { return s != "" && !strings.Contains(s, " ") }})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts, keys
}

func do(t *testing.T, method, url, key, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s %s: body %q is not JSON", method, url, raw)
	}
	return resp.StatusCode, m
}

func errName(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	n, _ := e["name"].(string)
	return n
}

func TestMintToken(t *testing.T) {
	ts, keys := newTestServer(t, nil)
	code, m := do(t, "POST", ts.URL+"/v1/tokens", "adm", `{"user_id":"alice","ttl_seconds":60}`)
	if code != 200 {
		t.Fatalf("status %d body %v", code, m)
	}
	user, exp, err := keys.Verify(m["token"].(string))
	if err != nil || user != "alice" {
		t.Fatalf("minted token verifies as %q, %v", user, err)
	}
	if d := time.Until(exp); d < 50*time.Second || d > 61*time.Second {
		t.Fatalf("expiry in %s, want ~60s", d)
	}
	if int64(m["expires_at_ms"].(float64)) != exp.UnixMilli() {
		t.Fatalf("expires_at_ms %v != token expiry %v", m["expires_at_ms"], exp.UnixMilli())
	}
}

func TestMintTokenRejects(t *testing.T) {
	ts, _ := newTestServer(t, nil)
	for _, tc := range []struct {
		name, key, body string
		status          int
		err             string
	}{
		{"no key", "", `{"user_id":"alice"}`, 401, "UNAUTHORIZED"},
		{"wrong key", "nope", `{"user_id":"alice"}`, 401, "UNAUTHORIZED"},
		{"not json", "adm", `{user_id`, 400, "INVALID_ARGUMENT"},
		{"unknown field", "adm", `{"user_id":"alice","admin":true}`, 400, "INVALID_ARGUMENT"},
		{"trailing data", "adm", `{"user_id":"alice"} {}`, 400, "INVALID_ARGUMENT"},
		{"bad user", "adm", `{"user_id":"a b"}`, 400, "INVALID_ARGUMENT"},
		{"negative ttl", "adm", `{"user_id":"alice","ttl_seconds":-1}`, 400, "INVALID_ARGUMENT"},
		{"ttl too long", "adm", `{"user_id":"alice","ttl_seconds":99999999}`, 400, "INVALID_ARGUMENT"},
		{"too big", "adm", `{"user_id":"` + strings.Repeat("a", 2<<20) + `"}`, 413, "FRAME_TOO_LARGE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, m := do(t, "POST", ts.URL+"/v1/tokens", tc.key, tc.body)
			if code != tc.status || errName(m) != tc.err {
				t.Fatalf("status %d error %q, want %d %q (%v)", code, errName(m), tc.status, tc.err, m)
			}
		})
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	ready := errors.New("store opening")
	ts, _ := newTestServer(t, func() error { return ready })
	if code, _ := do(t, "GET", ts.URL+"/healthz", "", ""); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	if code, m := do(t, "GET", ts.URL+"/readyz", "", ""); code != 503 || errName(m) != "UNAVAILABLE" {
		t.Fatalf("readyz while not ready: %d %v", code, m)
	}
	ready = nil
	if code, _ := do(t, "GET", ts.URL+"/readyz", "", ""); code != 200 {
		t.Fatalf("readyz when ready: %d", code)
	}
	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "tandem_test_total 3") {
		t.Fatalf("metrics missing the registered counter:\n%s", body)
	}
	if code, m := do(t, "GET", ts.URL+"/v1/nothing", "adm", ""); code != 404 || errName(m) != "NOT_FOUND" {
		t.Fatalf("unknown route: %d %v", code, m)
	}
}

func TestDeviceRoutes(t *testing.T) {
	ts, _ := newTestServer(t, nil)
	code, m := do(t, "GET", ts.URL+"/v1/users/alice/devices", "adm", "")
	devs, _ := m["devices"].([]any)
	if code != 200 || m["online"] != true || len(devs) != 2 || devs[1].(map[string]any)["login_ext"] != "MBP" {
		t.Fatalf("alice's devices: %d %v", code, m)
	}
	code, m = do(t, "GET", ts.URL+"/v1/users/bob/devices", "adm", "")
	if devs, _ := m["devices"].([]any); code != 200 || m["online"] != false || len(devs) != 0 {
		t.Fatalf("offline bob: %d %v", code, m)
	}
	if code, m := do(t, "GET", ts.URL+"/v1/users/alice/devices", "", ""); code != 401 || errName(m) != "UNAUTHORIZED" {
		t.Fatalf("without the admin key: %d %v", code, m)
	}
	if code, m := do(t, "GET", ts.URL+"/v1/users/a%20b/devices", "adm", ""); code != 400 || errName(m) != "INVALID_ARGUMENT" {
		t.Fatalf("bad user: %d %v", code, m)
	}
	if code, m := do(t, "GET", ts.URL+"/v1/users/partitioned/devices", "adm", ""); code != 503 || errName(m) != "UNAVAILABLE" {
		t.Fatalf("a node did not answer: %d %v, want UNAVAILABLE rather than offline", code, m)
	}

	code, m = do(t, "DELETE", ts.URL+"/v1/users/alice/devices/laptop", "adm", "")
	if k, _ := m["kicked"].([]any); code != 200 || len(k) != 1 || k[0].(map[string]any)["device_id"] != "laptop" {
		t.Fatalf("kick one device: %d %v", code, m)
	}
	code, m = do(t, "DELETE", ts.URL+"/v1/users/alice/devices", "adm", "")
	if k, _ := m["kicked"].([]any); code != 200 || len(k) != 2 {
		t.Fatalf("kick all: %d %v", code, m)
	}
	if code, m := do(t, "DELETE", ts.URL+"/v1/users/alice/devices/tablet", "adm", ""); code != 404 || errName(m) != "NOT_FOUND" {
		t.Fatalf("kick an absent device: %d %v", code, m)
	}
	if code, m := do(t, "DELETE", ts.URL+"/v1/users/broken/devices", "adm", ""); code != 503 || errName(m) != "UNAVAILABLE" {
		t.Fatalf("actor timeout: %d %v", code, m)
	}
}

func TestOnlineStatus(t *testing.T) {
	ts, _ := newTestServer(t, nil)
	code, m := do(t, "POST", ts.URL+"/v1/online-status", "adm", `{"user_ids":["bob","alice"]}`)
	users, _ := m["users"].([]any)
	if code != 200 || len(users) != 2 {
		t.Fatalf("status: %d %v", code, m)
	}
	bob, alice := users[0].(map[string]any), users[1].(map[string]any)
	if bob["user_id"] != "bob" || bob["online"] != false || alice["online"] != true || len(alice["devices"].([]any)) != 2 {
		t.Fatalf("status answers %v", users)
	}
	if code, m := do(t, "POST", ts.URL+"/v1/online-status", "adm", `{"user_ids":["bob","partitioned"]}`); code != 503 || errName(m) != "UNAVAILABLE" {
		t.Fatalf("a node did not answer: %d %v, want UNAVAILABLE rather than offline", code, m)
	}
	many := `{"user_ids":[` + strings.Repeat(`"u",`, MaxStatusUsers) + `"u"]}`
	for name, body := range map[string]string{"empty": `{"user_ids":[]}`, "too many": many, "bad id": `{"user_ids":["a b"]}`} {
		if code, m := do(t, "POST", ts.URL+"/v1/online-status", "adm", body); code != 400 || errName(m) != "INVALID_ARGUMENT" {
			t.Fatalf("%s: %d %v", name, code, m)
		}
	}
}

func TestKickPolicyRoutes(t *testing.T) {
	ts, _ := newTestServer(t, nil)
	if code, m := do(t, "GET", ts.URL+"/v1/kick-policy", "adm", ""); code != 200 || m["mode"] != "per_class" {
		t.Fatalf("get: %d %v", code, m)
	}
	if code, m := do(t, "PUT", ts.URL+"/v1/kick-policy", "adm", `{"mode":"single"}`); code != 200 {
		t.Fatalf("put: %d %v", code, m)
	}
	if code, m := do(t, "PUT", ts.URL+"/v1/kick-policy", "adm", `{"mode":"lottery"}`); code != 400 || errName(m) != "INVALID_ARGUMENT" {
		t.Fatalf("bad mode: %d %v", code, m)
	}
	if code, m := do(t, "PUT", ts.URL+"/v1/kick-policy", "adm", `{"mode":"partitioned"}`); code != 503 || errName(m) != "UNAVAILABLE" {
		t.Fatalf("a node did not confirm: %d %v", code, m)
	}
	if code, m := do(t, "PUT", ts.URL+"/v1/kick-policy", "", `{"mode":"single"}`); code != 401 {
		t.Fatalf("without key: %d %v", code, m)
	}
}

// TestStorageRefusalRetryAfter: an actor's refusal with a retry hint is
// 503 with Retry-After (whole seconds, rounded up) and retry_after_ms.
func TestStorageRefusalRetryAfter(t *testing.T) {
	ts, _ := newTestServer(t, nil)
	req, _ := http.NewRequest("POST", ts.URL+"/v1/messages",
		strings.NewReader(`{"from":"full","conversation":{"type":"direct","id":"bob"},"type":1,"client_message_id":"x2"}`))
	req.Header.Set("Authorization", "Bearer adm")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error struct {
			Name         string `json:"name"`
			Message      string `json:"message"`
			RetryAfterMS int    `json:"retry_after_ms"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" || body.Error.Name != "UNAVAILABLE" ||
		body.Error.Message != "storage full; retry" || body.Error.RetryAfterMS != 1500 {
		t.Fatalf("refusal: %d Retry-After %q %+v", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}

func TestMessageRoutes(t *testing.T) {
	ts, _ := newTestServer(t, nil)
	code, m := do(t, "POST", ts.URL+"/v1/messages", "adm", `{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1,"content":"aGk=","client_message_id":"x1","include_sender":true}`)
	if code != 200 || m["message_id"] != "M-x1" || m["seq"] != float64(7) {
		t.Fatalf("send: %d %v", code, m)
	}
	if code, m := do(t, "POST", ts.URL+"/v1/messages", "adm", `{"from":"mallory","conversation":{"type":"direct","id":"bob"},"type":1}`); code != 403 || errName(m) != "FORBIDDEN" {
		t.Fatalf("actor error passed through: %d %v", code, m)
	}
	for name, body := range map[string]string{
		"bad from":   `{"from":"a b","conversation":{"type":"direct","id":"bob"},"type":1}`,
		"bad type":   `{"from":"alice","conversation":{"type":"channel","id":"bob"},"type":1}`,
		"bad base64": `{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1,"content":"***"}`,
	} {
		if code, m := do(t, "POST", ts.URL+"/v1/messages", "adm", body); code != 400 || errName(m) != "INVALID_ARGUMENT" {
			t.Fatalf("%s: %d %v", name, code, m)
		}
	}
	if code, m := do(t, "POST", ts.URL+"/v1/recall", "adm", `{"from":"alice","conversation":{"type":"direct","id":"bob"},"message_id":"M1"}`); code != 200 || m["status"] != "recalled" {
		t.Fatalf("recall: %d %v", code, m)
	}
	if code, _ := do(t, "POST", ts.URL+"/v1/transient", "", `{}`); code != 401 {
		t.Fatalf("transient without key: %d", code)
	}
}

func TestGroupRoutes(t *testing.T) {
	ts, _ := newTestServer(t, nil)
	code, m := do(t, "POST", ts.URL+"/v1/groups", "adm", `{"group_id":"g1","name":"team","members":["a","b"]}`)
	if code != 200 || m["group_id"] != "g1" || len(m["members"].([]any)) != 2 {
		t.Fatalf("create: %d %v", code, m)
	}
	if code, m := do(t, "POST", ts.URL+"/v1/groups/missing/members", "adm", `{"user_ids":["c"]}`); code != 404 || errName(m) != "NOT_FOUND" {
		t.Fatalf("add to missing: %d %v", code, m)
	}
	if code, m := do(t, "POST", ts.URL+"/v1/groups", "adm", `{"group_id":"bad id"}`); code != 400 || errName(m) != "INVALID_ARGUMENT" {
		t.Fatalf("bad id: %d %v", code, m)
	}
	if code, _ := do(t, "DELETE", ts.URL+"/v1/groups/g1/members/b", "adm", ""); code != 200 {
		t.Fatalf("remove: %d", code)
	}
	if code, _ := do(t, "DELETE", ts.URL+"/v1/groups/g1", "adm", ""); code != 200 {
		t.Fatalf("dismiss: %d", code)
	}
}

func TestHistoryRoute(t *testing.T) {
	ts, _ := newTestServer(t, nil)
	code, m := do(t, "GET", ts.URL+"/v1/users/alice/history?conversation_type=direct&conversation_id=bob&limit=7", "adm", "")
	msgs, _ := m["messages"].([]any)
	if code != 200 || len(msgs) != 1 || m["has_more"] != true {
		t.Fatalf("history: %d %v", code, m)
	}
	first := msgs[0].(map[string]any)
	if first["content"] != "Ym9i" || first["recalled"] != true || first["sender"] != "alice" {
		t.Fatalf("history message %v", first)
	}
	for _, q := range []string{"conversation_type=direct", "conversation_type=x&conversation_id=bob", "conversation_type=direct&conversation_id=bob&limit=0", "conversation_type=direct&conversation_id=bob&limit=abc"} {
		if code, m := do(t, "GET", ts.URL+"/v1/users/alice/history?"+q, "adm", ""); code != 400 || errName(m) != "INVALID_ARGUMENT" {
			t.Fatalf("%s: %d %v", q, code, m)
		}
	}
}
