//go:build !race

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-im/tandem/api/webhook"
	"github.com/tandem-im/tandem/node"
	"github.com/tandem-im/tandem/proto/wire"
)

// hookRecorder is the app backend: a real HTTP server that checks every
// webhook's signature and keeps the events.
type hookRecorder struct {
	mu     sync.Mutex
	events []webhook.Event
	bad    int
}

func (h *hookRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := webhook.Verify("hook-secret-123", r.Header, body, time.Now(), time.Minute); err != nil {
		h.bad++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var ev webhook.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		h.bad++
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.events = append(h.events, ev)
}

// has reports whether an event of type t for user (and device, if given)
// with reason (if given) arrived.
func (h *hookRecorder) has(t webhook.Type, user, device, reason string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.events {
		if e.Type == t && e.UserID == user && (device == "" || e.Device.DeviceID == device) && (reason == "" || e.Reason == reason) {
			return true
		}
	}
	return false
}

func apiDo(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp.StatusCode, m
}

// TestDevicesOnlineStatusWebhooks: online status and device lists through
// the server API, force-offline by API (the kick frame says ADMIN, then
// close 4011), and the webhooks the app backend receives, signed.
func TestDevicesOnlineStatusWebhooks(t *testing.T) {
	rec := &hookRecorder{}
	backend := httptest.NewServer(rec)
	t.Cleanup(backend.Close)
	n := startNodeWith(t, t.TempDir(), func(c *node.Config) {
		c.WebhookURL, c.WebhookSecret = backend.URL, "hook-secret-123"
	})
	ws, api := n.wsURL(), n.apiURL()

	phone := rawDial(t, ws)
	if f := phone.loginAs(&wire.Login{Token: token(t, api, "alice"), DeviceId: "a-phone", Platform: "ios", HasCursor: true, LoginExt: "iPhone"}, 1); f.GetLoginOk() == nil {
		t.Fatalf("login: %v", f)
	}
	laptop := dial(t, ws, api, "alice", "a-laptop", devOpts{platform: "macos"})

	code, m := apiDo(t, "POST", api+"/v1/online-status", `{"user_ids":["alice","bob"]}`)
	users, _ := m["users"].([]any)
	if code != 200 || len(users) != 2 {
		t.Fatalf("online-status: %d %v", code, m)
	}
	a, b := users[0].(map[string]any), users[1].(map[string]any)
	if a["online"] != true || len(a["devices"].([]any)) != 2 || b["online"] != false {
		t.Fatalf("online-status answers %v", users)
	}
	code, m = apiDo(t, "GET", api+"/v1/users/alice/devices", "")
	devs, _ := m["devices"].([]any)
	if code != 200 || len(devs) != 2 || devs[0].(map[string]any)["device_id"] != "a-phone" || devs[0].(map[string]any)["login_ext"] != "iPhone" {
		t.Fatalf("device list: %d %v", code, m)
	}

	// Force the phone offline: kick frame ADMIN, then close 4011.
	code, m = apiDo(t, "DELETE", api+"/v1/users/alice/devices/a-phone", "")
	if k, _ := m["kicked"].([]any); code != 200 || len(k) != 1 {
		t.Fatalf("force offline: %d %v", code, m)
	}
	f, _ := phone.readReply()
	if f.GetKick().GetReason() != wire.Kick_ADMIN || f.GetKick().GetCloseCode() != wire.CloseKickedByAdmin {
		t.Fatalf("kicked phone got %v", f)
	}
	if f, code := phone.read(); f != nil || code != wire.CloseKickedByAdmin {
		t.Fatalf("after the admin kick: %v close %d", f, code)
	}
	// The laptop learns it from the log (a KICKED device event).
	waitFor(t, 10*time.Second, func() bool {
		for _, e := range laptop.all() {
			if e.GetDevice().GetKind() == wire.DeviceEvent_KICKED && e.GetDevice().GetDevice().GetDeviceId() == "a-phone" {
				return true
			}
		}
		return false
	}, func() string { return "laptop never saw the phone's KICKED event: " + fmtEntries(laptop.all()) })
	// Then everything: alice goes offline.
	code, m = apiDo(t, "DELETE", api+"/v1/users/alice/devices", "")
	if k, _ := m["kicked"].([]any); code != 200 || len(k) != 1 {
		t.Fatalf("force all offline: %d %v", code, m)
	}
	if code, m = apiDo(t, "GET", api+"/v1/users/alice/devices", ""); m["online"] != false {
		t.Fatalf("alice still online after force offline: %v", m)
	}
	if code, m = apiDo(t, "DELETE", api+"/v1/users/alice/devices/a-phone", ""); code != 404 {
		t.Fatalf("kicking a gone device: %d %v", code, m)
	}

	waitFor(t, 10*time.Second, func() bool {
		return rec.has(webhook.UserOnline, "alice", "a-phone", "") &&
			rec.has(webhook.DeviceLogin, "alice", "a-laptop", "") &&
			rec.has(webhook.DeviceKicked, "alice", "a-phone", "ADMIN") &&
			rec.has(webhook.DeviceKicked, "alice", "a-laptop", "ADMIN") &&
			rec.has(webhook.UserOffline, "alice", "", "ADMIN")
	}, func() string {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return "webhooks received: " + fmtEvents(rec.events)
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.bad != 0 {
		t.Fatalf("%d webhook requests failed signature or JSON checks", rec.bad)
	}
}

func fmtEvents(es []webhook.Event) string {
	var b strings.Builder
	for _, e := range es {
		b.WriteString(string(e.Type) + ":" + e.UserID + "/" + e.Device.DeviceID + ":" + e.Reason + " ")
	}
	return b.String()
}

// TestPolicyChangeByAPI: tightening the policy through the server API kicks
// the sessions it no longer allows (reason POLICY, close 4012), oldest
// first; the newest stays and later logins follow the new policy.
func TestPolicyChangeByAPI(t *testing.T) {
	n := startNode(t, t.TempDir())
	ws, api := n.wsURL(), n.apiURL()
	var tabs []*rawConn
	for i := range 3 {
		c := rawDial(t, ws)
		if f := c.loginAs(&wire.Login{Token: token(t, api, "carol"), DeviceId: fmt.Sprint("tab", i), Platform: "web", HasCursor: true}, 1); f.GetLoginOk() == nil {
			t.Fatalf("tab%d: %v", i, f)
		}
		tabs = append(tabs, c)
	}
	code, m := apiDo(t, "PUT", api+"/v1/kick-policy", `{"mode":"per_class","limits":{"web":1}}`)
	if code != 200 || m["limits"].(map[string]any)["web"] != float64(1) {
		t.Fatalf("PUT kick-policy: %d %v", code, m)
	}
	for i := range 2 {
		f, _ := tabs[i].readReply()
		if f.GetKick().GetReason() != wire.Kick_POLICY || f.GetKick().GetCloseCode() != wire.CloseKickedByPolicy {
			t.Fatalf("tab%d got %v, want a POLICY kick", i, f)
		}
		if _, code := tabs[i].read(); code != wire.CloseKickedByPolicy {
			t.Fatalf("tab%d closed with %d", i, code)
		}
	}
	tabs[2].ping(77) // the newest survives
	if _, m := apiDo(t, "GET", api+"/v1/users/carol/devices", ""); len(m["devices"].([]any)) != 1 {
		t.Fatalf("devices after the policy change: %v", m)
	}
	// A new tab now kicks the survivor (web limit 1).
	dial(t, ws, api, "carol", "tab9", devOpts{platform: "web"})
	if f, _ := tabs[2].readReply(); f.GetKick().GetReason() != wire.Kick_LOGIN_CONFLICT {
		t.Fatalf("survivor got %v, want LOGIN_CONFLICT under the new limit", f)
	}
}

// TestServerAPISend: send as a user through the server API. With
// include_sender the sender's online devices get it now and offline ones
// at their next login; without, only the recipient has it. A retry with
// the same client_message_id makes no second message; the API can recall.
func TestServerAPISend(t *testing.T) {
	n := startNode(t, t.TempDir())
	ws, api := n.wsURL(), n.apiURL()
	a1 := dial(t, ws, api, "alice", "a1", devOpts{platform: "ios"})
	a2 := dial(t, ws, api, "alice", "a2", devOpts{platform: "web"})
	a2cursor := a2.Cursor()
	a2.Close()
	b := dial(t, ws, api, "bob", "b1", devOpts{platform: "web"})

	body := `{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1,"content":"aGVsbG8=","client_message_id":"sys-1","include_sender":true}`
	code, m := apiDo(t, "POST", api+"/v1/messages", body)
	if code != 200 || m["message_id"] == "" || m["seq"] == nil {
		t.Fatalf("send with include_sender: %d %v", code, m)
	}
	id := m["message_id"].(string)
	if code, again := apiDo(t, "POST", api+"/v1/messages", body); code != 200 || again["message_id"] != id || again["duplicate"] != true {
		t.Fatalf("retry: %d %v, want the same message marked duplicate", code, again)
	}
	b.waitMessages(t, 1)
	a1.waitMessages(t, 1) // the online sender device gets it now
	a2 = dial(t, ws, api, "alice", "a2", devOpts{platform: "web", hasCursor: true, cursor: a2cursor})
	a2.waitMessages(t, 1) // the offline one at its next login
	if got := b.msgs()[0].GetMessage(); got.GetMessageId() != id || string(got.GetContent()) != "hello" || got.GetSenderDevice() != "" {
		t.Fatalf("bob got %v", got)
	}

	// Without include_sender: bob only.
	code, m = apiDo(t, "POST", api+"/v1/messages", `{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1,"content":"c2VjcmV0","client_message_id":"sys-2"}`)
	if code != 200 {
		t.Fatalf("send without include_sender: %d %v", code, m)
	}
	b.waitMessages(t, 2)
	if got := messageIDs(t, n, "alice"); len(got) != 1 {
		t.Fatalf("alice's log holds %d messages, want only the include_sender one", len(got))
	}

	// The API recalls the first one: gone for everybody.
	code, m = apiDo(t, "POST", api+"/v1/recall", `{"from":"alice","conversation":{"type":"direct","id":"bob"},"message_id":"`+id+`"}`)
	if code != 200 {
		t.Fatalf("recall: %d %v", code, m)
	}
	waitFor(t, 10*time.Second, func() bool {
		for _, e := range b.all() {
			if e.GetRecall().GetMessageId() == id {
				return true
			}
		}
		return false
	}, func() string { return "bob never got the API recall" })

	// History through the API: bob's view, newest first, the recall applied.
	code, m = apiDo(t, "GET", api+"/v1/users/bob/history?conversation_type=direct&conversation_id=alice&limit=10", "")
	hist, _ := m["messages"].([]any)
	if code != 200 || len(hist) != 2 || hist[1].(map[string]any)["message_id"] != id || hist[1].(map[string]any)["recalled"] != true {
		t.Fatalf("history: %d %v", code, m)
	}

	// Transient: online devices only.
	code, m = apiDo(t, "POST", api+"/v1/transient", `{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1000,"content":"dHlwaW5n"}`)
	if code != 200 {
		t.Fatalf("transient: %d %v", code, m)
	}
	waitFor(t, 10*time.Second, func() bool { return len(b.allTransient()) == 1 }, func() string { return "bob never got the transient" })
}
