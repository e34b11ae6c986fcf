#!/usr/bin/env bash
# Installs what the test suite needs beyond Go, from Debian's packages:
# protoc (the generated-code check) and the PostgreSQL server that
# internal/pgtest starts for the PostgreSQL store's tests. Idempotent; run
# as root (CI is root).
set -euo pipefail
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
