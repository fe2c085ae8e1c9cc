#!/usr/bin/env bash
# artifacts.sh — benchmark of storing a site as a version (DESIGN.md "Performance targets"):
# files + archive + manifest vs `tar czf` of the same folder, in the same process (median of RUNS
# runs, ratio), and storing version 2 (12 of 104 files changed) with its new bytes as a share of
# the site. Not a test: it prints figures.
#
# Usage: bench/artifacts.sh        (env: RUNS=7, SEED=42, WORK=/tmp/opus-bench, SHARED=../shared)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared}"
RUNS="${RUNS:-7}"; SEED="${SEED:-42}"; WORK="${WORK:-/tmp/opus-bench}"
MAKE_SITE="$SHARED/bench/fixtures/make-site.sh"
[ -x "$MAKE_SITE" ] || { echo "error: $MAKE_SITE not found (set SHARED to the shared/ folder)" >&2; exit 1; }
mkdir -p "$WORK"
[ -d "$WORK/site-v1" ] || "$MAKE_SITE" -s "$SEED" -v 1 "$WORK/site-v1"
[ -d "$WORK/site-v2" ] || "$MAKE_SITE" -s "$SEED" -v 2 "$WORK/site-v2"
echo "== cpus=$(nproc) $(tar --version | head -1)"
cd "$ROOT"
cargo bench -q -p opus-core --bench store_site -- "$WORK/site-v1" "$WORK/site-v2" "$RUNS"
