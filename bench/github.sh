#!/usr/bin/env bash
# github.sh — GitHub webhooks and statuses through the real opusd (issue #13 "Measure"):
#   1. webhook answer time with pull_request events at 200 deliveries/s for 10 s, each delivered
#      twice (none lost, none duplicated; median, p99, max);
#   2. the time from a build's end to its commit status reaching a fake GitHub API (median).
# Not a test: it prints figures (tests/examples/github_prs.rs).
#
# Usage: bench/github.sh           release build (PROFILE=debug: the debug build, no release
#                                  compile)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
if [ "${PROFILE:-release}" = debug ]; then
  cargo build -q -p opus-server -p opus-cli
  cargo run -q -p opus-tests --example github_prs
else
  cargo build -q --release -p opus-server -p opus-cli
  cargo run -q --release -p opus-tests --example github_prs
fi
