package wire

import "net/http"

// Code is a stable error code from the one catalogue shared by the wire
// protocol, the HTTP API, logs and metrics (docs/errors.md). Never renumber.
type Code uint32

const (
	CodeBadFrame           Code = 1000
	CodeFrameTooLarge      Code = 1001
	CodeNotLoggedIn        Code = 1002
	CodeAlreadyLoggedIn    Code = 1003
	CodeBadToken           Code = 1004
	CodeTokenExpired       Code = 1005
	CodeInvalidArgument    Code = 1006
	CodeForbidden          Code = 1007
	CodeNotFound           Code = 1008
	CodeLoginConflict      Code = 1009
	CodeCursorTooOld       Code = 1010
	CodeRecallWindowPassed Code = 1011
	CodeNotGroupMember     Code = 1012
	CodeRateLimited        Code = 1013
	CodeUnavailable        Code = 1014
	CodeInternal           Code = 1015
	CodeUnauthorized       Code = 1016
)

type codeInfo struct {
	name      string
	temporary bool
	status    int
}

var catalogue = map[Code]codeInfo{
	CodeBadFrame:           {"BAD_FRAME", false, http.StatusBadRequest},
	CodeFrameTooLarge:      {"FRAME_TOO_LARGE", false, http.StatusRequestEntityTooLarge},
	CodeNotLoggedIn:        {"NOT_LOGGED_IN", false, http.StatusUnauthorized},
	CodeAlreadyLoggedIn:    {"ALREADY_LOGGED_IN", false, http.StatusConflict},
	CodeBadToken:           {"BAD_TOKEN", false, http.StatusUnauthorized},
	CodeTokenExpired:       {"TOKEN_EXPIRED", false, http.StatusUnauthorized},
	CodeInvalidArgument:    {"INVALID_ARGUMENT", false, http.StatusBadRequest},
	CodeForbidden:          {"FORBIDDEN", false, http.StatusForbidden},
	CodeNotFound:           {"NOT_FOUND", false, http.StatusNotFound},
	CodeLoginConflict:      {"LOGIN_CONFLICT", false, http.StatusConflict},
	CodeCursorTooOld:       {"CURSOR_TOO_OLD", false, http.StatusGone},
	CodeRecallWindowPassed: {"RECALL_WINDOW_PASSED", false, http.StatusForbidden},
	CodeNotGroupMember:     {"NOT_GROUP_MEMBER", false, http.StatusForbidden},
	CodeRateLimited:        {"RATE_LIMITED", true, http.StatusTooManyRequests},
	CodeUnavailable:        {"UNAVAILABLE", true, http.StatusServiceUnavailable},
	CodeInternal:           {"INTERNAL", true, http.StatusInternalServerError},
	CodeUnauthorized:       {"UNAUTHORIZED", false, http.StatusUnauthorized},
}

// Name is the code's stable NAME ("LOGIN_CONFLICT"); "UNKNOWN" if not in
// the catalogue.
func (c Code) Name() string {
	if i, ok := catalogue[c]; ok {
		return i.name
	}
	return "UNKNOWN"
}

// Temporary reports whether retrying the same request may succeed.
func (c Code) Temporary() bool { return catalogue[c].temporary }

// HTTPStatus is the status the HTTP API answers with for this code.
func (c Code) HTTPStatus() int {
	if i, ok := catalogue[c]; ok {
		return i.status
	}
	return http.StatusInternalServerError
}

// Codes lists the catalogue in numeric order (for docs and tests).
func Codes() []Code {
	out := make([]Code, 0, len(catalogue))
	for c := CodeBadFrame; c <= CodeUnauthorized; c++ {
		if _, ok := catalogue[c]; ok {
			out = append(out, c)
		}
	}
	return out
}

// Err builds an Error body for code with a human-readable message.
func Err(code Code, msg string) *Error {
	return &Error{Code: uint32(code), Name: code.Name(), Message: msg, Temporary: code.Temporary()}
}

// ErrFrame builds a reply frame carrying an Error for request id.
func ErrFrame(id uint64, code Code, msg string) *Frame {
	return &Frame{Id: id, Body: &Frame_Error{Error: Err(code, msg)}}
}

// WebSocket close codes (4000–4999) the server uses when it ends a session.
const (
	CloseNormal           = 1000 // after Logout
	CloseProtocolError    = 4000 // the peer broke the protocol beyond repair
	CloseFrameTooLarge    = 4001
	CloseAuthFailed       = 4002 // bad or expired token, or first frame not Login
	CloseLoginConflict    = 4010 // kicked: a newer login took the slot
	CloseKickedByAdmin    = 4011
	CloseKickedByPolicy   = 4012
	CloseSlowConsumer     = 4013
	CloseHeartbeatTimeout = 4014
	CloseShutdown         = 4015 // node draining: reconnect elsewhere
	CloseInternal         = 4016
	CloseSessionLost      = 4017 // the server lost this session's state: log in again (reconnect allowed)
)
