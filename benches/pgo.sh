#!/usr/bin/env bash
# A profile-guided (PGO) release build of the proxy. Three steps: a release
# build instrumented to count where its code runs; a training run of that
# build proxying real traffic to nginx backends (HTTP/1.1 and h2c, over
# TLS too, an HTTP/2 backend, header rules, cohorts, the access log); a
# release build that lays out and inlines its code by those counts. The
# hot path then fits the instruction cache better: see README.md,
# "Profile-guided build", for what it bought.
#
#   apt-get install -y nginx nghttp2-client curl python3 openssl llvm-NN
#   benches/pgo.sh    # -> target/pgo/release/switchyard-proxy
#
# NN is the major version of the LLVM that rustc uses (`rustc -vV`): the
# profile format changes between LLVM versions. The rustup component
# llvm-tools, when installed, is found as well. The build uses its own
# target directory (target/pgo), so it leaves target/release alone; the
# training traffic stays on 127.0.0.1 and every process started here is
# stopped by its PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in h2load nginx curl python3 openssl; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done

# llvm-profdata of rustc's own LLVM version, which alone reads the raw
# profiles the instrumented build writes.
llvm=$(rustc -vV | awk '/^LLVM version/ {split($3, v, "."); print v[1]}')
profdata=""
for candidate in "llvm-profdata-$llvm" llvm-profdata \
  "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata; do
  if command -v "$candidate" >/dev/null &&
    "$candidate" --version 2>/dev/null | grep -q "LLVM version $llvm\."; then
    profdata=$candidate
    break
  fi
done
[ -n "$profdata" ] || {
  echo "llvm-profdata for LLVM $llvm not found: apt-get install llvm-$llvm (or rustup component add llvm-tools)" >&2
  exit 1
}

target=$PWD/target/pgo
profiles=$target/profiles
bin=$target/release/switchyard-proxy
rm -rf "$profiles"
mkdir -p "$profiles"

echo "1/3 instrumented build" >&2
CARGO_TARGET_DIR=$target RUSTFLAGS="-Cprofile-generate=$profiles" \
  cargo build --release --quiet -p switchyard-proxy

echo "2/3 training run" >&2
# The build scripts were instrumented too and wrote profiles as they ran:
# only the proxy's own counts go into the merge.
rm -f "$profiles"/*.profraw
# shellcheck source=benches/nginx-backends.sh
source benches/nginx-backends.sh

# Code the training never runs is laid out and optimised as cold, so the
# training covers what a deployment runs, not only the benches' path: TLS
# from clients, an HTTP/2 backend, a header rule, sticky cohorts and the
# access log beside the plain 50/50 split (most of the requests, as in the
# benches).
tls_port=$spare
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
cat > "$dir/training.yaml" <<EOF
backends:
  blue: { endpoints: ["127.0.0.1:$blue"] }
  green: { endpoints: ["127.0.0.1:$green"] }
  multiplexed: { endpoints: ["127.0.0.1:$multiplexed"], protocol: http2 }
routes:
  - name: http2-backend
    rules:
      - matches: [{ path: { type: PathPrefix, value: /h2 } }]
        backend: multiplexed
  - name: sticky
    rules:
      - matches: [{ path: { type: PathPrefix, value: /cohort } }]
        split:
          weights: { blue: 90, green: 10 }
          cohort:
            from: "header:x-user-id"
            fallback: "cookie:sy-cohort"
            assign_cookie: { name: sy-cohort, max_age: 720h }
  - name: all
    rules:
      - matches: [{ headers: [{ name: x-canary, value: always }] }]
        backend: green
      - split: { weights: { blue: 50, green: 50 } }
EOF

# load REQUESTS URL H2LOAD_FLAGS...: REQUESTS requests to the proxy, all of
# which must succeed.
load() {
  local requests=$1 url=$2
  shift 2
  local succeeded
  succeeded=$(h2load "$@" -n "$requests" "$url" | awk '/^requests:/ {print $8}') || true
  [ "$succeeded" = "$requests" ] || {
    echo "training: $succeeded of $requests requests succeeded (h2load $* $url)" >&2
    exit 1
  }
}

# start_proxy PROXY_FLAGS...: an instrumented proxy (one worker, as in the
# benches) on the training table; sets pid.
start_proxy() {
  "$bin" run --table "$dir/training.yaml" --listen "127.0.0.1:$proxy" \
    --admin "127.0.0.1:$admin" --workers 1 "$@" >/dev/null 2>"$dir/proxy.log" &
  pid=$!
  pids+=("$pid")
  wait_ready "$pid" || exit 1
}

# The profile is written when the proxy exits, so it is stopped with
# SIGTERM (a graceful drain) and must exit with status 0.
stop_proxy() {
  kill -TERM "$pid"
  wait "$pid" || { echo "the instrumented proxy exited with status $?" >&2; exit 1; }
}

plain=http://127.0.0.1:$proxy
start_proxy --tls-listen "127.0.0.1:$tls_port" --tls-cert "$dir/cert.pem:$dir/key.pem"
load 300000 "$plain/" --h1 -c 64
load 200000 "$plain/" -c 16 -m 10
load 30000 "https://127.0.0.1:$tls_port/" --h1 -c 16
load 30000 "https://127.0.0.1:$tls_port/" -c 16 -m 10
load 30000 "$plain/" --h1 -c 16 -H "x-canary: always"
load 30000 "$plain/cohort" --h1 -c 16 -H "x-user-id: alice"
load 30000 "$plain/cohort" --h1 -c 16
load 30000 "$plain/h2" --h1 -c 16
stop_proxy
start_proxy --access-log
load 100000 "$plain/" --h1 -c 64
stop_proxy
"$profdata" merge -o "$profiles/merged.profdata" "$profiles"/*.profraw

echo "3/3 optimised build" >&2
CARGO_TARGET_DIR=$target RUSTFLAGS="-Cprofile-use=$profiles/merged.profdata" \
  cargo build --release --quiet -p switchyard-proxy
echo "$bin"
