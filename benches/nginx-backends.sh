# shellcheck shell=bash
# Sourced by benches/instructions.sh and benches/pgo.sh: nginx backends on
# free 127.0.0.1 ports answering "ok" to every GET (blue and green over
# HTTP/1.1, multiplexed over h2c with prior knowledge), a 50/50 table for
# blue and green, and free ports for the proxy and its admin listener.
# Sets dir (a temporary directory), blue, green, multiplexed, proxy, admin,
# spare (one more free port, for a caller's second listener) and pids; on
# exit every process in pids is stopped by its PID and dir is removed. The
# caller adds its own processes to pids.

dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# free_ports N: N distinct free ports on 127.0.0.1, on one line.
free_ports() {
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])' "$1"
}
# shellcheck disable=SC2034 # proxy, multiplexed and spare are the callers'
read -r blue green multiplexed proxy admin spare < <(free_ports 6)

cat > "$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  server { listen 127.0.0.1:$blue; keepalive_requests 1000000; location / { return 200 "ok"; } }
  server { listen 127.0.0.1:$green; keepalive_requests 1000000; location / { return 200 "ok"; } }
  server { listen 127.0.0.1:$multiplexed http2; keepalive_requests 1000000; location / { return 200 "ok"; } }
}
EOF
cat > "$dir/table.yaml" <<EOF
backends:
  blue: { endpoints: ["127.0.0.1:$blue"] }
  green: { endpoints: ["127.0.0.1:$green"] }
routes:
  - name: all
    rules:
      - split: { weights: { blue: 50, green: 50 } }
EOF
nginx -c "$dir/nginx.conf" >/dev/null 2>&1 </dev/null &
pids+=($!)

# wait_ready PID: waits (up to a minute: a proxy under valgrind is slow to
# start) until the proxy's admin listener answers /ready; fails if PID
# exits first.
wait_ready() {
  for _ in $(seq 300); do
    curl -sf "127.0.0.1:$admin/ready" >/dev/null && return 0
    kill -0 "$1" 2>/dev/null || { echo "the proxy exited before it was ready" >&2; return 1; }
    sleep 0.2
  done
  echo "the proxy did not become ready" >&2
  return 1
}
