#!/usr/bin/env bash
# pipelines.sh — the overhead of a pipeline (two stages, three jobs of trivial steps) against the
# same steps as one job, through the real release opusd: trigger -> finished medians.
# Not a test: it prints figures.
#
# Usage: bench/pipelines.sh [OPUSD]   OPUSD: another opusd binary to measure with the same client
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
if [ $# -gt 0 ]; then
  export OPUS_BENCH_OPUSD="$1"
fi
cargo bench -q -p opus-server --bench pipelines
