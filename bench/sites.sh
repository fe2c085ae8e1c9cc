#!/usr/bin/env bash
# sites.sh — benchmark of opusd's site server against nginx (DESIGN.md "Performance targets"):
#   1. requests/s for /index.html (~1 KB) and a ~100 KB asset, wrk -t2 -c64 (keep-alive, no
#      Accept-Encoding), REPS runs of DURATION s each, medians, for nginx and for opusd on the same
#      fixture site (../shared/bench/fixtures/make-site.sh), same wrk line; prints the ratio.
#   2. the time from the Rollback RPC returning to the first response with the old version.
# nginx runs as ../shared/bench/peer-static.sh configures it (2 workers, sendfile, access_log off).
# Not a test: it prints figures. Installs nginx-light and wrk with apt-get when missing.
#
# Usage: bench/sites.sh      (env: DURATION=10 REPS=3 SEED=42 WORK=/tmp/opus-bench-sites
#                             NGINX_PORT=18080 API_PORT=17070 SITES_PORT=17080 SHARED=../shared)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared}"
DURATION="${DURATION:-10}"; REPS="${REPS:-3}"; SEED="${SEED:-42}"
WORK="${WORK:-/tmp/opus-bench-sites}"
NGINX_PORT="${NGINX_PORT:-18080}"; API_PORT="${API_PORT:-17070}"; SITES_PORT="${SITES_PORT:-17080}"
MAKE_SITE="$SHARED/bench/fixtures/make-site.sh"
[ -x "$MAKE_SITE" ] || { echo "error: $MAKE_SITE not found (set SHARED to the shared/ folder)" >&2; exit 1; }

need=(); command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

(cd "$ROOT" && cargo build -q --release -p opus-server -p opus-cli && cargo build -q --release -p opus-tests --example rollback_latency)
BIN="$ROOT/target/release"

mkdir -p "$WORK"
SITE="$WORK/site-v1"; SITE2="$WORK/site-v2"
[ -d "$SITE" ] || "$MAKE_SITE" -s "$SEED" -v 1 "$SITE" >/dev/null
[ -d "$SITE2" ] || "$MAKE_SITE" -s "$SEED" -v 2 "$SITE2" >/dev/null
ASSET="$(cd "$SITE" && ls static/js/vendors.*.js | grep -v '\.map$' | head -1)"

for p in "$NGINX_PORT" "$API_PORT" "$SITES_PORT"; do
  if (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null; then echo "error: 127.0.0.1:$p is already in use" >&2; exit 1; fi
done

# nginx, configured as peer-static.sh does.
PREFIX="$WORK/nginx"; rm -rf "$PREFIX"; mkdir -p "$PREFIX/logs" "$PREFIX/tmp"
cat > "$PREFIX/nginx.conf" <<CONF
daemon off;
master_process on;
worker_processes auto;
user root;
pid $PREFIX/nginx.pid;
error_log $PREFIX/logs/error.log warn;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  access_log off;
  client_body_temp_path $PREFIX/tmp/body;
  proxy_temp_path $PREFIX/tmp/proxy;
  fastcgi_temp_path $PREFIX/tmp/fastcgi;
  uwsgi_temp_path $PREFIX/tmp/uwsgi;
  scgi_temp_path $PREFIX/tmp/scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $SITE;
    location / { try_files \$uri \$uri/ /index.html; }
  }
}
CONF

# opusd with a fresh data dir, the site published as two versions, v1 deployed.
DATA="$WORK/opusd-data"; rm -rf "$DATA"
OPUSD_LOG="$WORK/opusd.log"
OPUS_LOG=warn "$BIN/opusd" --data-dir "$DATA" --listen "127.0.0.1:$API_PORT" --sites-listen "127.0.0.1:$SITES_PORT" 2>"$OPUSD_LOG" &
OPUSD_PID=$!
NGINX_PID=""
stop() {
  local pid="$1" sig="$2"; [ -n "$pid" ] || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() { stop "$OPUSD_PID" TERM; stop "$NGINX_PID" QUIT; }
trap cleanup EXIT
"$NGINX" -p "$PREFIX" -c "$PREFIX/nginx.conf" &
NGINX_PID=$!
export OPUS_SERVER="http://127.0.0.1:$API_PORT"
for _ in $(seq 100); do "$BIN/opus" status >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq 50); do curl -fsS -o /dev/null "http://127.0.0.1:$NGINX_PORT/index.html" 2>/dev/null && break; sleep 0.1; done
mkdir -p "$WORK/src"
"$BIN/opus" add web "$WORK/src" >/dev/null
"$BIN/opus" publish web v1 "$SITE" >/dev/null
"$BIN/opus" publish web v2 "$SITE2" >/dev/null
"$BIN/opus" deploy web v1

