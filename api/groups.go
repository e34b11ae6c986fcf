package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/tandem-im/tandem/proto/wire"
)

// Groups is what the API needs to manage groups (actors.Runtime satisfies
// it). op is "create", "add", "remove" or "dismiss"; the answer is the
// group's name and members after it, or a catalogue error.
type Groups interface {
	GroupOp(ctx context.Context, group, op, by, name string, members []string) (string, []string, *wire.Error, error)
}

// createGroupRequest is the body of POST /v1/groups: the group's first
// members are `members`.
type createGroupRequest struct {
	GroupID string   `json:"group_id"`
	Name    string   `json:"name"`
	Owner   string   `json:"owner"`
	Members []string `json:"members"`
}

// addMembersRequest is the body of POST /v1/groups/{group}/members: like
// every body that lists users to act on (online-status too), the list is
// `user_ids`; `members` here is an unknown field and refused.
type addMembersRequest struct {
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
		writeWireErr(w, werr)
		return
	}
	if gmembers == nil {
		gmembers = []string{}
	}
	writeJSON(w, http.StatusOK, groupResponse{GroupID: group, Name: gname, Members: gmembers})
}

// POST /v1/groups {group_id, name, owner, members}.
func (s *Server) createGroup(w http.ResponseWriter, r *http.Request) {
	var req createGroupRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !s.cfg.ValidID(req.GroupID) {
		writeErr(w, wire.CodeInvalidArgument, "group_id is required: 1-64 bytes of [A-Za-z0-9_.@:-]")
		return
	}
	if req.Owner != "" && !s.cfg.ValidID(req.Owner) {
		writeErr(w, wire.CodeInvalidArgument, "owner must be a user ID (1-64 bytes of [A-Za-z0-9_.@:-]) or absent")
		return
	}
	if !s.userList(w, "members", req.Members) {
		return
	}
	s.groupOp(w, r, req.GroupID, "create", req.Owner, req.Name, req.Members)
}

// POST /v1/groups/{group}/members {user_ids}.
func (s *Server) addMembers(w http.ResponseWriter, r *http.Request) {
	var req addMembersRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !s.userList(w, "user_ids", req.UserIDs) {
		return
	}
	s.groupOp(w, r, r.PathValue("group"), "add", "", "", req.UserIDs)
}

// userList checks a required list of user IDs named field: present, not
// empty, every entry valid. On failure it answers and returns false.
func (s *Server) userList(w http.ResponseWriter, field string, ids []string) bool {
	if len(ids) == 0 {
		writeErr(w, wire.CodeInvalidArgument, field+" is required: a non-empty array of user IDs")
		return false
	}
	for _, u := range ids {
		if !s.cfg.ValidID(u) {
			writeErr(w, wire.CodeInvalidArgument, fmt.Sprintf("%s holds an invalid user ID %q (1-64 bytes of [A-Za-z0-9_.@:-])", field, truncate(u, 80)))
			return false
		}
	}
	return true
}

// DELETE /v1/groups/{group}/members/{user}.
func (s *Server) removeMember(w http.ResponseWriter, r *http.Request) {
	s.groupOp(w, r, r.PathValue("group"), "remove", "", "", []string{r.PathValue("user")})
}

// DELETE /v1/groups/{group}.
func (s *Server) dismissGroup(w http.ResponseWriter, r *http.Request) {
	s.groupOp(w, r, r.PathValue("group"), "dismiss", "", "", nil)
}
