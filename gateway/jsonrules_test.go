package gateway

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/wire"
)

// These tests pin the JSON encoding rules that docs/protocol.md ("JSON
// encoding rules") documents for tandem.v1.json. If one fails, fix the
// code or the page, never only one of them.

// decodeJSONFrame decodes s as a text message on tandem.v1.json.
func decodeJSONFrame(t *testing.T, s string) (*wire.Frame, error) {
	t.Helper()
	return codecJSON.decodeFrame(ws.OpText, []byte(s))
}

// encodeJSONFrame returns the JSON payload the server writes for f.
func encodeJSONFrame(t *testing.T, f *wire.Frame) string {
	t.Helper()
	b, err := codecJSON.encode(f)
	if err != nil {
		t.Fatal(err)
	}
	// Strip the WebSocket header: the payload is the JSON object.
	return string(b[strings.IndexByte(string(b), '{'):])
}

func TestJSONRule64BitIntegersAcceptedAsNumbersOrStrings(t *testing.T) {
	for _, s := range []string{
		`{"id":"7","cursorAck":{"seq":"5"}}`,
		`{"id":7,"cursorAck":{"seq":5}}`,
		`{"id":7.0,"cursorAck":{"seq":5e0}}`,
	} {
		f, err := decodeJSONFrame(t, s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if f.GetId() != 7 || f.GetCursorAck().GetSeq() != 5 {
			t.Fatalf("%s: decoded %v", s, f)
		}
	}
	// 64-bit values beyond 2^53 survive as strings.
	f, err := decodeJSONFrame(t, `{"id":"18446744073709551615","cursorAck":{"seq":"9007199254740993"}}`)
	if err != nil || f.GetId() != 1<<64-1 || f.GetCursorAck().GetSeq() != 9007199254740993 {
		t.Fatalf("large values: %v %v", f, err)
	}
	// Neither a fraction nor a negative number is a uint64.
	for _, s := range []string{`{"id":1,"cursorAck":{"seq":1.5}}`, `{"id":1,"cursorAck":{"seq":-1}}`, `{"id":1,"cursorAck":{"seq":"0x10"}}`} {
		if _, err := decodeJSONFrame(t, s); err == nil {
			t.Fatalf("%s decoded", s)
		}
	}
}

func TestJSONRule64BitIntegersEmittedAsStrings(t *testing.T) {
	got := encodeJSONFrame(t, &wire.Frame{Id: 3, Body: &wire.Frame_SendAck{SendAck: &wire.SendAck{
		MessageId: "m1", Seq: 12, ServerTimeMs: 1767229200123,
	}}})
	for _, want := range []string{`"id":"3"`, `"seq":"12"`, `"serverTimeMs":"1767229200123"`} {
		if !strings.Contains(compact(t, got), want) {
			t.Fatalf("encoded %s: no %s", got, want)
		}
	}
	// 32-bit integers stay numbers.
	got = encodeJSONFrame(t, &wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Entries: []*wire.Entry{{
		Kind: &wire.Entry_Read{Read: &wire.ReadEvent{UpToSeq: 4, Unread: 2}},
	}}}}})
	if c := compact(t, got); !strings.Contains(c, `"unread":2`) || !strings.Contains(c, `"upToSeq":"4"`) {
		t.Fatalf("encoded %s", got)
	}
}

func TestJSONRule32BitIntegersAndBytes(t *testing.T) {
	for _, s := range []string{`{"id":1,"sync":{"limit":"20"}}`, `{"id":1,"sync":{"limit":20}}`} {
		f, err := decodeJSONFrame(t, s)
		if err != nil || f.GetSync().GetLimit() != 20 {
			t.Fatalf("%s: %v %v", s, f, err)
		}
	}
	// content: standard or URL-safe base64, padded or not.
	for _, c := range []string{"+/8=", "+/8", "-_8=", "-_8"} {
		f, err := decodeJSONFrame(t, `{"id":1,"send":{"content":"`+c+`"}}`)
		if err != nil || string(f.GetSend().GetContent()) != "\xfb\xff" {
			t.Fatalf("content %q: %v %v", c, f, err)
		}
	}
	got := compact(t, encodeJSONFrame(t, &wire.Frame{Id: 1, Body: &wire.Frame_Send{Send: &wire.Send{Content: []byte{0xfb, 0xff}}}}))
	if !strings.Contains(got, `"content":"+/8="`) {
		t.Fatalf("encoded %s", got)
	}
}

