package api

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// refusal is a request the API must refuse with INVALID_ARGUMENT (or the
// code given) and a message containing want, storing nothing.
type refusal struct {
	method, path, body string
	want               string
	code               string // default INVALID_ARGUMENT
}

// bodyRefusals covers every route that takes a JSON body: unknown fields
// (named in the answer, with the fields the route takes), missing and
// empty required fields and lists, wrong JSON types, and bodies that are
// not one object.
var bodyRefusals = []refusal{
	// Any body.
	{"POST", "/v1/tokens", ``, "body is empty", ""},
	{"POST", "/v1/tokens", `[1]`, "must be a JSON object", ""},
	{"POST", "/v1/tokens", `"alice"`, "must be a JSON object", ""},
	{"POST", "/v1/tokens", `{"user_id":"alice"`, "ends inside", ""},
	{"POST", "/v1/tokens", `{"user_id":"alice"} {}`, "data after the JSON object", ""},
	{"POST", "/v1/tokens", `{"user_id":"alice",}`, "not valid JSON", ""},
	// POST /v1/tokens
	{"POST", "/v1/tokens", `{"user_id":"alice","admin":true}`, `unknown field "admin" (this endpoint takes user_id, ttl_seconds)`, ""},
	{"POST", "/v1/tokens", `{}`, "user_id", ""},
	{"POST", "/v1/tokens", `null`, "user_id", ""},
	{"POST", "/v1/tokens", `{"user_id":5}`, `field "user_id" must be a string, not number`, ""},
	{"POST", "/v1/tokens", `{"user_id":"alice","ttl_seconds":"60"}`, `field "ttl_seconds" must be an integer`, ""},
	{"POST", "/v1/tokens", `{"user_id":"alice","ttl_seconds":18446744074}`, "ttl_seconds", ""},
	{"POST", "/v1/tokens", `{"user_id":"alice","ttl_seconds":99999999999999999999}`, `field "ttl_seconds" must be an integer`, ""},
	// POST /v1/online-status
	{"POST", "/v1/online-status", `{}`, "user_ids is required", ""},
	{"POST", "/v1/online-status", `{"user_ids":[]}`, "user_ids is required", ""},
	{"POST", "/v1/online-status", `{"user_ids":null}`, "user_ids is required", ""},
	{"POST", "/v1/online-status", `{"users":["alice"]}`, `unknown field "users" (this endpoint takes user_ids)`, ""},
	{"POST", "/v1/online-status", `{"user_ids":"alice"}`, `field "user_ids" must be an array`, ""},
	{"POST", "/v1/online-status", `{"user_ids":["alice",""]}`, `user_ids holds an invalid user ID ""`, ""},
	// POST /v1/messages
	{"POST", "/v1/messages", `{"from":"alice","to":"bob","type":1}`, `unknown field "to"`, ""},
	{"POST", "/v1/messages", `{"from":"alice","conversation":{"type":"direct","id":"bob","kind":1},"type":1}`, `unknown field "kind"`, ""},
	{"POST", "/v1/messages", `{"from":"alice","type":1,"content":"aGk="}`, "conversation.type", ""},
	{"POST", "/v1/messages", `{"conversation":{"type":"direct","id":"bob"},"type":1}`, "from", ""},
	{"POST", "/v1/messages", `{"from":"alice","conversation":{"type":"direct"},"type":1}`, "conversation.id", ""},
	{"POST", "/v1/recall", `{"from":"alice","conversation":{"type":"group","id":"a b"},"message_id":"M1"}`, "conversation.id", ""},
	{"POST", "/v1/messages", `{"from":"alice","conversation":{"type":"direct","id":"bob"}}`, "message type 0", ""},
	{"POST", "/v1/messages", `{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1,"content":"***"}`, "a byte field (content) is not valid base64", ""},
	{"POST", "/v1/messages", `{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1,"mention_list":"bob"}`, `field "mention_list" must be an array`, ""},
	{"POST", "/v1/messages", `{"from":"carol","conversation":{"type":"group","id":"g1"},"type":1}`, "", "NOT_GROUP_MEMBER"},
	// POST /v1/transient
	{"POST", "/v1/transient", `{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1,"ttl":5}`, `unknown field "ttl"`, ""},
	{"POST", "/v1/transient", `{"from":"alice","conversation":{"type":"channel","id":"bob"},"type":1}`, "conversation.type", ""},
	// POST /v1/recall
	{"POST", "/v1/recall", `{"from":"alice","conversation":{"type":"direct","id":"bob"},"message_id":"M1","reason":"x"}`, `unknown field "reason" (this endpoint takes from, conversation.{type,id}, message_id)`, ""},
	{"POST", "/v1/recall", `{"from":"alice","conversation":{"type":"direct","id":"bob"}}`, "message_id", ""},
	{"POST", "/v1/recall", `{"from":"alice","message_id":"M1"}`, "conversation.type", ""},
	// POST /v1/groups
	{"POST", "/v1/groups", `{"group_id":"g2","user_ids":["alice"]}`, `unknown field "user_ids" (this endpoint takes group_id, name, owner, members)`, ""},
	{"POST", "/v1/groups", `{"group_id":"g2"}`, "members is required", ""},
	{"POST", "/v1/groups", `{"group_id":"g2","members":[]}`, "members is required", ""},
	{"POST", "/v1/groups", `{"group_id":"g2","members":["alice","a b"]}`, `members holds an invalid user ID "a b"`, ""},
	{"POST", "/v1/groups", `{"members":["alice"]}`, "group_id is required", ""},
	{"POST", "/v1/groups", `{"group_id":"g2","owner":"a b","members":["alice"]}`, "owner", ""},
	{"POST", "/v1/groups", `{"group_id":"g2","members":"alice"}`, `field "members" must be an array`, ""},
	{"POST", "/v1/groups", `{"group_id":"g1","members":["carol"]}`, "the group exists", ""},
	// POST /v1/groups/{group}/members: `members` is the create route's
	// name; here it was once ignored (200, nobody added).
	{"POST", "/v1/groups/g1/members", `{"members":["carol"]}`, `unknown field "members" (this endpoint takes user_ids)`, ""},
	{"POST", "/v1/groups/g1/members", `{}`, "user_ids is required", ""},
	{"POST", "/v1/groups/g1/members", `{"user_ids":[]}`, "user_ids is required", ""},
	{"POST", "/v1/groups/g1/members", `null`, "user_ids is required", ""},
	{"POST", "/v1/groups/g1/members", ``, "body is empty", ""},
	{"POST", "/v1/groups/g1/members", `{"user_ids":["carol","a b"]}`, `user_ids holds an invalid user ID "a b"`, ""},
	{"POST", "/v1/groups/g2/members", `{"user_ids":["carol"]}`, "no such group", "NOT_FOUND"},
	// PUT /v1/kick-policy
	{"PUT", "/v1/kick-policy", `{}`, "mode is required", ""},
	{"PUT", "/v1/kick-policy", `{"mode":"single","limit":{"web":1}}`, `unknown field "limit" (this endpoint takes mode, limits)`, ""},
	{"PUT", "/v1/kick-policy", `{"mode":"lottery"}`, "lottery", ""},
	{"PUT", "/v1/kick-policy", `{"mode":"per_class","limits":{"web":"1"}}`, `field "limits" must be an integer`, ""},
	{"PUT", "/v1/kick-policy", `{"mode":"per_class","limits":{"WEB":1}}`, "WEB", ""},
}

