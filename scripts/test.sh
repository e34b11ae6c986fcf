#!/usr/bin/env bash
# The whole test suite: what CI runs (.ci/run) and what the README's second
# command runs. Installs its own dependencies (scripts/deps.sh).
#
#   scripts/test.sh          everything
#   scripts/test.sh -short   skip the slow process-level tests
set -euo pipefail
cd "$(dirname "$0")/.."
short=${1:-}
./scripts/deps.sh

echo "== format, vet, generated code"
bad=$(gofmt -l $(git ls-files '*.go'))
[ -z "$bad" ] || { echo "gofmt would change: $bad"; exit 1; }
go vet ./...
./scripts/check-generated.sh

echo "== unit and integration tests (race detector)"
# Packages that start protoactor cluster members keep those tests behind
# //go:build !race (protoactor itself has data races); they run below.
go test -race -count=1 -timeout 15m $short ./...
# The gateway's suite once more on the other read transport (the default
# on Linux is epoll).
TANDEM_TEST_TRANSPORT=goroutine go test -race -count=1 $short ./gateway/

echo "== cluster, node, end-to-end and bench-pipeline tests (protoactor members; no race detector)"
# One package at a time (-p 1): these start clusters of real members and
# processes; run side by side on 2 cores they starve each other's gossip
# and time-bound checks.
go test -p 1 -count=1 -timeout 20m $short ./cluster/... ./node/... ./internal/clustertest/... ./test/... ./cmd/tandem-bench/

echo "== fault injection (-tags faultinject): a failed commit or sync is never retried into an ack"
# persistence.FailCommitsAfter exists only in this build: the store's
# sticky failed state, and a node that ends with *StoreFailedError.
go test -count=1 -tags faultinject -run 'Fault' ./persistence/ ./node/
