#!/usr/bin/env bash
# Instructions per request: the proxy's user-space instructions counted by
# callgrind over a fixed number of requests: HTTP/1.1, h2c, and HTTP/1.1
# with the access log on. Unlike
# CPU time on this shared box, the count repeats to about 0.1 %, so it can
# tell a 1 % change apart; it does not see the kernel, nor cache misses.
#
#   apt-get install -y valgrind nghttp2-client nginx
#   cargo build --release -p switchyard-proxy
#   benches/instructions.sh [PROXY_BIN] [REQUESTS]
#
# Two nginx backends and the proxy (one worker, a 50/50 split) run on
# 127.0.0.1; h2load sends 2,000 requests to warm up, the counters are
# zeroed, then REQUESTS (default 20,000) are counted. Every process started
# here is stopped by its PID on exit.
set -euo pipefail

bin=${1:-target/release/switchyard-proxy}
requests=${2:-20000}
for tool in valgrind callgrind_control callgrind_annotate h2load nginx curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "$bin not found: cargo build --release -p switchyard-proxy" >&2; exit 1; }

# shellcheck source=benches/nginx-backends.sh
source "$(dirname "$0")/nginx-backends.sh"

# count NAME LABEL "PROXY_FLAGS" H2LOAD_FLAGS...: the instructions of
# REQUESTS requests sent with those h2load flags, in a fresh proxy (run with
# those extra flags) under callgrind. The proxy's stdout (the access log)
# goes to /dev/null, as in the load bench.
count() {
  local name=$1 label=$2 proxy_flags=$3
  shift 3
  local out="$dir/callgrind.$name"
  # shellcheck disable=SC2086 # the extra flags are words on purpose
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" run \
    --table "$dir/table.yaml" --listen "127.0.0.1:$proxy" --admin "127.0.0.1:$admin" \
    --workers 1 $proxy_flags >/dev/null 2>"$dir/proxy.$name.log" &
  local pid=$!
  pids+=("$pid")
  wait_ready "$pid" || exit 1
  h2load "$@" -n 2000 "http://127.0.0.1:$proxy/" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  local succeeded
  succeeded=$(h2load "$@" -n "$requests" "http://127.0.0.1:$proxy/" | awk '/^requests:/ {print $8}')
  [ "$succeeded" = "$requests" ] || { echo "$label: $succeeded of $requests requests succeeded" >&2; exit 1; }
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  local total
  total=$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "$label: $((total / requests)) instructions per request ($total over $requests requests)"
}

count http1 "HTTP/1.1 (h2load --h1 -c64)" "" --h1 -c 64
count h2c "h2c (h2load -c16 -m10)" "" -c 16 -m 10
count access-log "HTTP/1.1 with --access-log" "--access-log" --h1 -c 64
