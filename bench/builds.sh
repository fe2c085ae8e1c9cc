#!/usr/bin/env bash
# builds.sh — a trivial build (one step writes dist/index.html, local source) through the real
# release opusd (DESIGN.md "Performance targets"): trigger -> finished median and p90 over 50
# builds one at a time, then 200 builds at --max-builds 4 in builds/s.
# Not a test: it prints figures.
#
# Usage: bench/builds.sh [OPUSD]   OPUSD: another opusd binary to measure with the same client
#        (env: OPUS_BENCH_LOG=info passes opusd's log through, for timestamps)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
if [ $# -gt 0 ]; then
  export OPUS_BENCH_OPUSD="$1"
fi
cargo bench -q -p opus-server --bench builds
