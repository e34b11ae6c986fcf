package api

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tandem-im/tandem/proto/wire"
)

// TokenMinter mints login tokens (auth.Keys satisfies it).
type TokenMinter interface {
	Mint(user string, ttl time.Duration) (string, time.Time, error)
}

// Sessions is what the API needs from the user actors (actors.Runtime
// satisfies it). Every answer is cluster-wide, whichever node is asked; an
// error means it could not be complete (a node did not answer) and is
// reported as UNAVAILABLE, never as "offline".
type Sessions interface {
	// OnlineStatus returns the live sessions of each of users that is
	// online (offline users are absent), oldest login first.
	OnlineStatus(ctx context.Context, users []string) (map[string][]*wire.DeviceInfo, error)
	// Kick ends the user's sessions of device (all if "") with kick reason
	// ADMIN and returns the sessions it ended.
	Kick(ctx context.Context, user, device string) ([]*wire.DeviceInfo, error)
	// KickPolicy returns the kick policy; SetKickPolicy replaces it on
	// every node (an invalid one is refused with a wire error for the
	// client).
	KickPolicy() (mode string, limits map[string]int)
	SetKickPolicy(ctx context.Context, mode string, limits map[string]int) (*wire.Error, error)
}

// Config configures the server API. Zero value fields mean defaults.
type Config struct {
	Addr       string // default ":7401"
	AdminKey   string // required
	Minter     TokenMinter
	Sessions   Sessions
	Messages   Messages
	Groups     Groups
	Gatherer   prometheus.Gatherer // for /metrics; default: a new empty registry
	Ready      func() error        // nil error = ready; default: always ready
	ValidID    func(string) bool   // checks user IDs
	Logger     *slog.Logger
	DefaultTTL time.Duration // token TTL when the body gives none; default 24 h
}

// Server is the HTTP server API.
type Server struct {
	cfg Config
	mux *http.ServeMux
}

// New returns a server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.AdminKey == "" {
		return nil, errors.New("api: admin key required")
	}
	if cfg.Minter == nil || cfg.ValidID == nil || cfg.Sessions == nil || cfg.Messages == nil || cfg.Groups == nil {
		return nil, errors.New("api: token minter, sessions, messages and ID validator required")
	}
	if cfg.Addr == "" {
		cfg.Addr = ":7401"
	}
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.NewRegistry()
	}
	if cfg.Ready == nil {
		cfg.Ready = func() error { return nil }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = 24 * time.Hour
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	s.mux.Handle("POST /v1/tokens", s.admin(s.mintToken))
	s.mux.Handle("GET /v1/users/{user}/devices", s.admin(s.listDevices))
	s.mux.Handle("DELETE /v1/users/{user}/devices", s.admin(s.kick))
	s.mux.Handle("DELETE /v1/users/{user}/devices/{device}", s.admin(s.kick))
	s.mux.Handle("POST /v1/online-status", s.admin(s.onlineStatus))
	s.mux.Handle("POST /v1/messages", s.admin(s.sendMessage(false)))
	s.mux.Handle("POST /v1/transient", s.admin(s.sendMessage(true)))
	s.mux.Handle("POST /v1/recall", s.admin(s.recall))
	s.mux.Handle("GET /v1/users/{user}/history", s.admin(s.history))
	s.mux.Handle("POST /v1/groups", s.admin(s.createGroup))
	s.mux.Handle("POST /v1/groups/{group}/members", s.admin(s.addMembers))
	s.mux.Handle("DELETE /v1/groups/{group}/members/{user}", s.admin(s.removeMember))
	s.mux.Handle("DELETE /v1/groups/{group}", s.admin(s.dismissGroup))
	s.mux.Handle("GET /v1/kick-policy", s.admin(s.getPolicy))
	s.mux.Handle("PUT /v1/kick-policy", s.admin(s.putPolicy))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, wire.CodeNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
	return s, nil
}

// Handler returns the HTTP handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.mux }

// Serve serves on ln until ctx is done, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("api: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-errc
	return err
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := s.cfg.Ready(); err != nil {
		writeErr(w, wire.CodeUnavailable, "not ready: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// admin requires the admin key.
func (s *Server) admin(h http.HandlerFunc) http.Handler {
	want := []byte("Bearer " + s.cfg.AdminKey)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			writeErr(w, wire.CodeUnauthorized, "missing or wrong admin key (Authorization: Bearer <admin key>)")
			return
		}
		h(w, r)
	})
}

// maxTTLSeconds is the largest ttl_seconds a Duration holds.
const maxTTLSeconds = int64(math.MaxInt64 / time.Second)

type tokenRequest struct {
	UserID     string `json:"user_id"`
	TTLSeconds int64  `json:"ttl_seconds"`
}

type tokenResponse struct {
	Token       string `json:"token"`
	UserID      string `json:"user_id"`
	ExpiresAtMS int64  `json:"expires_at_ms"`
}

