//go:build !race

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandem-im/tandem/actors"
	"github.com/tandem-im/tandem/internal/clustertest"
	"github.com/tandem-im/tandem/internal/pgtest"
	"github.com/tandem-im/tandem/node"
	"github.com/tandem-im/tandem/proto/wire"
)

// Any node answers for any user (DESIGN.md §6, ADR 0003): three
// in-process nodes, users deliberately owned by one node and connected
// through another, every question asked through every node.
//
// The nodes share one real PostgreSQL database, as a production cluster
// does.

// startAnyNodeCluster starts n in-process nodes joined into one cluster
// (internal/clustertest) with this package's admin key and JWT secret,
// once every node sees all of them.
func startAnyNodeCluster(t *testing.T, n int) []*testNode {
	t.Helper()
	var out []*testNode
	url := pgtest.Start(t).CreateDB(t, "anynode")
	for _, nd := range clustertest.StartInProcess(t, n, func(_ int, c *node.Config) {
		c.AdminKey, c.JWTSecret, c.Store = adminKey, jwtSecret, url
	}) {
		out = append(out, &testNode{Node: nd})
	}
	return out
}

// ownedBy returns a fresh user ID that every node places on owner.
func ownedBy(t *testing.T, nodes []*testNode, owner *testNode, prefix string) string {
	t.Helper()
	for i := range 10000 {
		id := fmt.Sprintf("%s-%d", prefix, i)
		if nodes[0].Member().Owner(id, actors.UserKind) != owner.Member().Address() {
			continue
		}
		for _, nd := range nodes {
			if o := nd.Member().Owner(id, actors.UserKind); o != owner.Member().Address() {
				t.Fatalf("%s: %s places %s on %s, node 0 on %s", prefix, nd.Member().Address(), id, o, owner.Member().Address())
			}
		}
		return id
	}
	t.Fatalf("no %s-* owned by %s", prefix, owner.Member().Address())
	return ""
}

// apiRaw does an admin request and returns the status and the raw body.
func apiRaw(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text())
	}
	return resp.StatusCode, b.String()
}

// sameOnEveryNode asks every node and checks the answers are identical;
// it returns the (decoded) answer.
func sameOnEveryNode(t *testing.T, nodes []*testNode, method, path, body string) map[string]any {
	t.Helper()
	var first string
	for i, nd := range nodes {
		code, got := apiRaw(t, method, nd.apiURL()+path, body)
		if code != 200 {
			t.Fatalf("%s %s on node %d: %d %s", method, path, i, code, got)
		}
		if i == 0 {
			first = got
		} else if got != first {
			t.Fatalf("%s %s: node %d answers\n  %s\nnode 0 answers\n  %s", method, path, i, got, first)
		}
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(first), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// activations sums tandem_user_activations_total over the nodes.
func activations(t *testing.T, nodes []*testNode) int {
	t.Helper()
	total := 0
	for _, nd := range nodes {
		resp, err := http.Get(nd.apiURL() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		found := false
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "tandem_user_activations_total "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatal(err)
				}
				total += int(f)
				found = true
			}
		}
		resp.Body.Close()
		if !found {
			t.Fatal("no tandem_user_activations_total in /metrics")
		}
	}
	return total
}

func deviceIDs(v any) []string {
	var out []string
	ds, _ := v.([]any)
	for _, d := range ds {
		out = append(out, d.(map[string]any)["device_id"].(string))
	}
	return out
}

// rawLogin logs a raw connection in through nd's gateway.
func rawLogin(t *testing.T, nd *testNode, user, device, platform string) *rawConn {
	t.Helper()
	c := rawDial(t, nd.wsURL())
	if f := c.loginAs(&wire.Login{Token: token(t, nd.apiURL(), user), DeviceId: device, Platform: platform, HasCursor: true}, 1); f.GetLoginOk() == nil {
		t.Fatalf("login %s/%s: %v", user, device, f)
	}
	return c
}

