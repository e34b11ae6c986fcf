#!/usr/bin/env bash
# Fails if regenerating the protobuf Go code changes anything.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/genproto.sh
if ! git diff --exit-code -- proto/ >/dev/null || [ -n "$(git status --porcelain -- proto/)" ]; then
  echo "generated code is stale: run scripts/genproto.sh and commit" >&2
  git status --short -- proto/ >&2
  exit 1
fi
echo "generated code up to date"
