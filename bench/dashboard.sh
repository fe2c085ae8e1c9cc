#!/usr/bin/env bash
# dashboard.sh — the time from a log line a build step writes to its appearance in the dashboard
# of a real headless chromium (DESIGN.md "Performance targets": under 100 ms), median of 40 lines.
# Needs chromium and chromium-driver (bash .ci/setup-browser.sh). The projects page with 10,000
# projects is measured by bench/scale.sh. Not a test: it prints figures.
#
# Usage: bench/dashboard.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
bash .ci/setup-browser.sh
cargo build -q --release -p opus-server -p opus-cli
cargo bench -q -p opus-tests --bench dashboard
