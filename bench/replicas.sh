#!/usr/bin/env bash
# replicas.sh — benchmark of site replicas (DESIGN.md "Performance targets": a rollback reaches
# every site replica within 1 s): opusd on an S3 store (moto's server from PyPI, as the tests use;
# STORE=file uses a file:// folder instead), REPLICAS `opusd sites` processes woken by opusd's
# event stream (--api, as `opus install --site-replicas` runs them) and one that only polls the
# store every second. RUNS times: deploy v2 and wait until every replica serves it, then
# `opus rollback` and time from the command's exit (the RPC has returned) until each replica
# serves v1 again. Prints the median and max for "every watched replica" and for the polling one.
# Not a test: it prints figures.
#
# Usage: bench/replicas.sh   (env: RUNS=30 REPLICAS=2 STORE=s3|file WORK=/tmp/opus-bench-replicas
#                             API_PORT=17072 SITES_PORT=17082 MOTO_PORT=17500)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS="${RUNS:-30}"; REPLICAS="${REPLICAS:-2}"; STORE_KIND="${STORE:-s3}"
WORK="${WORK:-/tmp/opus-bench-replicas}"
API_PORT="${API_PORT:-17072}"; SITES_PORT="${SITES_PORT:-17082}"; MOTO_PORT="${MOTO_PORT:-17500}"
BIN="${BIN:-$ROOT/target/release}"
[ -x "$BIN/opusd" ] && [ -x "$BIN/opus" ] || (cd "$ROOT" && cargo build -q --release -p opus-server -p opus-cli)

rm -rf "$WORK"; mkdir -p "$WORK/v1" "$WORK/v2" "$WORK/src"
for v in 1 2; do
  echo "<h1>version $v</h1>" > "$WORK/v$v/index.html"
  head -c 100000 /dev/urandom | base64 > "$WORK/v$v/app.js"
done
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

if [ "$STORE_KIND" = s3 ]; then
  PY="$(cd "$ROOT" && .ci/setup-s3.sh)"
  "$PY" -m moto.server -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$MOTO_PORT/" 2>/dev/null && break; sleep 0.1; done
  curl -fsS -X PUT -o /dev/null "http://127.0.0.1:$MOTO_PORT/bench"
  STORE_URL="s3://bench/opus?endpoint=http://127.0.0.1:$MOTO_PORT&allow_http=true&region=us-east-1&access_key_id=test&secret_access_key=test"
else
  STORE_URL="file://$WORK/store"
fi

OPUS_LOG=warn "$BIN/opusd" --data-dir "$WORK/data" --listen "127.0.0.1:$API_PORT" --sites-listen "127.0.0.1:$SITES_PORT" \
  --store "$STORE_URL" 2>"$WORK/opusd.log" &
PIDS+=($!)
export OPUS_SERVER="http://127.0.0.1:$API_PORT"
for _ in $(seq 100); do "$BIN/opus" status >/dev/null 2>&1 && break; sleep 0.1; done
ADDRS=()
start_replica() {
  local name="$1"; shift
  OPUS_LOG=warn "$BIN/opusd" sites --store "$STORE_URL" --sites-listen 127.0.0.1:0 --cache-dir "$WORK/$name-cache" \
    --address-file "$WORK/$name.addr" "$@" 2>"$WORK/$name.log" &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$WORK/$name.addr" ] && break; sleep 0.05; done
  ADDRS+=("$(cat "$WORK/$name.addr")")
}
for i in $(seq "$REPLICAS"); do start_replica "watched-$i" --api "$OPUS_SERVER"; done
start_replica polling

"$BIN/opus" add web "$WORK/src" >/dev/null
"$BIN/opus" publish web v1 "$WORK/v1" >/dev/null
"$BIN/opus" publish web v2 "$WORK/v2" >/dev/null
"$BIN/opus" deploy web v1 >/dev/null

echo "== $RUNS rollbacks, store $STORE_KIND, $REPLICAS replicas woken by opusd's events + 1 polling every 1 s; cpus=$(nproc)"
python3 - "$BIN/opus" "$RUNS" "${ADDRS[@]}" <<'PY'
import socket, statistics, subprocess, sys, time
opus, runs, addrs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
watched, polling = addrs[:-1], addrs[-1]

def version(addr):
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"HEAD / HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk: break
                data += chunk
    except OSError:
        return None
    for line in data.decode("latin-1").split("\r\n"):
        if line.lower().startswith("x-opus-version:"):
            return line.split(":", 1)[1].strip()
    return None

def wait_all(want, deadline_s=30):
    """Seconds until each replica serves `want`, measured from now."""
    start = time.monotonic()
    pending, took = set(addrs), {}
    while pending:
        for a in list(pending):
            if version(a) == want:
                took[a] = time.monotonic() - start
                pending.discard(a)
        if time.monotonic() - start > deadline_s:
            sys.exit("replicas %s did not serve %s within %d s" % (sorted(pending), want, deadline_s))
    return took

def run(*args):
    subprocess.run([opus, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

wait_all("v1")
every, poll = [], []
for _ in range(runs):
    run("deploy", "web", "v2")
    wait_all("v2")
    run("rollback", "web")
    took = wait_all("v1")
    every.append(max(took[a] for a in watched))
    poll.append(took[polling])
ms = lambda v: "median %.1f ms, max %.1f ms" % (statistics.median(v) * 1e3, max(v) * 1e3)
print("  rollback RPC returned -> every watched replica serves the old version: " + ms(every))
print("  rollback RPC returned -> the polling replica (1 s) serves it:         " + ms(poll))
PY
