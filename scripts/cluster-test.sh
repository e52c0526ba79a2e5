#!/usr/bin/env bash
# Replicas behind a real load balancer, with a rolling restart under load:
# 3 `gemma serve` replicas on loopback addresses 127.0.0.2-4 behind nginx
# (Debian's package, installed if missing) on 127.0.0.1; scripts/load-test
# drives streaming greedy requests through nginx before, during and after a
# rolling restart (SIGTERM one replica, wait for it to drain and exit, start
# it again, wait for /health, next). Requires 0 failed requests and every
# response identical to the same request alone; prints throughput and p95
# latency per phase. Not part of CI (minutes of load).
#   scripts/cluster-test.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
MODEL="${1:-$(scripts/fetch-model.sh)}"
command -v nginx >/dev/null || { echo "installing Debian's nginx..." >&2; apt-get install -y -q nginx >/dev/null; }
cargo build --release -q -p gemma-cli
DIR=$(mktemp -d /tmp/gemma-cluster.XXXX)
RPORT=$(free_port)
LBPORT=$(free_port)
HOSTS=(127.0.0.2 127.0.0.3 127.0.0.4)
declare -A PIDS
start_replica() { # HOST
  target/release/gemma serve -m "$MODEL" --host "$1" --port "$RPORT" --threads 1 --drain-delay 2 --shutdown-grace 60 \
    2>>"$DIR/replica-$1.log" &
  PIDS[$1]=$!
}
wait_healthy() { # HOST
  for _ in $(seq 1 200); do curl -fs "http://$1:$RPORT/health" >/dev/null && return 0; sleep 0.1; done
  echo "FAILED: replica $1 did not become healthy" >&2; cat "$DIR/replica-$1.log" >&2; return 1
}
LOADPID=
cleanup() {
  touch "$DIR/restarted" 2>/dev/null || true # ends the load loop if a failure cut the restart short
  [ -n "$LOADPID" ] && kill "$LOADPID" 2>/dev/null || true
  [ -f "$DIR/nginx.pid" ] && kill "$(cat "$DIR/nginx.pid")" 2>/dev/null || true
  for h in "${HOSTS[@]}"; do kill "${PIDS[$h]:-0}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
for h in "${HOSTS[@]}"; do start_replica "$h"; done
for h in "${HOSTS[@]}"; do wait_healthy "$h"; done

# nginx: least-connections balancing; a replica that refuses connections
# (restarting) or answers 502/503 is skipped and the request retried on the
# next one (also POSTs: nothing was generated yet); streaming unbuffered.
cat > "$DIR/nginx.conf" <<NGINX
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/nginx-error.log warn;
events { worker_connections 256; }
http {
  log_format up '\$request_uri \$status upstream=\$upstream_addr statuses=\$upstream_status';
  access_log $DIR/nginx-access.log up;
  client_body_temp_path $DIR/body; proxy_temp_path $DIR/proxy; fastcgi_temp_path $DIR/fcgi;
  uwsgi_temp_path $DIR/uwsgi; scgi_temp_path $DIR/scgi;
  upstream gemma {
    least_conn;
$(for h in "${HOSTS[@]}"; do echo "    server $h:$RPORT max_fails=1 fail_timeout=2s;"; done)
    keepalive 16;
  }
  server {
    listen 127.0.0.1:$LBPORT;
    location / {
      proxy_pass http://gemma;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
      proxy_next_upstream error timeout http_502 http_503 non_idempotent;
      proxy_next_upstream_tries 3;
    }
  }
}
NGINX
nginx -c "$DIR/nginx.conf" -p "$DIR"
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$LBPORT/health" >/dev/null && break; sleep 0.1; done
URL="http://127.0.0.1:$LBPORT"
LOAD=(scripts/load-test --url "$URL" --concurrency 4 --requests 3 --max-new-tokens 32 --timeout 120 --json)

echo "phase before: load through nginx ($URL) to 3 replicas"
"${LOAD[@]}" > "$DIR/before.json"

echo "phase during: rolling restart under load"
# The load runs in rounds until the restart is over (at least two rounds).
: > "$DIR/during.json"
(
  rounds=0
  while [ ! -e "$DIR/restarted" ] || [ $rounds -lt 2 ]; do
    "${LOAD[@]}" >> "$DIR/during.json" || echo failed > "$DIR/load-failed"
    rounds=$((rounds + 1))
  done
  echo "  $rounds load rounds ran during the restart" >&2
) &
LOADPID=$!
FAILED=0
for h in "${HOSTS[@]}"; do
  sleep 2
  kill -TERM "${PIDS[$h]}"
  if wait "${PIDS[$h]}"; then
    echo "  $h drained and exited 0; restarting" >&2
  else
    echo "FAILED: replica $h exited with $? after SIGTERM" >&2
    FAILED=1
  fi
  start_replica "$h"
  wait_healthy "$h"
done
touch "$DIR/restarted"
wait $LOADPID
[ -e "$DIR/load-failed" ] && FAILED=1
# Requests nginx sent to a second replica (the first refused: it was restarting).
RETRIED=$(grep -c 'upstream=[^ ]*, ' "$DIR/nginx-access.log" || true)
echo "  nginx retried $RETRIED requests on another replica; per replica: $(grep -o 'upstream=[^ ,]*' "$DIR/nginx-access.log" | sort | uniq -c | tr '\n' ' ')"

echo "phase after"
"${LOAD[@]}" > "$DIR/after.json"
python3 - "$DIR" "$FAILED" <<'PY'
import json, sys
d, failed = sys.argv[1], sys.argv[2] == "1"
print("\n| phase | requests | failed | differ from alone | aggregate tok/s | TTFT p95 (ms) | inter-token p95 (ms) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
bad = failed
for phase in ["before", "during", "after"]:
    rows = [r for line in open(f"{d}/{phase}.json") if line.strip() for r in json.loads(line)]
    n = sum(r["requests"] for r in rows)
    err = sum(r["errors"] for r in rows)
    mis = sum(r["mismatches"] for r in rows)
    tps = sum(r["aggregate_tps"] for r in rows) / max(len(rows), 1)
    ttft = max(r["ttft_p95_ms"] for r in rows)
    itl = max(r["itl_p95_ms"] for r in rows)
    bad |= err > 0 or mis > 0 or n == 0
    print(f"| {phase} | {n} | {err} | {mis} | {tps:.1f} | {ttft:.0f} | {itl:.1f} |")
print("\n(each load round first sends every prompt alone through nginx as the reference, then 4 concurrent clients x 3 requests; p95 is the worst round's)")
if bad:
    print("FAILED: failed requests, mismatches or a replica that did not exit 0")
    sys.exit(1)
print("cluster test OK: 0 failed requests, every response identical to the request alone")
PY