echo "== versions: $("$NGINX" -v 2>&1 | sed 's/.*: //'); $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'); cpus=$(nproc)"
for u in /index.html "/$ASSET"; do
  curl -fsS -o /dev/null -w "  nginx $u: HTTP %{http_code}, %{size_download} bytes, %{content_type}\n" "http://127.0.0.1:$NGINX_PORT$u"
  curl -fsS -o /dev/null -H "Host: web.localhost" -w "  opusd $u: HTTP %{http_code}, %{size_download} bytes, %{content_type}\n" "http://127.0.0.1:$SITES_PORT$u"
done

# bench_url NAME URL [HOST]: REPS wrk runs; prints the runs and the median (as peer-static.sh).
bench_url() {
  local name="$1" url="$2" host="${3:-}" i raw="$WORK/wrk-$1.txt"
  : > "$raw"
  for i in $(seq "$REPS"); do
    if [ -n "$host" ]; then
      timeout $((DURATION + 30)) wrk -t2 -c64 -d"${DURATION}s" --latency -H "Host: $host" "$url" >> "$raw"
    else
      timeout $((DURATION + 30)) wrk -t2 -c64 -d"${DURATION}s" --latency "$url" >> "$raw"
    fi
    echo "----" >> "$raw"
  done
  python3 - "$name" "$raw" <<'PY'
import re, statistics, sys
name, text = sys.argv[1], open(sys.argv[2]).read()
def ms(v):
    n, u = float(re.match(r"[\d.]+", v).group()), re.sub(r"[\d.]", "", v)
    return n * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[u]
runs = []
for block in text.split("----")[:-1]:
    m = re.search(r"Requests/sec:\s+([\d.]+)", block)
    if not m: continue
    r = {"rps": float(m.group(1))}
    for p in ("50", "99"):
        r["p" + p] = ms(re.search(r"\s%s%%\s+(\S+)" % p, block).group(1))
    r["err"] = "non-2xx" in block or "Socket errors" in block
    runs.append(r)
for i, r in enumerate(runs, 1):
    print("  %-16s run %d: %9.0f req/s  p50 %.2f ms  p99 %.2f ms%s" % (
        name, i, r["rps"], r["p50"], r["p99"], "  (ERRORS)" if r["err"] else ""))
med = statistics.median(x["rps"] for x in runs)
print("  %-16s MEDIAN of %d: %9.0f req/s" % (name, len(runs), med))
open(sys.argv[2] + ".median", "w").write("%f\n" % med)
PY
}

echo "== wrk -t2 -c64 -d${DURATION}s --latency, $REPS runs each"
bench_url nginx-index "http://127.0.0.1:$NGINX_PORT/index.html"
bench_url opusd-index "http://127.0.0.1:$SITES_PORT/index.html" web.localhost
bench_url nginx-asset100k "http://127.0.0.1:$NGINX_PORT/$ASSET"
bench_url opusd-asset100k "http://127.0.0.1:$SITES_PORT/$ASSET" web.localhost
ratio() { python3 -c "import sys; a=float(open(sys.argv[1]).read()); b=float(open(sys.argv[2]).read()); print('%.2f' % (a/b))" "$WORK/wrk-$1.txt.median" "$WORK/wrk-$2.txt.median"; }
echo "== opusd / nginx requests/s (target: >= 1.00)"
echo "  index.html:     $(ratio opusd-index nginx-index)"
echo "  100 KB asset:   $(ratio opusd-asset100k nginx-asset100k)"

echo "== rollback (target: under 10 ms from the RPC returning to the old version being served)"
"$BIN/examples/rollback_latency" "http://127.0.0.1:$API_PORT" "http://127.0.0.1:$SITES_PORT" web.localhost web v1 v2 "${ROLLBACK_RUNS:-50}"
