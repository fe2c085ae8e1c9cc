#!/usr/bin/env bash
# https.sh — benchmark of opusd's sites over HTTPS against nginx, and of redirect rules
# (DESIGN.md "Performance targets"):
#   1. requests/s for /index.html (~1 KB) and a ~100 KB asset over HTTPS: opusd's TLS site listener
#      (--sites-tls-listen, the certificate served by SNI for a custom domain) against nginx with
#      the same self-signed ECDSA P-256 certificate (openssl), same wrk line
#      (wrk -t2 -c64, keep-alive), REPS runs of DURATION s each, medians, ratio opusd / nginx.
#   2. the cost of 50 redirect rules (`_redirects`, none matching /index.html, so all are tried)
#      on requests/s over plain HTTP: the same site with and without the rules, ratio.
# The custom domain bench.example.com resolves to 127.0.0.1 for wrk only: wrk runs in its own
# mount namespace (unshare -m) with a hosts file bound over /etc/hosts, since it sends the URL's
# host as SNI. Not a test: it prints figures. Installs nginx-light and wrk with apt-get when missing.
#
# Usage: bench/https.sh      (env: DURATION=10 REPS=3 SEED=42 WORK=/tmp/opus-bench-https
#                             NGINX_PORT=18443 API_PORT=17071 SITES_PORT=17081 TLS_PORT=17443 SHARED=../shared)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared}"
DURATION="${DURATION:-10}"; REPS="${REPS:-3}"; SEED="${SEED:-42}"
WORK="${WORK:-/tmp/opus-bench-https}"
NGINX_PORT="${NGINX_PORT:-18443}"; API_PORT="${API_PORT:-17071}"; SITES_PORT="${SITES_PORT:-17081}"; TLS_PORT="${TLS_PORT:-17443}"
HOST=bench.example.com
MAKE_SITE="$SHARED/bench/fixtures/make-site.sh"
[ -x "$MAKE_SITE" ] || { echo "error: $MAKE_SITE not found (set SHARED to the shared/ folder)" >&2; exit 1; }

need=(); command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

BIN="${BIN:-$ROOT/target/release}"
[ -x "$BIN/opusd" ] && [ -x "$BIN/opus" ] || (cd "$ROOT" && cargo build -q --release -p opus-server -p opus-cli)

for p in "$NGINX_PORT" "$API_PORT" "$SITES_PORT" "$TLS_PORT"; do
  if (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null; then echo "error: 127.0.0.1:$p is already in use" >&2; exit 1; fi
done

mkdir -p "$WORK"
SITE="$WORK/site-v1"; RULES="$WORK/site-rules"
[ -d "$SITE" ] || "$MAKE_SITE" -s "$SEED" -v 1 "$SITE" >/dev/null
ASSET="$(cd "$SITE" && ls static/js/vendors.*.js | grep -v '\.map$' | head -1)"
# The same files plus 50 redirect rules, none of which matches /index.html or the asset.
rm -rf "$RULES"; cp -r "$SITE" "$RULES"
for i in $(seq 1 50); do echo "/old/page-$i/*  /new/page-$i/:splat  301"; done > "$RULES/_redirects"

# One self-signed certificate for both servers.
CERT="$WORK/cert.pem"; KEY="$WORK/key.pem"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$KEY" -out "$CERT" \
  -days 30 -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" 2>/dev/null
HOSTS="$WORK/hosts"; printf '127.0.0.1 localhost\n127.0.0.1 %s\n' "$HOST" > "$HOSTS"
unshare -m sh -c "mount --bind '$HOSTS' /etc/hosts && getent hosts $HOST" >/dev/null \
  || { echo "error: cannot give wrk its own /etc/hosts (unshare -m needs CAP_SYS_ADMIN)" >&2; exit 1; }

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
    listen 127.0.0.1:$NGINX_PORT ssl;
    server_name $HOST;
    ssl_certificate $CERT;
    ssl_certificate_key $KEY;
    ssl_protocols TLSv1.2 TLSv1.3;
    root $SITE;
    location / { try_files \$uri \$uri/ /index.html; }
  }
}
CONF