func TestJSONRuleFieldNamesCamelOrSnake(t *testing.T) {
	for _, s := range []string{
		`{"id":"1","send":{"clientMessageId":"c-1","conversation":{"type":"DIRECT","id":"bob"},"mentionAll":true}}`,
		`{"id":"1","send":{"client_message_id":"c-1","conversation":{"type":"DIRECT","id":"bob"},"mention_all":true}}`,
	} {
		f, err := decodeJSONFrame(t, s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if f.GetSend().GetClientMessageId() != "c-1" || !f.GetSend().GetMentionAll() {
			t.Fatalf("%s: decoded %v", s, f)
		}
	}
	// The oneof's own field names too: cursor_ack as well as cursorAck.
	f, err := decodeJSONFrame(t, `{"id":"2","cursor_ack":{"seq":"3"}}`)
	if err != nil || f.GetCursorAck().GetSeq() != 3 {
		t.Fatalf("cursor_ack: %v %v", f, err)
	}
	// Names are case-sensitive: neither ClientMessageId nor CLIENT_MESSAGE_ID
	// is a field name, so they are unknown fields (dropped).
	f, err = decodeJSONFrame(t, `{"id":"1","send":{"ClientMessageId":"c-1","CLIENT_MESSAGE_ID":"c-2"}}`)
	if err != nil || f.GetSend().GetClientMessageId() != "" {
		t.Fatalf("wrong-case names: %v %v", f, err)
	}
	// Both spellings of one field in one object are refused.
	if _, err := decodeJSONFrame(t, `{"id":"1","send":{"clientMessageId":"a","client_message_id":"b"}}`); err == nil {
		t.Fatal("duplicate field accepted")
	}
	// Output always uses lowerCamelCase.
	got := compact(t, encodeJSONFrame(t, &wire.Frame{Id: 1, Body: &wire.Frame_SendAck{SendAck: &wire.SendAck{MessageId: "m", Seq: 1, ServerTimeMs: 2}}}))
	if !strings.Contains(got, `"sendAck":{"messageId":"m"`) || strings.Contains(got, "_") {
		t.Fatalf("encoded %s", got)
	}
}

func TestJSONRuleEnumsByNameOrNumber(t *testing.T) {
	for _, typ := range []string{`"DIRECT"`, `1`} {
		s := `{"id":"1","send":{"clientMessageId":"c","conversation":{"type":` + typ + `,"id":"bob"}}}`
		f, err := decodeJSONFrame(t, s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if f.GetSend().GetConversation().GetType() != wire.Conversation_DIRECT {
			t.Fatalf("%s: type %v", s, f.GetSend().GetConversation().GetType())
		}
	}
	// A number the server does not know is kept as that number.
	f, err := decodeJSONFrame(t, `{"id":"1","send":{"conversation":{"type":7,"id":"x"}}}`)
	if err != nil || f.GetSend().GetConversation().GetType() != 7 {
		t.Fatalf("type 7: %v %v", f, err)
	}
	// Names are exact: "direct", "Direct" and the quoted number "1" are not
	// names, and, unknown fields being dropped, the field is left unset
	// (TYPE_UNSPECIFIED), which the server then refuses as it would a
	// missing type.
	for _, typ := range []string{`"direct"`, `"Direct"`, `"1"`} {
		s := `{"id":"1","send":{"clientMessageId":"c","conversation":{"type":` + typ + `,"id":"bob"}}}`
		f, err := decodeJSONFrame(t, s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if got := f.GetSend().GetConversation().GetType(); got != wire.Conversation_TYPE_UNSPECIFIED {
			t.Fatalf("%s: type %v", s, got)
		}
	}
	// The server writes names.
	got := compact(t, encodeJSONFrame(t, &wire.Frame{Body: &wire.Frame_Kick{Kick: &wire.Kick{Reason: wire.Kick_LOGIN_CONFLICT}}}))
	if !strings.Contains(got, `"reason":"LOGIN_CONFLICT"`) {
		t.Fatalf("encoded %s", got)
	}
	got = compact(t, encodeJSONFrame(t, &wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Entries: []*wire.Entry{{
		Kind: &wire.Entry_Read{Read: &wire.ReadEvent{Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "g"}, UpToSeq: 1}},
	}}}}}))
	if !strings.Contains(got, `"type":"GROUP"`) {
		t.Fatalf("encoded %s", got)
	}
}

