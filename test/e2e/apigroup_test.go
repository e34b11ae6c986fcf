//go:build !race

package e2e

import (
	"encoding/base64"
	"fmt"
	"testing"
	"time"
)

// TestServerAPIGroupSend: POST /v1/messages and /v1/transient reach a
// group's members as the sending member; a non-member is refused with
// NOT_GROUP_MEMBER; a repeat of the client_message_id is a duplicate.
func TestServerAPIGroupSend(t *testing.T) {
	n := startNode(t, t.TempDir())
	if code, m := apiDo(t, "POST", n.apiURL()+"/v1/groups", `{"group_id":"crew","members":["ann","ben","cid"]}`); code != 200 {
		t.Fatalf("create: %d %v", code, m)
	}
	ben := dial(t, n.wsURL(), n.apiURL(), "ben", "b", devOpts{})
	ann := dial(t, n.wsURL(), n.apiURL(), "ann", "a", devOpts{})
	body := func(from, cmid, text string) string {
		return fmt.Sprintf(`{"from":%q,"conversation":{"type":"group","id":"crew"},"type":1,"content":%q,"client_message_id":%q}`,
			from, base64.StdEncoding.EncodeToString([]byte(text)), cmid)
	}

	code, m := apiDo(t, "POST", n.apiURL()+"/v1/messages", body("ann", "api-g1", "hello crew"))
	if code != 200 || m["message_id"] == "" || m["message_id"] == nil {
		t.Fatalf("group send by API: %d %v", code, m)
	}
	id := m["message_id"].(string)
	for who, d := range map[string]*device{"ben": ben, "ann (the sender, a member)": ann} {
		d.waitMessages(t, 1)
		got := d.msgs()[0].GetMessage()
		if got.GetMessageId() != id || string(got.GetContent()) != "hello crew" || got.GetSender() != "ann" || got.GetConversation().GetId() != "crew" {
			t.Fatalf("%s got %v, want message %s from ann in crew", who, got, id)
		}
	}
	if code, m := apiDo(t, "POST", n.apiURL()+"/v1/messages", body("ann", "api-g1", "hello crew")); code != 200 || m["message_id"] != id || m["duplicate"] != true {
		t.Fatalf("repeat: %d %v, want the original message ID as a duplicate", code, m)
	}
	if code, m := apiDo(t, "POST", n.apiURL()+"/v1/messages", body("zed", "api-g2", "let me in")); code != 403 || m["error"].(map[string]any)["name"] != "NOT_GROUP_MEMBER" {
		t.Fatalf("non-member: %d %v, want NOT_GROUP_MEMBER", code, m)
	}

	if code, m := apiDo(t, "POST", n.apiURL()+"/v1/transient", body("cid", "api-t1", "cid is typing")); code != 200 {
		t.Fatalf("group transient by API: %d %v", code, m)
	}
	waitFor(t, 10*time.Second, func() bool { return len(ben.allTransient()) == 1 }, func() string { return "ben never got the transient" })
	if tr := ben.allTransient()[0]; string(tr.GetContent()) != "cid is typing" || tr.GetSender() != "cid" {
		t.Fatalf("ben's transient: %v", tr)
	}
	if len(ben.msgs()) != 1 {
		t.Fatalf("the transient was stored: ben has %d messages", len(ben.msgs()))
	}
}
