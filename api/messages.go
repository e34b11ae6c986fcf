package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"

	"github.com/tandem-im/tandem/proto/wire"
)

// Messages is what the API needs to send and recall as a user
// (actors.Runtime satisfies it). Answers are wire frames: SendAck, Ok or
// Error.
type Messages interface {
	SendAs(ctx context.Context, from string, m *wire.Send, includeSender bool) (*wire.Frame, error)
	RecallAs(ctx context.Context, user string, r *wire.Recall) (*wire.Frame, error)
	History(ctx context.Context, user string, h *wire.HistoryRequest) (*wire.Frame, error)
}

type conversationJSON struct {
	Type string `json:"type"` // "direct" or "group" (any case)
	ID   string `json:"id"`
}

// conversation validates the conversation of a request body: on failure it answers
// and returns nil.
func (s *Server) conversation(w http.ResponseWriter, c conversationJSON) *wire.Conversation {
	conv, ok := c.wire()
	if !ok {
		writeErr(w, wire.CodeInvalidArgument, `conversation.type must be "direct" or "group"`)
		return nil
	}
	if !s.cfg.ValidID(c.ID) {
		writeErr(w, wire.CodeInvalidArgument, "conversation.id must be a user ID (direct) or a group ID (group): 1-64 bytes of [A-Za-z0-9_.@:-]")
		return nil
	}
	return conv
}

func (c conversationJSON) wire() (*wire.Conversation, bool) {
	switch strings.ToLower(c.Type) {
	case "direct":
		return &wire.Conversation{Type: wire.Conversation_DIRECT, Id: c.ID}, true
	case "group":
		return &wire.Conversation{Type: wire.Conversation_GROUP, Id: c.ID}, true
	}
	return nil, false
}

type sendRequest struct {
	From             string            `json:"from"`
	Conversation     conversationJSON  `json:"conversation"`
	Type             int32             `json:"type"`
	Content          []byte            `json:"content"` // base64 in JSON
	Attributes       map[string]string `json:"attributes"`
	MentionList      []string          `json:"mention_list"`
	MentionAll       bool              `json:"mention_all"`
	IncludeSender    bool              `json:"include_sender"`
	ClientMessageID  string            `json:"client_message_id"`
	ReceiptRequested bool              `json:"receipt_requested"`
	PushData         string            `json:"push_data"`
}

type sendResponse struct {
	MessageID    string `json:"message_id"`
	Seq          uint64 `json:"seq,omitempty"` // in the sender's log (include_sender)
	ServerTimeMS int64  `json:"server_time_ms"`
	Duplicate    bool   `json:"duplicate,omitempty"`
}

// POST /v1/messages and POST /v1/transient.
func (s *Server) sendMessage(transient bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req sendRequest
		if !readJSON(w, r, &req) {
			return
		}
		if !s.cfg.ValidID(req.From) {
			writeErr(w, wire.CodeInvalidArgument, "from must be a user ID (1-64 bytes of [A-Za-z0-9_.@:-])")
			return
		}
		conv := s.conversation(w, req.Conversation)
		if conv == nil {
			return
		}
		cmid := req.ClientMessageID
		if cmid == "" {
			cmid = "api-" + randomHex(12) // no idempotency without the caller's own ID
		}
		m := &wire.Send{
			ClientMessageId: cmid, Conversation: conv, Type: req.Type, Content: req.Content,
			Attributes: req.Attributes, MentionList: req.MentionList, MentionAll: req.MentionAll,
			Options: &wire.SendOptions{Transient: transient, ReceiptRequested: req.ReceiptRequested, PushData: req.PushData},
		}
		reply, err := s.cfg.Messages.SendAs(r.Context(), req.From, m, req.IncludeSender)
		if err != nil {
			s.cfg.Logger.Warn("send as user failed", "from", req.From, "err", err)
			writeErr(w, wire.CodeUnavailable, "the user's actor did not answer; retry with the same client_message_id")
			return
		}
		if e := reply.GetError(); e != nil {
			writeWireErr(w, e)
			return
		}
		ack := reply.GetSendAck()
		writeJSON(w, http.StatusOK, sendResponse{MessageID: ack.GetMessageId(), Seq: ack.GetSeq(), ServerTimeMS: ack.GetServerTimeMs(), Duplicate: ack.GetDuplicate()})
	}
}

