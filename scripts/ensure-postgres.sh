#!/usr/bin/env bash
# Make sure PostgreSQL's server binaries (initdb, pg_ctl, pg_dump) are on this machine.
# The test suite starts its own throwaway cluster with them; nothing here starts a server.
set -euo pipefail
find_bin() {
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/pg_dump" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}
if find_bin >/dev/null; then exit 0; fi
echo "PostgreSQL server binaries not found; installing Debian's postgresql package" >&2
export DEBIAN_FRONTEND=noninteractive
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends postgresql postgresql-contrib
find_bin >/dev/null