func TestAnyNodeAnswersForAnyUser(t *testing.T) {
	begin := time.Now()
	nodes := startAnyNodeCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	t.Logf("3 nodes up in %v", time.Since(begin))

	t.Run("DevicesAndOnlineStatus", func(t *testing.T) {
		// alice lives on b, her devices are connected to c and a; carol
		// lives on a and is connected to b; bob (on c) is offline.
		alice, bob, carol := ownedBy(t, nodes, b, "alice"), ownedBy(t, nodes, c, "bob"), ownedBy(t, nodes, a, "carol")
		rawLogin(t, c, alice, "a-phone", "ios")
		dial(t, a.wsURL(), a.apiURL(), alice, "a-laptop", devOpts{platform: "macos"})
		dial(t, b.wsURL(), b.apiURL(), carol, "c-web", devOpts{platform: "web"})

		before := activations(t, nodes)
		m := sameOnEveryNode(t, nodes, "GET", "/v1/users/"+alice+"/devices", "")
		if m["online"] != true || fmt.Sprint(deviceIDs(m["devices"])) != "[a-phone a-laptop]" {
			t.Fatalf("alice's devices: %v", m)
		}
		if m := sameOnEveryNode(t, nodes, "GET", "/v1/users/"+bob+"/devices", ""); m["online"] != false || len(deviceIDs(m["devices"])) != 0 {
			t.Fatalf("offline bob: %v", m)
		}
		m = sameOnEveryNode(t, nodes, "POST", "/v1/online-status", fmt.Sprintf(`{"user_ids":[%q,%q,%q]}`, bob, alice, carol))
		users, _ := m["users"].([]any)
		if len(users) != 3 {
			t.Fatalf("online-status: %v", m)
		}
		got := []string{}
		for _, u := range users {
			u := u.(map[string]any)
			got = append(got, fmt.Sprintf("%s:%v:%v", u["user_id"], u["online"], deviceIDs(u["devices"])))
		}
		want := []string{bob + ":false:[]", alice + ":true:[a-phone a-laptop]", carol + ":true:[c-web]"}
		if !slices.Equal(got, want) {
			t.Fatalf("online-status = %v, want %v", got, want)
		}
		// Asking never activates anybody (bob stays offline and inactive).
		time.Sleep(200 * time.Millisecond)
		if after := activations(t, nodes); after != before {
			t.Fatalf("status questions activated %d users", after-before)
		}
	})

	t.Run("ForceOfflineThroughAThirdNode", func(t *testing.T) {
		// dave lives on a, his device is on b's gateway; c is asked.
		dave := ownedBy(t, nodes, a, "dave")
		phone := rawLogin(t, b, dave, "d-phone", "ios")
		code, m := apiDo(t, "DELETE", c.apiURL()+"/v1/users/"+dave+"/devices", "")
		if k := deviceIDs(m["kicked"]); code != 200 || fmt.Sprint(k) != "[d-phone]" {
			t.Fatalf("force offline through c: %d %v", code, m)
		}
		f, _ := phone.readReply()
		if f.GetKick().GetReason() != wire.Kick_ADMIN || f.GetKick().GetCloseCode() != wire.CloseKickedByAdmin {
			t.Fatalf("kicked phone got %v", f)
		}
		if f, code := phone.read(); f != nil || code != wire.CloseKickedByAdmin {
			t.Fatalf("after the admin kick: %v close %d", f, code)
		}
		if m := sameOnEveryNode(t, nodes, "GET", "/v1/users/"+dave+"/devices", ""); m["online"] != false {
			t.Fatalf("dave still online: %v", m)
		}
		// A device that is not online is NOT_FOUND, from any node.
		if code, m := apiDo(t, "DELETE", a.apiURL()+"/v1/users/"+dave+"/devices/d-phone", ""); code != 404 {
			t.Fatalf("kicking a gone device: %d %v", code, m)
		}
	})

	t.Run("LoginKickAcrossNodes", func(t *testing.T) {
		// erin lives on c; her first phone is on a's gateway, the second
		// logs in through b and takes the mobile slot.
		erin := ownedBy(t, nodes, c, "erin")
		old := rawLogin(t, a, erin, "e-iphone", "ios")
		newer := dial(t, b.wsURL(), b.apiURL(), erin, "e-pixel", devOpts{platform: "android"})
		f, code := old.readReply()
		k := f.GetKick()
		if k == nil || k.GetReason() != wire.Kick_LOGIN_CONFLICT || k.GetNewDevicePlatform() != "android" || k.GetCloseCode() != wire.CloseLoginConflict {
			t.Fatalf("older phone got %v (close %d), want Kick LOGIN_CONFLICT from android", f, code)
		}
		if f, code := old.read(); f != nil || code != wire.CloseLoginConflict {
			t.Fatalf("after the kick frame: %v close %d", f, code)
		}
		if m := sameOnEveryNode(t, nodes, "GET", "/v1/users/"+erin+"/devices", ""); fmt.Sprint(deviceIDs(m["devices"])) != "[e-pixel]" {
			t.Fatalf("erin's devices after the kick: %v", m)
		}
		_ = newer
	})

	t.Run("TransientToUsersOwnedElsewhere", func(t *testing.T) {
		// frank lives on a and is connected to c; grace lives on b and is
		// connected to a; henry (on c) is offline.
		frank, grace, henry := ownedBy(t, nodes, a, "frank"), ownedBy(t, nodes, b, "grace"), ownedBy(t, nodes, c, "henry")
		f := dial(t, c.wsURL(), c.apiURL(), frank, "f-phone", devOpts{})
		g := dial(t, a.wsURL(), a.apiURL(), grace, "g-web", devOpts{platform: "web"})

		typing := text(grace, "typing-1", "...")
		typing.Options = &wire.SendOptions{Transient: true}
		typing.MentionList = []string{grace}
		if ack, err := f.Send(ctxT(t, 10*time.Second), typing); err != nil || ack.GetSeq() != 0 {
			t.Fatalf("transient send: %v %v", ack, err)
		}
		waitFor(t, 10*time.Second, func() bool { return len(g.allTransient()) == 1 }, func() string { return "grace never got frank's transient" })
		if m := g.allTransient()[0]; m.GetSender() != frank || m.GetConversation().GetId() != frank || !m.GetMentioned() {
			t.Fatalf("grace got %v", m)
		}
		// The server API's transient through every node.
		for i, nd := range nodes {
			code, m := apiDo(t, "POST", nd.apiURL()+"/v1/transient", fmt.Sprintf(`{"from":%q,"conversation":{"type":"direct","id":%q},"type":1000,"content":"dHlwaW5n","client_message_id":"api-t%d"}`, frank, grace, i))
			if code != 200 {
				t.Fatalf("transient through node %d: %d %v", i, code, m)
			}
		}
		waitFor(t, 10*time.Second, func() bool { return len(g.allTransient()) == 4 }, func() string {
			return fmt.Sprintf("grace got %d transients, want 4", len(g.allTransient()))
		})
		if len(g.msgs()) != 0 {
			t.Fatalf("a transient was stored: %s", fmtEntries(g.all()))
		}

		// To an offline user: nobody is activated, nothing arrives later.
		before := activations(t, nodes)
		off := text(henry, "typing-2", "...")
		off.Options = &wire.SendOptions{Transient: true}
		if _, err := f.Send(ctxT(t, 10*time.Second), off); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if after := activations(t, nodes); after != before {
			t.Fatalf("a transient to an offline user activated %d users", after-before)
		}
		h := dial(t, b.wsURL(), b.apiURL(), henry, "h-phone", devOpts{})
		time.Sleep(200 * time.Millisecond)
		if len(h.allTransient()) != 0 || len(h.msgs()) != 0 {
			t.Fatalf("henry got %v %s after logging in", h.allTransient(), fmtEntries(h.all()))
		}
	})

	t.Run("GroupTransientToMembersOnEveryNode", func(t *testing.T) {
		// Three members, each living on a different node and connected
		// through another; the group actor lives wherever it lives.
		m1, m2, m3 := ownedBy(t, nodes, a, "gm1"), ownedBy(t, nodes, b, "gm2"), ownedBy(t, nodes, c, "gm3")
		d1 := dial(t, b.wsURL(), b.apiURL(), m1, "p1", devOpts{})
		d2 := dial(t, c.wsURL(), c.apiURL(), m2, "p2", devOpts{})
		d3 := dial(t, a.wsURL(), a.apiURL(), m3, "p3", devOpts{})
		code, m := apiDo(t, "POST", c.apiURL()+"/v1/groups", fmt.Sprintf(`{"group_id":"tg","name":"t","members":[%q,%q,%q]}`, m1, m2, m3))
		if code != 200 {
			t.Fatalf("create group: %d %v", code, m)
		}
		send := &wire.Send{ClientMessageId: "gt-1", Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "tg"},
			Type: int32(wire.MessageType_TEXT), Content: []byte("typing"), MentionList: []string{m2}, Options: &wire.SendOptions{Transient: true}}
		if ack, err := d1.Send(ctxT(t, 10*time.Second), send); err != nil || ack.GetSeq() != 0 {
			t.Fatalf("group transient: %v %v", ack, err)
		}
		for _, x := range []struct {
			d         *device
			who       string
			mentioned bool
		}{{d1, m1, false}, {d2, m2, true}, {d3, m3, false}} {
			waitFor(t, 10*time.Second, func() bool { return len(x.d.allTransient()) == 1 }, func() string { return x.who + " never got the group transient" })
			if tm := x.d.allTransient()[0]; tm.GetConversation().GetId() != "tg" || tm.GetSender() != m1 || tm.GetMentioned() != x.mentioned {
				t.Fatalf("%s got %v, want mentioned=%v", x.who, tm, x.mentioned)
			}
		}
	})

	t.Run("ServerAPIThroughEveryNode", func(t *testing.T) {
		kim, lee := ownedBy(t, nodes, a, "kim"), ownedBy(t, nodes, b, "lee")
		var ids []string
		for i, nd := range nodes {
			body := fmt.Sprintf(`{"from":%q,"conversation":{"type":"direct","id":%q},"type":1,"content":"aGk=","include_sender":%v,"client_message_id":"api-%d"}`, kim, lee, i%2 == 0, i)
			code, m := apiDo(t, "POST", nd.apiURL()+"/v1/messages", body)
			if code != 200 || m["message_id"] == nil {
				t.Fatalf("send through node %d: %d %v", i, code, m)
			}
			ids = append(ids, m["message_id"].(string))
			// The same client message ID through the next node: the same message.
			next := nodes[(i+1)%len(nodes)]
			if code, m := apiDo(t, "POST", next.apiURL()+"/v1/messages", body); code != 200 || m["duplicate"] != true || m["message_id"] != ids[i] {
				t.Fatalf("resend through another node: %d %v, want a duplicate of %s", code, m, ids[i])
			}
		}
		// lee's history, read through every node, has all three (in lee's
		// log order: a message delivered through kim's outbox may land after
		// a later direct one), the same on every node.
		slices.Sort(ids)
		var last string
		waitFor(t, 10*time.Second, func() bool {
			var answers []string
			for _, nd := range nodes {
				code, m := apiDo(t, "GET", nd.apiURL()+"/v1/users/"+lee+"/history?conversation_type=direct&conversation_id="+kim, "")
				var got []string
				msgs, _ := m["messages"].([]any)
				for _, x := range msgs {
					got = append(got, x.(map[string]any)["message_id"].(string))
				}
				answers = append(answers, fmt.Sprint(got))
				if slices.Sort(got); code != 200 || !slices.Equal(got, ids) {
					last = fmt.Sprint(answers)
					return false
				}
			}
			last = fmt.Sprint(answers)
			return answers[0] == answers[1] && answers[1] == answers[2]
		}, func() string {
			return "lee's history through each node: " + last + ", want the same, holding " + fmt.Sprint(ids)
		})
		// kim's own log has the include_sender ones only (nodes 0 and 2).
		code, m := apiDo(t, "GET", c.apiURL()+"/v1/users/"+kim+"/history?conversation_type=direct&conversation_id="+lee, "")
		if msgs, _ := m["messages"].([]any); code != 200 || len(msgs) != 2 {
			t.Fatalf("kim's history through c: %d %v", code, m)
		}

		// Groups: create through a, add through b, remove through c,
		// dismiss through a; every node sees the same group.
		steps := []struct {
			nd           *testNode
			method, path string
			body         string
			want         []string
		}{
			{a, "POST", "/v1/groups", fmt.Sprintf(`{"group_id":"api-g","name":"n","members":[%q]}`, kim), []string{kim}},
			{b, "POST", "/v1/groups/api-g/members", fmt.Sprintf(`{"user_ids":[%q]}`, lee), []string{kim, lee}},
			{c, "DELETE", "/v1/groups/api-g/members/" + kim, "", []string{lee}},
		}
		for _, s := range steps {
			code, m := apiDo(t, s.method, s.nd.apiURL()+s.path, s.body)
			var members []string
			ms, _ := m["members"].([]any)
			for _, x := range ms {
				members = append(members, x.(string))
			}
			if code != 200 || !slices.Equal(members, s.want) {
				t.Fatalf("%s %s through %s: %d %v, want members %v", s.method, s.path, s.nd.Member().Address(), code, m, s.want)
			}
		}
		if code, m := apiDo(t, "DELETE", a.apiURL()+"/v1/groups/api-g", ""); code != 200 {
			t.Fatalf("dismiss: %d %v", code, m)
		}
		if code, m := apiDo(t, "POST", b.apiURL()+"/v1/groups/api-g/members", fmt.Sprintf(`{"user_ids":[%q]}`, kim)); code != 404 {
			t.Fatalf("adding to a dismissed group through b: %d %v", code, m)
		}
	})

	// Last: it changes the policy of the whole cluster.
	t.Run("KickPolicyChangeReachesEveryNode", func(t *testing.T) {
		// ivy lives on c; her two web tabs are on a's and b's gateways
		// (web allows 10 by default). The change is made through a.
		ivy := ownedBy(t, nodes, c, "ivy")
		tab1 := rawLogin(t, a, ivy, "tab1", "web")
		tab2 := rawLogin(t, b, ivy, "tab2", "web")
		code, m := apiDo(t, "PUT", a.apiURL()+"/v1/kick-policy", `{"mode":"per_class","limits":{"web":1}}`)
		if code != 200 {
			t.Fatalf("PUT kick-policy through a: %d %v", code, m)
		}
		f, _ := tab1.readReply()
		if f.GetKick().GetReason() != wire.Kick_POLICY || f.GetKick().GetCloseCode() != wire.CloseKickedByPolicy {
			t.Fatalf("the older tab got %v, want a POLICY kick", f)
		}
		if _, code := tab1.read(); code != wire.CloseKickedByPolicy {
			t.Fatalf("older tab closed with %d", code)
		}
		tab2.ping(7) // the newer one survives
		for i, nd := range nodes {
			if code, m := apiDo(t, "GET", nd.apiURL()+"/v1/kick-policy", ""); code != 200 || m["limits"].(map[string]any)["web"] != float64(1) {
				t.Fatalf("policy on node %d: %d %v", i, code, m)
			}
		}
		if m := sameOnEveryNode(t, nodes, "GET", "/v1/users/"+ivy+"/devices", ""); fmt.Sprint(deviceIDs(m["devices"])) != "[tab2]" {
			t.Fatalf("ivy's devices: %v", m)
		}
		// A later login through c follows the new policy (web limit 1).
		rawLogin(t, c, ivy, "tab3", "web")
		if f, _ := tab2.readReply(); f.GetKick().GetReason() != wire.Kick_LOGIN_CONFLICT {
			t.Fatalf("tab2 got %v, want a LOGIN_CONFLICT kick under the new policy", f)
		}
	})
}
