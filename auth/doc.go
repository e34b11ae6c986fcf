// Package auth mints and verifies login tokens: JWTs signed with HS256 and
// a shared secret, the user ID as subject, an expiry always present. An
// app backend holding the secret can mint them itself; the server API
// (api.Server, POST /v1/tokens) mints them for it. The gateway's frontend
// verifies the token of every Login.
//
// A Keys value is immutable after New and safe for concurrent use.
package auth
