#!/usr/bin/env bash
# setup-tools.sh — installs the Debian packages the end-to-end tests drive besides the project's
# own binaries: tmux (the terminal tests: no-echo prompts, the running-step status line). Idempotent;
# needs root (apt-get) only when something is missing. The tests skip with a SKIPPED line without
# tmux, and fail instead under OPUS_REQUIRE_TMUX=1, which .ci/run sets. Last, .ci/setup-browser.sh
# installs chromium and chromium-driver for the dashboard's browser tests, and .ci/setup-acme.sh pebble (a
# real ACME CA) for the HTTPS tests.
set -euo pipefail
need=()
command -v tmux >/dev/null || need+=(tmux)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup-tools: installing ${need[*]}" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
bash "$(dirname "$0")/setup-browser.sh"
bash "$(dirname "$0")/setup-acme.sh"
