#!/usr/bin/env bash
# setup-s3.sh — makes a Python with moto's S3 server (`moto[server]` from PyPI) available to the
# S3 tests, and prints that Python's path on stdout. Idempotent: reuses target/s3-venv, or a
# system python3 that already has it. Tests find it through OPUS_MOTO_PYTHON or target/s3-venv.
#
# Usage: .ci/setup-s3.sh            (then: OPUS_MOTO_PYTHON=$(.ci/setup-s3.sh) cargo test)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/target/s3-venv"
has_moto() { "$1" -c "import moto.server, flask, flask_cors" >/dev/null 2>&1; }
if [ -x "$VENV/bin/python" ] && has_moto "$VENV/bin/python"; then echo "$VENV/bin/python"; exit 0; fi
if command -v python3 >/dev/null && has_moto python3; then command -v python3; exit 0; fi
command -v python3 >/dev/null || { echo "setup-s3: python3 is missing (apt-get install python3 python3-venv)" >&2; exit 1; }
mkdir -p "$ROOT/target"
python3 -m venv "$VENV" >&2 || { echo "setup-s3: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
"$VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6' >&2
has_moto "$VENV/bin/python" || { echo "setup-s3: moto[server] did not install" >&2; exit 1; }
echo "$VENV/bin/python"