// Every refusal answers its code and a message naming the problem, and
// stores nothing: no append is submitted and the fixture reads the same.
// Then an accepted add changes the stored members, so the check can fail.
func TestBodyRefusalsStoreNothing(t *testing.T) {
	a := startRealAPI(t)
	before := a.snapshot(t)
	for _, tc := range bodyRefusals {
		name := tc.method + " " + tc.path + " " + tc.body
		appends := a.store.submitted.Load()
		code, body := a.do(tc.method, tc.path, tc.body)
		wantCode := tc.code
		if wantCode == "" {
			wantCode = "INVALID_ARGUMENT"
		}
		var e errorBody
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("%s: answer %q is not the error JSON: %v", name, body, err)
		}
		if e.Error.Name != wantCode || code != http.StatusBadRequest && wantCode == "INVALID_ARGUMENT" || !strings.Contains(e.Error.Message, tc.want) {
			t.Errorf("%s: %d %s %q, want %s with %q", name, code, e.Error.Name, e.Error.Message, wantCode, tc.want)
		}
		if n := a.store.submitted.Load(); n != appends {
			t.Errorf("%s: refused, yet %d appends were submitted", name, n-appends)
		}
	}
	if after := a.snapshot(t); after != before {
		t.Fatalf("refused requests changed the stored fixture")
	}
	if got := a.groupMembers(t, "g1"); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("g1 members %v after refusals", got)
	}

	code, body := a.do("POST", "/v1/groups/g1/members", `{"user_ids":["carol"]}`)
	if code != http.StatusOK {
		t.Fatalf("add carol: %d %s", code, body)
	}
	a.settle(t)
	if got := a.groupMembers(t, "g1"); !slices.Equal(got, []string{"alice", "bob", "carol"}) {
		t.Fatalf("g1 members %v after adding carol", got)
	}
	if a.snapshot(t) == before {
		t.Fatal("an accepted add left the snapshot unchanged: it sees nothing")
	}
}
