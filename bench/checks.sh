#!/usr/bin/env bash
# checks.sh — what checks before promotion cost: trigger -> finished of a one-step build deploying
# to production, without checks, with one `http` check, and with one shell check (curl $OPUS_URL),
# through the real opusd: medians. Not a test: it prints figures.
#
# Usage: bench/checks.sh [--debug] [OPUSD]
#   --debug  the debug build (no release build needed; figures are slower than release)
#   OPUSD    another opusd binary to measure with the same client
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
profile=()
if [ "${1:-}" = "--debug" ]; then
  profile=(--profile dev)
  shift
fi
if [ $# -gt 0 ]; then
  export OPUS_BENCH_OPUSD="$1"
fi
cargo bench -q "${profile[@]}" -p opus-server --bench checks
