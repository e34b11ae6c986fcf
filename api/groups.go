package api

import (
	"context"
	"net/http"

	"github.com/tandem-im/tandem/proto/wire"
)

// Groups is what the API needs to manage groups (actors.Runtime satisfies
// it). op is "create", "add", "remove" or "dismiss"; the answer is the
// group's name and members after it, or a catalogue error.
type Groups interface {
	GroupOp(ctx context.Context, group, op, by, name string, members []string) (string, []string, *wire.Error, error)
}

type groupRequest struct {
	GroupID string   `json:"group_id"`
	Name    string   `json:"name"`
	Owner   string   `json:"owner"`
	Members []string `json:"members"`
	UserIDs []string `json:"user_ids"`
}

type groupResponse struct {
	GroupID string   `json:"group_id"`
	Name    string   `json:"name,omitempty"`
	Members []string `json:"members"`
}

func (s *Server) groupOp(w http.ResponseWriter, r *http.Request, group, op, by, name string, members []string) {
	if !s.cfg.ValidID(group) {
		writeErr(w, wire.CodeInvalidArgument, "group ID must be 1-64 bytes of [A-Za-z0-9_.@:-]")
		return
	}
	gname, gmembers, werr, err := s.cfg.Groups.GroupOp(r.Context(), group, op, by, name, members)
	if err != nil {
		s.cfg.Logger.Warn("group operation failed", "group", group, "op", op, "err", err)
		writeErr(w, wire.CodeUnavailable, "the group's actor did not answer; retry")
		return
	}
	if werr != nil {
		writeErr(w, wire.Code(werr.GetCode()), werr.GetMessage())
		return
	}
	if gmembers == nil {
		gmembers = []string{}
	}
	writeJSON(w, http.StatusOK, groupResponse{GroupID: group, Name: gname, Members: gmembers})
}

// POST /v1/groups {group_id, name, owner, members}.
func (s *Server) createGroup(w http.ResponseWriter, r *http.Request) {
	var req groupRequest
	if !readJSON(w, r, &req) {
		return
	}
	s.groupOp(w, r, req.GroupID, "create", req.Owner, req.Name, req.Members)
}

// POST /v1/groups/{group}/members {user_ids}.
func (s *Server) addMembers(w http.ResponseWriter, r *http.Request) {
	var req groupRequest
	if !readJSON(w, r, &req) {
		return
	}
	s.groupOp(w, r, r.PathValue("group"), "add", "", "", req.UserIDs)
}

// DELETE /v1/groups/{group}/members/{user}.
func (s *Server) removeMember(w http.ResponseWriter, r *http.Request) {
	s.groupOp(w, r, r.PathValue("group"), "remove", "", "", []string{r.PathValue("user")})
}

// DELETE /v1/groups/{group}.
func (s *Server) dismissGroup(w http.ResponseWriter, r *http.Request) {
	s.groupOp(w, r, r.PathValue("group"), "dismiss", "", "", nil)
}
