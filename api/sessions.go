package api

import (
	"fmt"
	"net/http"

	"github.com/tandem-im/tandem/proto/wire"
)

// MaxStatusUsers bounds one online-status query.
const MaxStatusUsers = 500

type deviceJSON struct {
	DeviceID   string `json:"device_id"`
	Platform   string `json:"platform"`
	Tag        string `json:"tag,omitempty"`
	LoginID    string `json:"login_id"`
	SinceMS    int64  `json:"since_ms"`
	LoginExt   string `json:"login_ext,omitempty"`
	AppVersion string `json:"app_version,omitempty"`
}

func devicesJSON(ds []*wire.DeviceInfo) []deviceJSON {
	out := make([]deviceJSON, 0, len(ds))
	for _, d := range ds {
		out = append(out, deviceJSON{
			DeviceID: d.GetDeviceId(), Platform: d.GetPlatform(), Tag: d.GetTag(), LoginID: d.GetLoginId(),
			SinceMS: d.GetSinceMs(), LoginExt: d.GetLoginExt(), AppVersion: d.GetAppVersion(),
		})
	}
	return out
}

type userDevices struct {
	UserID  string       `json:"user_id"`
	Online  bool         `json:"online"`
	Devices []deviceJSON `json:"devices"`
}

// pathUser reads and checks {user}; on failure it answers and returns "".
func (s *Server) pathUser(w http.ResponseWriter, r *http.Request) string {
	u := r.PathValue("user")
	if !s.cfg.ValidID(u) {
		writeErr(w, wire.CodeInvalidArgument, "user ID must be 1-64 bytes of [A-Za-z0-9_.@:-]")
		return ""
	}
	return u
}

// GET /v1/users/{user}/devices: the user's live sessions, on any node.
func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) {
	u := s.pathUser(w, r)
	if u == "" {
		return
	}
	st, err := s.cfg.Sessions.OnlineStatus(r.Context(), []string{u})
	if err != nil {
		s.presenceFailed(w, "devices", err)
		return
	}
	ds := st[u]
	writeJSON(w, http.StatusOK, userDevices{UserID: u, Online: len(ds) > 0, Devices: devicesJSON(ds)})
}

// presenceFailed answers a cluster-wide question that could not be
// completed: temporary, never a silently wrong "offline".
func (s *Server) presenceFailed(w http.ResponseWriter, what string, err error) {
	s.cfg.Logger.Warn(what+" failed", "err", err)
	writeErr(w, wire.CodeUnavailable, "a cluster node did not answer in time, so online status is unknown; retry")
}

type kickResponse struct {
	UserID string       `json:"user_id"`
	Kicked []deviceJSON `json:"kicked"`
}

// DELETE /v1/users/{user}/devices[/{device}]: force offline.
func (s *Server) kick(w http.ResponseWriter, r *http.Request) {
	u := s.pathUser(w, r)
	if u == "" {
		return
	}
	dev := r.PathValue("device")
	if r.Pattern == "DELETE /v1/users/{user}/devices/{device}" && !s.cfg.ValidID(dev) {
		writeErr(w, wire.CodeInvalidArgument, "device ID must be 1-64 bytes of [A-Za-z0-9_.@:-]")
		return
	}
	kicked, err := s.cfg.Sessions.Kick(r.Context(), u, dev)
	if err != nil {
		s.cfg.Logger.Warn("force offline failed", "user", u, "device", dev, "err", err)
		writeErr(w, wire.CodeUnavailable, "a cluster node or the user's actor did not answer; retry")
		return
	}
	if dev != "" && len(kicked) == 0 {
		writeErr(w, wire.CodeNotFound, "no live session of that device")
		return
	}
	writeJSON(w, http.StatusOK, kickResponse{UserID: u, Kicked: devicesJSON(kicked)})
}

type statusRequest struct {
	UserIDs []string `json:"user_ids"`
}

type statusResponse struct {
	Users []userDevices `json:"users"`
}

// POST /v1/online-status: batch status with per-device detail, in the
// order asked, answered for users on any node.
func (s *Server) onlineStatus(w http.ResponseWriter, r *http.Request) {
	var req statusRequest
	if !readJSON(w, r, &req) {
		return
	}
	if len(req.UserIDs) > MaxStatusUsers {
		writeErr(w, wire.CodeInvalidArgument, fmt.Sprintf("user_ids must hold 1-%d user IDs", MaxStatusUsers))
		return
	}
	if !s.userList(w, "user_ids", req.UserIDs) {
		return
	}
	st, err := s.cfg.Sessions.OnlineStatus(r.Context(), req.UserIDs)
	if err != nil {
		s.presenceFailed(w, "online status", err)
		return
	}
	out := statusResponse{Users: make([]userDevices, 0, len(req.UserIDs))}
	for _, u := range req.UserIDs {
		ds := st[u]
		out.Users = append(out.Users, userDevices{UserID: u, Online: len(ds) > 0, Devices: devicesJSON(ds)})
	}
	writeJSON(w, http.StatusOK, out)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

type policyJSON struct {
	Mode   string         `json:"mode"`
	Limits map[string]int `json:"limits,omitempty"`
}

// GET /v1/kick-policy.
func (s *Server) getPolicy(w http.ResponseWriter, _ *http.Request) {
	mode, limits := s.cfg.Sessions.KickPolicy()
	writeJSON(w, http.StatusOK, policyJSON{Mode: mode, Limits: limits})
}

// PUT /v1/kick-policy: replace the policy on every node until it
// restarts (not persisted); sessions it no longer allows are kicked
// (reason POLICY).
func (s *Server) putPolicy(w http.ResponseWriter, r *http.Request) {
	var req policyJSON
	if !readJSON(w, r, &req) {
		return
	}
	if req.Mode == "" {
		writeErr(w, wire.CodeInvalidArgument, "mode is required: single, per_class or tag")
		return
	}
	werr, err := s.cfg.Sessions.SetKickPolicy(r.Context(), req.Mode, req.Limits)
	if err != nil {
		s.cfg.Logger.Warn("kick policy change failed", "err", err)
		writeErr(w, wire.CodeUnavailable, "a cluster node did not confirm the new policy (the others applied it); retry")
		return
	}
	if werr != nil {
		writeErr(w, wire.Code(werr.GetCode()), werr.GetMessage())
		return
	}
	mode, limits := s.cfg.Sessions.KickPolicy()
	writeJSON(w, http.StatusOK, policyJSON{Mode: mode, Limits: limits})
}
