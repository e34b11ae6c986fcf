#!/usr/bin/env bash
# Installs what the test suite needs beyond Go, from Debian's packages:
# protoc (the generated-code check), the PostgreSQL server that
# internal/pgtest starts for the PostgreSQL store's tests, and Node.js for
# the JavaScript example client's test (examples/js; it needs Node >= 20.10
# for the built-in WebSocket), and npm plus Chromium for the WebSocket
# interop tests (test/interop: the npm `ws` client and a headless browser).
# Idempotent; run as root (CI is root).
set -euo pipefail
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if command -v node >/dev/null; then
  v=$(node --version | sed 's/^v//')
  major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
  if [ "$major" -lt 20 ] || { [ "$major" -eq 20 ] && [ "$minor" -lt 10 ]; }; then
    echo "warning: node $v is older than 20.10; examples/js needs its built-in WebSocket (install a newer nodejs)" >&2
  fi
fi