func TestJSONRuleUnknownFieldsIgnored(t *testing.T) {
	f, err := decodeJSONFrame(t, `{"id":"4","futureField":{"a":[1,2]},"ping":{"extra":true}}`)
	if err != nil || f.GetId() != 4 || f.GetPing() == nil {
		t.Fatalf("unknown fields: %v %v", f, err)
	}
	// A frame whose only body is unknown keeps its id: the server answers
	// it with BAD_FRAME "unknown frame type" carrying that id.
	f, err = decodeJSONFrame(t, `{"id":"5","teleport":{}}`)
	if err != errUnknownFrameType || f.GetId() != 5 {
		t.Fatalf("unknown body: %v %v", f, err)
	}
	// Unknown fields are still JSON: malformed JSON is a BAD_FRAME.
	if _, err := decodeJSONFrame(t, `{"id":"6","ping":{},"x":}`); err == nil {
		t.Fatal("malformed JSON accepted")
	}
	// Exactly one body per frame.
	if _, err := decodeJSONFrame(t, `{"id":"8","ping":{},"logout":{}}`); err == nil {
		t.Fatal("two bodies accepted")
	}
	// null is the same as absent.
	f, err = decodeJSONFrame(t, `{"id":"7","sync":{"afterSeq":null,"limit":null}}`)
	if err != nil || f.GetSync() == nil || f.GetSync().GetAfterSeq() != 0 {
		t.Fatalf("null: %v %v", f, err)
	}
}

func TestJSONRuleZeroValuesOmitted(t *testing.T) {
	cases := []struct {
		f      *wire.Frame
		absent []string
	}{
		{&wire.Frame{Id: 1, Body: &wire.Frame_LoginOk{LoginOk: &wire.LoginOk{}}}, []string{"lastSeq", "serverTimeMs"}},
		{&wire.Frame{Id: 2, Body: &wire.Frame_SyncPage{SyncPage: &wire.SyncPage{}}}, []string{"hasMore", "entries"}},
		{&wire.Frame{Id: 3, Body: &wire.Frame_SendAck{SendAck: &wire.SendAck{MessageId: "m"}}}, []string{"seq", "duplicate"}},
		{&wire.Frame{Body: &wire.Frame_Kick{Kick: &wire.Kick{Reason: wire.Kick_ADMIN}}}, []string{"mayReconnect", `"id"`}},
		{&wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Entries: []*wire.Entry{{Kind: &wire.Entry_Read{Read: &wire.ReadEvent{UpToSeq: 9}}}}}}}, []string{"unread"}},
		{&wire.Frame{Id: 4, Body: &wire.Frame_HistoryPage{HistoryPage: &wire.HistoryPage{}}}, []string{"hasMore", "messages"}},
	}
	for _, c := range cases {
		got := encodeJSONFrame(t, c.f)
		for _, a := range c.absent {
			if strings.Contains(got, a) {
				t.Errorf("encoded %s: has %s", got, a)
			}
		}
	}
	// An empty message is still written, as {}: the body's presence is
	// what says which frame it is.
	if got := compact(t, encodeJSONFrame(t, &wire.Frame{Id: 5, Body: &wire.Frame_Ok{Ok: &wire.Ok{}}})); got != `{"id":"5","ok":{}}` {
		t.Fatalf("Ok encoded as %s", got)
	}
	// A zero enum is omitted too.
	got := encodeJSONFrame(t, &wire.Frame{Body: &wire.Frame_Kick{Kick: &wire.Kick{}}})
	if strings.Contains(got, "reason") {
		t.Fatalf("encoded %s", got)
	}
	// Round trip: what the server writes decodes to the same frame.
	for _, f := range sampleFrames() {
		back, err := decodeJSONFrame(t, encodeJSONFrame(t, f))
		if err != nil || !proto.Equal(back, f) {
			t.Fatalf("round trip of %v: %v %v", f, back, err)
		}
	}
}

// compact removes the insignificant whitespace protojson may add.
func compact(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	var b strings.Builder
	if err := json.NewEncoder(&b).Encode(v); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(strings.ReplaceAll(b.String(), `\u003c`, "<"))
}
