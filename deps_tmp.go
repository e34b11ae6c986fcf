//go:build deps

// Package tandem pins dependencies until the packages that use them land.
package tandem

import (
	_ "github.com/asynkron/protoactor-go/cluster"
	_ "github.com/asynkron/protoactor-go/remote"
	_ "github.com/dgraph-io/badger/v4"
	_ "github.com/gobwas/ws"
	_ "github.com/gobwas/ws/wsutil"
	_ "github.com/golang-jwt/jwt/v5"
	_ "github.com/hashicorp/memberlist"
	_ "github.com/oklog/ulid/v2"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "golang.org/x/sys/unix"
	_ "google.golang.org/grpc"
)
