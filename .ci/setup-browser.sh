#!/usr/bin/env bash
# setup-browser.sh — installs Debian's chromium and chromium-driver, the real browser the dashboard's
# end-to-end tests drive over WebDriver (tests/tests/e2e/dashboard_browser.rs). Idempotent and quiet:
# does nothing when /usr/bin/chromedriver is there; needs root (apt-get) only when it is missing, and
# prints apt's output only when the install fails. The browser tests skip without it, and fail
# instead under OPUS_REQUIRE_BROWSER=1, which .ci/run sets.
set -euo pipefail
if [ ! -x /usr/bin/chromedriver ]; then
  echo "setup-browser: installing chromium chromium-driver" >&2
  log="$(mktemp)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
fi
