#!/usr/bin/env bash
# setup-acme.sh — installs Debian's pebble (a real ACME CA for tests) and pebble-challtestsrv (its
# DNS and challenge test server), which the HTTPS end-to-end tests drive
# (tests/tests/e2e/acme.rs). Idempotent and quiet: does nothing when /usr/bin/pebble is there;
# needs root (apt-get) only when it is missing, and prints apt's output only when the install
# fails. The ACME tests skip without it, and fail instead under OPUS_REQUIRE_ACME=1, which
# .ci/run sets.
set -euo pipefail
if [ ! -x /usr/bin/pebble ]; then
  echo "setup-acme: installing pebble" >&2
  log="$(mktemp)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pebble; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
fi