type recallRequest struct {
	From         string           `json:"from"`
	Conversation conversationJSON `json:"conversation"`
	MessageID    string           `json:"message_id"`
}

// POST /v1/recall: recall a message `from` sent (no time limit).
func (s *Server) recall(w http.ResponseWriter, r *http.Request) {
	var req recallRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !s.cfg.ValidID(req.From) || req.MessageID == "" {
		writeErr(w, wire.CodeInvalidArgument, "from (a user ID) and message_id are required")
		return
	}
	conv := s.conversation(w, req.Conversation)
	if conv == nil {
		return
	}
	reply, err := s.cfg.Messages.RecallAs(r.Context(), req.From, &wire.Recall{Conversation: conv, MessageId: req.MessageID})
	if err != nil {
		s.cfg.Logger.Warn("recall failed", "from", req.From, "err", err)
		writeErr(w, wire.CodeUnavailable, "the user's actor did not answer; retry")
		return
	}
	if e := reply.GetError(); e != nil {
		writeWireErr(w, e)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"message_id": req.MessageID, "status": "recalled"})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand never fails on Linux
	return hex.EncodeToString(b)
}

type historyMessage struct {
	MessageID       string            `json:"message_id"`
	ClientMessageID string            `json:"client_message_id,omitempty"`
	Sender          string            `json:"sender"`
	SenderDevice    string            `json:"sender_device,omitempty"`
	Type            int32             `json:"type"`
	Content         []byte            `json:"content,omitempty"`
	Attributes      map[string]string `json:"attributes,omitempty"`
	MentionList     []string          `json:"mention_list,omitempty"`
	MentionAll      bool              `json:"mention_all,omitempty"`
	ServerTimeMS    int64             `json:"server_time_ms"`
	Edited          bool              `json:"edited,omitempty"`
	Recalled        bool              `json:"recalled,omitempty"`
}

// GET /v1/users/{user}/history?conversation_type=&conversation_id=&before=&limit=
func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	u := s.pathUser(w, r)
	if u == "" {
		return
	}
	q := r.URL.Query()
	conv, ok := conversationJSON{Type: q.Get("conversation_type"), ID: q.Get("conversation_id")}.wire()
	if !ok || !s.cfg.ValidID(conv.GetId()) {
		writeErr(w, wire.CodeInvalidArgument, "conversation_type (direct or group) and conversation_id are required")
		return
	}
	limit := 0
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			writeErr(w, wire.CodeInvalidArgument, "limit must be 1-100")
			return
		}
		limit = n
	}
	reply, err := s.cfg.Messages.History(r.Context(), u, &wire.HistoryRequest{Conversation: conv, BeforeMessageId: q.Get("before"), Limit: uint32(limit)})
	if err != nil {
		s.cfg.Logger.Warn("history failed", "user", u, "err", err)
		writeErr(w, wire.CodeUnavailable, "the user's actor did not answer; retry")
		return
	}
	if e := reply.GetError(); e != nil {
		writeWireErr(w, e)
		return
	}
	page := reply.GetHistoryPage()
	out := struct {
		Messages []historyMessage `json:"messages"`
		HasMore  bool             `json:"has_more"`
	}{Messages: []historyMessage{}, HasMore: page.GetHasMore()}
	for _, m := range page.GetMessages() {
		out.Messages = append(out.Messages, historyMessage{
			MessageID: m.GetMessageId(), ClientMessageID: m.GetClientMessageId(), Sender: m.GetSender(), SenderDevice: m.GetSenderDevice(),
			Type: m.GetType(), Content: m.GetContent(), Attributes: m.GetAttributes(), MentionList: m.GetMentionList(),
			MentionAll: m.GetMentionAll(), ServerTimeMS: m.GetServerTimeMs(), Edited: m.GetEdited(), Recalled: m.GetRecalled(),
		})
	}
	writeJSON(w, http.StatusOK, out)
}