func (s *Server) mintToken(w http.ResponseWriter, r *http.Request) {
	var req tokenRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !s.cfg.ValidID(req.UserID) {
		writeErr(w, wire.CodeInvalidArgument, "user_id must be 1-64 bytes of [A-Za-z0-9_.@:-]")
		return
	}
	ttl := s.cfg.DefaultTTL
	if req.TTLSeconds < 0 {
		writeErr(w, wire.CodeInvalidArgument, "ttl_seconds must not be negative")
		return
	}
	if req.TTLSeconds > maxTTLSeconds {
		// Beyond any minter's limit, and it would overflow a Duration.
		writeErr(w, wire.CodeInvalidArgument, fmt.Sprintf("ttl_seconds %d is too large", req.TTLSeconds))
		return
	}
	if req.TTLSeconds > 0 {
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	tok, exp, err := s.cfg.Minter.Mint(req.UserID, ttl)
	if err != nil {
		writeErr(w, wire.CodeInvalidArgument, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, tokenResponse{Token: tok, UserID: req.UserID, ExpiresAtMS: exp.UnixMilli()})
}

const maxBody = 1 << 20

// readJSON decodes one JSON object into v (a pointer to a request struct),
// refusing unknown fields and trailing data; on failure it writes the
// error (INVALID_ARGUMENT, or FRAME_TOO_LARGE over maxBody) and returns
// false. Messages name the field at fault and never Go types.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeErr(w, wire.CodeFrameTooLarge, fmt.Sprintf("body larger than %d bytes", maxBody))
			return false
		}
		writeErr(w, wire.CodeInvalidArgument, jsonProblem(err, v))
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeErr(w, wire.CodeFrameTooLarge, fmt.Sprintf("body larger than %d bytes", maxBody))
			return false
		}
		writeErr(w, wire.CodeInvalidArgument, "body has data after the JSON object")
		return false
	}
	return true
}

// jsonProblem says what is wrong with a body encoding/json refused for
// v, in the API's terms.
func jsonProblem(err error, v any) string {
	var (
		syntax  *json.SyntaxError
		typeErr *json.UnmarshalTypeError
		b64     base64.CorruptInputError
	)
	switch {
	case errors.Is(err, io.EOF):
		return "body is empty: send one JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "body ends inside the JSON object"
	case errors.As(err, &syntax):
		return fmt.Sprintf("body is not valid JSON (at byte %d): %s", syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: "))
	case errors.As(err, &b64):
		return fmt.Sprintf("a byte field (%s) is not valid base64: %v", strings.Join(byteFields(reflect.TypeOf(v)), ", "), err)
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return fmt.Sprintf("body must be a JSON object, not %s", typeErr.Value)
		}
		return fmt.Sprintf("field %q must be %s, not %s", typeErr.Field, jsonKind(typeErr.Type), typeErr.Value)
	}
	// encoding/json has no error type for these; its texts are stable.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Sprintf("unknown field %s (this endpoint takes %s)", name, strings.Join(jsonFields(reflect.TypeOf(v)), ", "))
	}
	return "body is not the expected JSON: " + strings.TrimPrefix(err.Error(), "json: ")
}

// byteFields lists the JSON names of the base64 ([]byte) fields of the
// struct t (or *t) points to.
func byteFields(t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Uint8 && name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

// jsonKind names the JSON a Go type decodes from.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "something else"
}

// jsonFields lists the JSON names of the struct t (or *t) points to,
// nested objects as name.{a,b}.
func jsonFields(t reflect.Type) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			name += ".{" + strings.Join(jsonFields(f.Type), ",") + "}"
		}
		out = append(out, name)
	}
	return out
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      uint32 `json:"code"`
	Name      string `json:"name"`
	Message   string `json:"message"`
	Temporary bool   `json:"temporary,omitempty"`
	// RetryAfterMS is the wait the server asks for before a retry (also
	// in the Retry-After header, in whole seconds rounded up).
	RetryAfterMS uint32 `json:"retry_after_ms,omitempty"`
}

// writeWireErr writes an actor's error reply: its code, message and retry
// hint (a storage refusal carries one: 503 with Retry-After).
func writeWireErr(w http.ResponseWriter, e *wire.Error) {
	code := wire.Code(e.GetCode())
	if ms := e.GetRetryAfterMs(); ms > 0 {
		w.Header().Set("Retry-After", strconv.FormatUint(uint64((ms+999)/1000), 10))
	}
	writeJSON(w, code.HTTPStatus(), errorBody{errorDetail{Code: uint32(code), Name: code.Name(), Message: e.GetMessage(),
		Temporary: code.Temporary(), RetryAfterMS: e.GetRetryAfterMs()}})
}

func writeErr(w http.ResponseWriter, code wire.Code, msg string) {
	writeJSON(w, code.HTTPStatus(), errorBody{errorDetail{Code: uint32(code), Name: code.Name(), Message: msg, Temporary: code.Temporary()}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing to do
}
