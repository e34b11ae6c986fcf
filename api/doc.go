// Package api is the HTTP server API (DESIGN.md §8.1) on its own port:
// admin routes protected by the admin key (Authorization: Bearer <key>),
// and the unauthenticated health, readiness and Prometheus metrics routes.
// Request and response bodies are JSON with snake_case fields; errors use
// the wire error catalogue (docs/errors.md):
//
//	{"error": {"code": 1006, "name": "INVALID_ARGUMENT", "message": "..."}}
//
// Request bodies are read strictly (readJSON, then each handler): one
// JSON object of the route's own request struct; unknown fields, values
// of the wrong JSON type, and missing or empty required fields and lists
// are INVALID_ARGUMENT with a message naming the field, and a refused
// request, here or by an actor, stores nothing. Lists of users are
// user_ids, except the first members of a new group (members); each
// route refuses the other name. docs/api.yaml is the reference;
// FuzzAPIRequestBody holds every body route to it (docs/fuzzing.md).
//
// Handlers may be called concurrently; the Server holds no per-request
// state.
package api
