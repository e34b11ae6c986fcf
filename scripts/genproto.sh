#!/usr/bin/env bash
# Regenerates the Go code for proto/wire and proto/actorpb.
# Needs protoc (Debian's protobuf-compiler; scripts/deps.sh installs it).
# protoc-gen-go is pinned in tools/go.mod.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "protoc missing: run scripts/deps.sh" >&2; exit 1; }
bin=$(mktemp -d); trap 'rm -rf "$bin"' EXIT
go build -modfile=tools/go.mod -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
PATH="$bin:$PATH" protoc -I proto \
  --go_out=. --go_opt=module=github.com/tandem-im/tandem \
  proto/wire/wire.proto proto/actorpb/actor.proto
