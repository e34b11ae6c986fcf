// Package api is the HTTP server API (DESIGN.md §8.1) on its own port:
// admin routes protected by the admin key (Authorization: Bearer <key>),
// and the unauthenticated health, readiness and Prometheus metrics routes.
// Request and response bodies are JSON with snake_case fields; errors use
// the wire error catalogue (docs/errors.md):
//
//	{"error": {"code": 1006, "name": "INVALID_ARGUMENT", "message": "..."}}
//
// Handlers may be called concurrently; the Server holds no per-request
// state.
package api
