// Package testtls makes certificates for tests that run real TLS on
// loopback: a throwaway certificate authority and a server certificate it
// signs for 127.0.0.1, ::1 and localhost. Nothing is trusted by default:
// a client trusts the server only with Roots (or Client()).
//
// New may be called from any goroutine; the returned values are
// read-only.
package testtls
