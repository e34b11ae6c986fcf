package api

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/tandem-im/tandem/proto/wire"
)

// bodyRoutes are the routes that take a JSON body (every one of them).
var bodyRoutes = []struct{ method, path string }{
	{"POST", "/v1/tokens"},
	{"POST", "/v1/online-status"},
	{"POST", "/v1/messages"},
	{"POST", "/v1/transient"},
	{"POST", "/v1/recall"},
	{"POST", "/v1/groups"},
	{"POST", "/v1/groups/g1/members"},
	{"PUT", "/v1/kick-policy"},
}

// FuzzAPIRequestBody sends arbitrary bodies to every route that takes one,
// through the real handler over the real actors and badger store
// (startRealAPI). The answer is 2xx with a JSON body, or a 4xx whose body
// is the catalogue error JSON with the status of its code; never 5xx
// (the node is healthy, so UNAVAILABLE would be a bug too) nor a panic. A
// refused request submits no append and leaves the stored fixture and
// the kick policy as they were (read back after it). A minted token
// verifies for the user asked and expires when asked.
func FuzzAPIRequestBody(f *testing.F) {
	seeds := map[int][]string{
		0: {`{"user_id":"alice"}`, `{"user_id":"alice","ttl_seconds":60}`, `{"user_id":"alice","ttl_seconds":18446744074}`, `{"USER_ID":"bob"}`, `{}`, `null`, ``, `[]`},
		1: {`{"user_ids":["alice","bob"]}`, `{"user_ids":[]}`, `{"users":["alice"]}`, `{"user_ids":["alice",""]}`},
		2: {`{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1,"content":"aGk=","client_message_id":"c1","include_sender":true}`,
			`{"from":"bob","conversation":{"type":"GROUP","id":"g1"},"type":1001,"mention_list":["alice"],"attributes":{"k":"v"},"receipt_requested":true,"push_data":"p"}`,
			`{"from":"carol","conversation":{"type":"group","id":"g1"},"type":1}`,
			`{"from":"alice","conversation":{"type":"direct","id":"bob","x":1},"type":1}`,
			`{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":2147483648}`},
		3: {`{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1,"content":"aGk="}`, `{"from":"alice","conversation":{"type":"group","id":"g1"},"type":1}`},
		4: {`{"from":"alice","conversation":{"type":"direct","id":"bob"},"message_id":"nope"}`, `{"from":"alice","conversation":{"type":"direct","id":"bob"}}`},
		5: {`{"group_id":"g2","name":"two","owner":"carol","members":["carol","dave"]}`, `{"group_id":"g2","members":[]}`, `{"group_id":"g2","user_ids":["carol"]}`, `{"group_id":"g1","members":["carol"]}`},
		6: {`{"user_ids":["carol"]}`, `{"members":["carol"]}`, `{"user_ids":[]}`, `{"user_ids":["alice","alice"]}`},
		7: {`{"mode":"single"}`, `{"mode":"per_class","limits":{"web":2,"mobile":1}}`, `{"mode":"per_class","limits":{"web":0}}`, `{"mode":"tag"}`, `{}`, `{"mode":"SINGLE"}`},
	}
	for route, bodies := range seeds {
		for _, b := range bodies {
			f.Add(uint8(route), []byte(b))
		}
	}
	a := startRealAPI(f)
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := bodyRoutes[int(route)%len(bodyRoutes)]
		before := a.snapshot(t)
		appends := a.store.submitted.Load()
		start := time.Now()
		code, out := a.do(rt.method, rt.path, string(body))
		name := rt.method + " " + rt.path
		if code >= 200 && code < 300 {
			if !json.Valid(out) {
				t.Fatalf("%s %q: %d with a body that is not JSON: %q", name, body, code, out)
			}
			if rt.path == "/v1/tokens" {
				a.checkToken(t, body, out, start)
			}
			a.settle(t) // accepted writes finish before the next input's snapshot
			return
		}
		var e struct {
			Error *errorDetail `json:"error"`
		}
		if err := json.Unmarshal(out, &e); err != nil || e.Error == nil {
			t.Fatalf("%s %q: %d with a body that is not the error JSON: %q", name, body, code, out)
		}
		c := wire.Code(e.Error.Code)
		if code < 400 || code >= 500 || c.HTTPStatus() != code || c.Name() != e.Error.Name || c.Name() == "UNKNOWN" || e.Error.Message == "" {
			t.Fatalf("%s %q: %d %+v: want a 4xx with a catalogue code of that status and a message", name, body, code, *e.Error)
		}
		if n := a.store.submitted.Load(); n != appends {
			t.Fatalf("%s %q: refused (%s), yet %d appends were submitted", name, body, e.Error.Name, n-appends)
		}
		if after := a.snapshot(t); after != before {
			t.Fatalf("%s %q: refused (%s), yet the stored fixture changed", name, body, e.Error.Name)
		}
	})
}

// checkToken checks a minted token: it verifies as the user asked, and
// expires after the TTL asked (or the default), counted from start.
func (a *realAPI) checkToken(t *testing.T, body, out []byte, start time.Time) {
	t.Helper()
	var req tokenRequest
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatalf("token minted for %q, which does not decode: %v", body, err)
	}
	var resp tokenResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatalf("token answer %q: %v", out, err)
	}
	user, exp, err := a.keys.Verify(resp.Token)
	if err != nil || user != req.UserID || resp.UserID != req.UserID || exp.UnixMilli() != resp.ExpiresAtMS {
		t.Fatalf("token for %q verifies as %q, %v (expiry %v, answered %d)", req.UserID, user, err, exp, resp.ExpiresAtMS)
	}
	ttl := 24 * time.Hour
	if req.TTLSeconds > 0 {
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	if lo, hi := start.Add(ttl).Add(-time.Second), time.Now().Add(ttl); exp.Before(lo) || exp.After(hi) {
		t.Fatalf("token asked for %s expires at %v, want within [%v, %v]", ttl, exp, lo, hi)
	}
}