DATA="$WORK/opusd-data"; rm -rf "$DATA"
OPUSD_LOG="$WORK/opusd.log"; : > "$OPUSD_LOG"
OPUSD_PID=""; NGINX_PID=""
stop() {
  local pid="$1" sig="$2"; [ -n "$pid" ] || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() { stop "$OPUSD_PID" TERM; stop "$NGINX_PID" QUIT; }
trap cleanup EXIT
# An ACME CA that is never reached: the certificate is the stored one.
start_opusd() {
  OPUS_LOG=warn "$BIN/opusd" --data-dir "$DATA" --listen "127.0.0.1:$API_PORT" --sites-listen "127.0.0.1:$SITES_PORT" \
    --sites-tls-listen "127.0.0.1:$TLS_PORT" --acme-directory "https://127.0.0.1:9/directory" \
    --sites-https-redirect false 2>>"$OPUSD_LOG" &
  OPUSD_PID=$!
  for _ in $(seq 100); do "$BIN/opus" status >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "error: opusd did not start; see $OPUSD_LOG" >&2; exit 1
}
export OPUS_SERVER="http://127.0.0.1:$API_PORT"
start_opusd
mkdir -p "$WORK/src"
"$BIN/opus" add web "$WORK/src" >/dev/null
"$BIN/opus" add rules "$WORK/src" >/dev/null
"$BIN/opus" publish web v1 "$SITE" >/dev/null
"$BIN/opus" publish rules v1 "$RULES" >/dev/null
"$BIN/opus" deploy web v1 >/dev/null
"$BIN/opus" deploy rules v1 >/dev/null
"$BIN/opus" domain add web "$HOST" >/dev/null
# The certificate goes where opusd keeps the ones it ordered (key and chain in one file); a
# restart loads it for the domain.
stop "$OPUSD_PID" TERM
mkdir -p "$DATA/acme/certs"; cat "$KEY" "$CERT" > "$DATA/acme/certs/$HOST.pem"; chmod 600 "$DATA/acme/certs/$HOST.pem"
start_opusd
"$NGINX" -p "$PREFIX" -c "$PREFIX/nginx.conf" &
NGINX_PID=$!
for _ in $(seq 50); do curl -fsSk -o /dev/null "https://127.0.0.1:$NGINX_PORT/index.html" 2>/dev/null && break; sleep 0.1; done

echo "== versions: $("$NGINX" -v 2>&1 | sed 's/.*: //'); $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'); $(openssl version | awk '{print $1, $2}'); cpus=$(nproc)"
for u in /index.html "/$ASSET"; do
  curl -fsS --cacert "$CERT" --resolve "$HOST:$NGINX_PORT:127.0.0.1" -o /dev/null \
    -w "  nginx $u: HTTP %{http_code}, %{size_download} bytes, TLS ok\n" "https://$HOST:$NGINX_PORT$u"
  curl -fsS --cacert "$CERT" --resolve "$HOST:$TLS_PORT:127.0.0.1" -o /dev/null \
    -w "  opusd $u: HTTP %{http_code}, %{size_download} bytes, TLS ok\n" "https://$HOST:$TLS_PORT$u"
done
curl -fsS -o /dev/null -H "Host: rules.localhost" -w "  opusd with 50 rules /index.html: HTTP %{http_code}\n" "http://127.0.0.1:$SITES_PORT/index.html"
curl -sS -o /dev/null -H "Host: rules.localhost" -w "  opusd with 50 rules /old/page-50/x: HTTP %{http_code} -> %{redirect_url}\n" "http://127.0.0.1:$SITES_PORT/old/page-50/x"

# bench_url NAME URL [HOST]: REPS wrk runs (in the namespace where $HOST is 127.0.0.1); medians.
bench_url() {
  local name="$1" url="$2" host="${3:-}" i raw="$WORK/wrk-$1.txt" hdr=""
  : > "$raw"
  [ -n "$host" ] && hdr="-H 'Host: $host'"
  # A short unrecorded run first: connections, caches and the CPU governor settle.
  unshare -m sh -c "mount --bind '$HOSTS' /etc/hosts && exec wrk -t2 -c64 -d2s $hdr '$url'" >/dev/null
  for i in $(seq "$REPS"); do
    timeout $((DURATION + 30)) unshare -m sh -c \
      "mount --bind '$HOSTS' /etc/hosts && exec wrk -t2 -c64 -d${DURATION}s --latency $hdr '$url'" >> "$raw"
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
    print("  %-18s run %d: %9.0f req/s  p50 %.2f ms  p99 %.2f ms%s" % (
        name, i, r["rps"], r["p50"], r["p99"], "  (ERRORS)" if r["err"] else ""))
med = statistics.median(x["rps"] for x in runs)
print("  %-18s MEDIAN of %d: %9.0f req/s" % (name, len(runs), med))
open(sys.argv[2] + ".median", "w").write("%f\n" % med)
PY
}
ratio() { python3 -c "import sys; a=float(open(sys.argv[1]).read()); b=float(open(sys.argv[2]).read()); print('%.2f' % (a/b))" "$WORK/wrk-$1.txt.median" "$WORK/wrk-$2.txt.median"; }

echo "== HTTPS: wrk -t2 -c64 -d${DURATION}s --latency https://$HOST:<port>/..., $REPS runs each"
bench_url nginx-tls-index "https://$HOST:$NGINX_PORT/index.html"
bench_url opusd-tls-index "https://$HOST:$TLS_PORT/index.html"
bench_url nginx-tls-asset "https://$HOST:$NGINX_PORT/$ASSET"
bench_url opusd-tls-asset "https://$HOST:$TLS_PORT/$ASSET"
echo "== 50 redirect rules: wrk -t2 -c64 -d${DURATION}s over plain HTTP, /index.html, $REPS runs each"
bench_url opusd-no-rules "http://127.0.0.1:$SITES_PORT/index.html" web.localhost
bench_url opusd-50-rules "http://127.0.0.1:$SITES_PORT/index.html" rules.localhost

echo "== opusd / nginx requests/s over HTTPS (target: >= 1.00)"
echo "  index.html:     $(ratio opusd-tls-index nginx-tls-index)"
echo "  100 KB asset:   $(ratio opusd-tls-asset nginx-tls-asset)"
echo "== requests/s with 50 redirect rules / without (1.00: no cost)"
echo "  index.html:     $(ratio opusd-50-rules opusd-no-rules)"
