#!/usr/bin/env bash
# scale.sh — opusd at scale (DESIGN.md "Performance targets"): idle RSS of an empty opusd, and
# `opus list` (the real release binary, end to end) with 10,000 projects and 1,000,000 builds in
# the metadata store, plus the ListProjects RPC alone, the loaded daemon's start-up and RSS, and the
# dashboard's projects page (GET /) on that store.
# Not a test: it prints figures. Seeding the store takes a few minutes.
#
# Usage: bench/scale.sh   (env: OPUS_BENCH_PROJECTS=10000 OPUS_BENCH_BUILDS=1000000)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
cargo build -q --release -p opus-cli
cargo bench -q -p opus-server --bench scale
