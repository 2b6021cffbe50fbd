#!/usr/bin/env bash
# HTTP request rate and latency of sophiad's single loop thread (its own
# HTTP/1.1 front door on libevent, core/http/http.h; lws on the bridged libuv
# loop serves only /ws) next to nginx serving a static file on the same
# machine, both measured here with wrk.
set -euo pipefail
: "${SOPHIAD:?path to sophiad}" "${SOPHIA_PLUGIN_DIR:?plugin dir}"
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { echo "bench/http: needs $tool (apt-get install $tool)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'kill "${spid:-}" "${npid:-}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

sp=$(free_port)
cat >"$tmp/sophia.yaml" <<YAML
log:
  level: error
plugins:
  path: ["$SOPHIA_PLUGIN_DIR"]
YAML
SOPHIA_REDIS_URL= SOPHIA_PG_URL= "$SOPHIAD" -c "$tmp/sophia.yaml" --listen "127.0.0.1:$sp" 2>"$tmp/sophiad.log" &
spid=$!

np=$(free_port)
mkdir -p "$tmp/www"
echo '{"status":"ok"}' >"$tmp/www/healthz"
cat >"$tmp/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  server { listen 127.0.0.1:$np; root $tmp/www; }
}
NGINX
nginx -c "$tmp/nginx.conf" -p "$tmp" &
npid=$!
sleep 0.5

run() { wrk -t1 -c"$2" -d5s --latency "$1" | awk '/Requests\/sec/{r=$2} / 50%/{p50=$2} / 99%/{p99=$2} END{printf "%12s %10s %10s", r, p50, p99}'; }
printf '%-34s %12s %10s %10s\n' "GET, 5 s, wrk -t1" "req/s" "p50" "p99"
for c in 1 32; do
  s=$(run "http://127.0.0.1:$sp/healthz" "$c")
  n=$(run "http://127.0.0.1:$np/healthz" "$c")
  printf '%-34s %s\n' "sophiad /healthz, $c conn" "$s"
  printf '%-34s %s\n' "nginx static file, $c conn" "$n"
  awk -v a="$(echo "$s" | awk '{print $1}')" -v b="$(echo "$n" | awk '{print $1}')" \
    'BEGIN{printf "%-34s %12.2f\n", "  ratio sophiad/nginx", a/b}'
done
