#!/usr/bin/env bash
# timeline - where a POST's latency goes with the tiers, in sophiad and in
# the durable floor: the issue-18 p50 target, taken apart.
#
# ingest.mjs gives the p50 from the client's side; this says which part
# of the path it is. Each server runs config/sophia.yaml's tiers
# (sophiad) or `floor_server --redis` on the same throwaway Redis, under
# instr_load.mjs (one subscriber, 50-point POSTs one at a time, 10 ms
# apart), while perf records its syscalls: timeline.mjs then splits each
# POST at its reads and writes (parse, the append's round trip, the
# processing, the write-back journal's round trip, commit and publish).
# Redis's own time per POST comes from INFO commandstats over the same
# POSTs: what each round trip waits for on the Redis side.
#
# Needs perf and the permission to trace syscalls (root, or
# kernel.perf_event_paranoid <= -1), and a Redis on 127.0.0.1 without a
# password (scripts/servers.sh starts one when SOPHIA_REDIS_URL is unset).
#
# Usage: SOPHIAD=build/core/sophiad SOPHIA_PLUGIN_DIR=build/plugins \
#        FLOOR_SERVER=build/tests/bench/floor_server \
#        tests/bench/timeline.sh [--posts 200]
set -euo pipefail
: "${SOPHIAD:?path to sophiad}" "${SOPHIA_PLUGIN_DIR:?plugin dir}" "${FLOOR_SERVER:?path to floor_server}"
command -v perf >/dev/null || { echo "bench/timeline: needs perf" >&2; exit 1; }
root=$(cd "$(dirname "$0")/../.." && pwd)
posts=200
while (($#)); do
  case $1 in
    --posts) posts=$2; shift ;;
    *) echo "bench/timeline: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
tmp=$(mktemp -d /tmp/bench-timeline-XXXXXX)
# shellcheck source=scripts/servers.sh
source "$root/scripts/servers.sh"
sophia_servers_start
[[ -n ${SOPHIA_REDIS_URL:-} ]] || { echo "bench/timeline: needs Redis (SOPHIA_REDIS_URL is empty)" >&2; exit 1; }
# shellcheck source=tests/bench/shipped_config.sh
source "$root/tests/bench/shipped_config.sh"
bench_shipped_config "$root" "$SOPHIA_PLUGIN_DIR" "$tmp" >"$tmp/sophia.yaml"
rport=$(node -e 'console.log(new URL(process.argv[1]).port)' "$SOPHIA_REDIS_URL")
rcli() { redis-cli -p "$rport" "$@"; }
spid=''
trap 'kill "$spid" 2>/dev/null || true; sophia_servers_stop' EXIT

wait_http() { # PORT PID PATH
  for _ in $(seq 300); do
    curl -s -o /dev/null -X "${4:-GET}" -H 'content-type: application/json' -d '[]' \
      "http://127.0.0.1:$1$3" && return 0
    kill -0 "$2" 2>/dev/null || { echo "bench/timeline: the server exited" >&2; exit 1; }
    sleep 0.1
  done
  echo "bench/timeline: the server did not answer" >&2; exit 1
}

# NAME PORT PID: the warm-up, then POSTS under perf, then the split.
measure() {
  local name=$1 port=$2 pid=$3 ppid
  coproc LOAD { node "$root/tests/bench/instr_load.mjs" "$port" "$posts" 20; }
  read -r _ <&"${LOAD[0]}"
  node "$root/tests/bench/timeline.mjs" --roles "$pid" >"$tmp/$name.roles"
  rcli CONFIG RESETSTAT >/dev/null
  perf record -q -o "$tmp/$name.data" -p "$pid" -e 'syscalls:sys_enter_read,syscalls:sys_enter_readv,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg' 2>"$tmp/$name.perf.log" &
  ppid=$!
  sleep 0.5 # perf attached
  echo go >&"${LOAD[1]}"
  read -r _ <&"${LOAD[0]}"
  kill "$LOAD_PID" 2>/dev/null || true # it waits on its stdin
  wait "$LOAD_PID" 2>/dev/null || true
  kill -INT "$ppid"
  wait "$ppid" || true
  rcli INFO commandstats >"$tmp/$name.cmdstats"
  echo "$name ($(cut -d' ' -f1-3 /proc/loadavg) load):"
  perf script -i "$tmp/$name.data" -F pid,time,event,trace 2>/dev/null |
    node "$root/tests/bench/timeline.mjs" "$pid" "$port" "$rport" "$tmp/$name.roles"
  # Redis's time per POST by command, the largest first (the XADDs an
  # EVAL runs are counted in both)
  tr -d '\r' <"$tmp/$name.cmdstats" |
    awk -F'[:,=]' -v n="$posts" '/^cmdstat_/ && $5 / n >= 1 {
      sub("cmdstat_", "", $1); printf "%.0f %s %.1f\n", $5 / n, $1, $3 / n }' |
    sort -rn | awk '{ s = s sep $2 " " $1 " (" $3 " calls)"; sep = ", " }
      END { print "  Redis, µs per POST: " s }'
}

# sophiad as shipped, settled
port=$(sophia__free_port)
"$SOPHIAD" -c "$tmp/sophia.yaml" --listen "127.0.0.1:$port" 2>"$tmp/sophiad.log" &
spid=$!
wait_http "$port" "$spid" /healthz
bench_wait_settled "$port"
measure sophiad "$port" "$spid"
kill "$spid"; wait "$spid" 2>/dev/null || true

port=$(sophia__free_port)
"$FLOOR_SERVER" "$port" --redis "$rport" 2>"$tmp/floor.log" &
spid=$!
wait_http "$port" "$spid" /ingest/metrics POST
measure floor "$port" "$spid"
