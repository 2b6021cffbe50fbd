# shellcheck shell=bash
# Throwaway Redis and PostgreSQL servers for scripts/run and scripts/test.
# Sourced, not executed: the servers must outlive this file and be stopped
# by the caller's EXIT trap, which this file installs.
#
#   source scripts/servers.sh
#   sophia_servers_start      # exports SOPHIA_REDIS_URL, SOPHIA_PG_URL, ...
#   ...                       # servers stop on exit, failure or Ctrl-C
#
# A server whose URL is already in the environment (SOPHIA_REDIS_URL,
# SOPHIA_PG_URL, even empty) is not started: that is how a developer points
# the daemon and the tests at a server of their own.
#
# Design choices:
# - Each run gets a fresh directory (mktemp -d) and fresh ports, so parallel
#   runs in different build dirs, or a system-wide server, never collide.
#   Ports are drawn below the kernel's ephemeral range (32768+), where no
#   outgoing connection can take one between our check and the bind, and a
#   start that still loses a race is retried on another port.
# - PostgreSQL's initdb refuses to run as root; as root the cluster belongs
#   to the `postgres` system user and every pg_* binary runs through runuser.
# - Durability is switched off (fsync, full_page_writes, Redis persistence):
#   these servers live for one run and speed matters more.
# - Tests restart the servers mid-run to check reconnection, so everything
#   needed to do that is exported: SOPHIA_REDIS_PORT, SOPHIA_REDIS_CONF
#   (`redis-server "$SOPHIA_REDIS_CONF"` starts it again), SOPHIA_PG_BIN,
#   SOPHIA_PG_DATA, SOPHIA_PG_PORT, SOPHIA_PG_LOG and SOPHIA_PG_RUNAS (the
#   user pg_ctl must run as, empty when it is the current user).
# - With SOPHIA_TEST_SLOTS=N (scripts/test sets 2), slots 1..N-1 get a Redis
#   of their own and a database of their own on the same PostgreSQL, under
#   the same names with a _<slot> suffix (SOPHIA_REDIS_URL_1, SOPHIA_PG_URL_1,
#   ...), so that ctest can run that many server tests at once, each on
#   servers nobody else writes to (tests/slot-env maps a test's slot back to
#   the plain names). SOPHIA_TEST_SLOTS_STARTED says how many there are: 1
#   when a server was given from outside, since we create nothing on it.

sophia__say() { printf 'servers: %s\n' "$*" >&2; }

# A TCP port on 127.0.0.1 that nothing listens on now.
sophia__free_port() {
  local port i
  for ((i = 0; i < 200; i++)); do
    port=$((20000 + RANDOM % 12000))
    if [[ -z "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]]; then
      echo "$port"
      return 0
    fi
  done
  sophia__say "no free port found"
  return 1
}

# Runs a command as the owner of the PostgreSQL cluster.
sophia__as_pg() {
  if [[ -n "${SOPHIA_PG_RUNAS:-}" ]]; then
    runuser -u "$SOPHIA_PG_RUNAS" -- "$@"
  else
    "$@"
  fi
}

sophia__pg_bindir() {
  local dir
  dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
    sort -V | tail -n 1)
  if [[ -z "$dir" || ! -x "$dir/initdb" ]]; then
    sophia__say "PostgreSQL server binaries not found under /usr/lib/postgresql: apt-get install postgresql"
    return 1
  fi
  echo "$dir"
}

# Polls a readiness command for up to 30 s.
sophia__wait_for() {
  local what=$1 i
  shift
  for ((i = 0; i < 300; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  sophia__say "$what did not become ready"
  return 1
}

# Waits for our Redis (that pid, not whichever server won a port race) to
# answer; gives up at once if it died.
sophia__wait_redis() {
  local port=$1 pid=$2 answer i
  for ((i = 0; i < 300; i++)); do
    sophia__alive "$pid" || return 1
    answer=$(redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null || true)
    if [[ "$answer" == *"process_id:$pid"* ]]; then return 0; fi
    sleep 0.1
  done
  return 1
}

# Starts the Redis of slot $1 (0 when absent): slot 0 exports the plain
# names, slot k the same names with _k.
sophia__start_redis() {
  local slot=${1:-0} sfx= dir port attempt
  ((slot == 0)) || sfx=_$slot
  dir=$SOPHIA_TEST_TMP/redis$sfx
  mkdir -p "$dir"
  for ((attempt = 0; attempt < 5; attempt++)); do
    port=$(sophia__free_port) || return 1
    cat >"$dir/redis.conf" <<EOF
port $port
bind 127.0.0.1
protected-mode yes
save ""
appendonly no
dir $dir
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
EOF
    # Not daemonized here, so that a lost port race shows as a dead pid at
    # once; setsid keeps it out of the terminal's Ctrl-C, which must reach
    # the daemon alone (it flushes to Redis on the way out). The file says
    # daemonize for tests that restart it with `redis-server FILE`.
    setsid redis-server "$dir/redis.conf" --daemonize no </dev/null >/dev/null 2>&1 &
    if sophia__wait_redis "$port" "$!"; then
      export "SOPHIA_REDIS_PORT$sfx=$port" "SOPHIA_REDIS_DIR$sfx=$dir"
      export "SOPHIA_REDIS_CONF$sfx=$dir/redis.conf"
      export "SOPHIA_REDIS_URL$sfx=redis://127.0.0.1:$port/0"
      SOPHIA__REDIS_STARTED+=" $port:$dir"
      return 0
    fi
    sophia__say "redis failed on port $port:"
    tail -n 5 "$dir/redis.log" >&2 || true
    sophia__stop_redis_pid "$dir/redis.pid"
    rm -f "$dir/redis.pid"
  done
  return 1
}

sophia__start_pg() {
  local bin root=$SOPHIA_TEST_TMP/pg port attempt
  bin=$(sophia__pg_bindir) || return 1
  export SOPHIA_PG_BIN=$bin
  SOPHIA_PG_RUNAS=
  mkdir -p "$root"
  if ((EUID == 0)); then
    SOPHIA_PG_RUNAS=postgres
    chown postgres: "$root"
  fi
  export SOPHIA_PG_RUNAS SOPHIA_PG_DATA=$root/data SOPHIA_PG_LOG=$root/postgres.log
  if ! sophia__as_pg test -w "$root"; then
    sophia__say "${SOPHIA_PG_RUNAS:-$(id -un)} cannot write $root; set TMPDIR to a directory it can reach"
    return 1
  fi
  # C.UTF-8 rather than C: full-text search must classify non-ASCII letters.
  if ! sophia__as_pg "$bin/initdb" -D "$SOPHIA_PG_DATA" -U postgres -A trust \
    -E UTF8 --locale=C.UTF-8 --no-sync >"$root/initdb.log" 2>&1; then
    sophia__say "initdb failed:"
    cat "$root/initdb.log" >&2
    return 1
  fi
  cat >>"$SOPHIA_PG_DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$root'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
  for ((attempt = 0; attempt < 5; attempt++)); do
    port=$(sophia__free_port) || return 1
    # In the file, not on pg_ctl's command line, so that a test restarting
    # the server with a plain `pg_ctl start` gets the same port. The last
    # setting wins, so a retry simply appends.
    echo "port = $port" >>"$SOPHIA_PG_DATA/postgresql.conf"
    if sophia__as_pg "$bin/pg_ctl" -D "$SOPHIA_PG_DATA" -l "$SOPHIA_PG_LOG" \
      -w -t 60 start >/dev/null; then
      SOPHIA__PG_STARTED=1
      sophia__wait_for "postgresql on port $port" \
        "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres || return 1
      "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres sophia || return 1
      export SOPHIA_PG_PORT=$port
      export SOPHIA_PG_URL=postgresql://postgres@127.0.0.1:$port/sophia
      return 0
    fi
    sophia__say "postgresql failed on port $port:"
    tail -n 5 "$SOPHIA_PG_LOG" >&2 || true
  done
  return 1
}

# kill -0 also succeeds on a zombie, which an exited daemon is until init
# reaps it; a zombie counts as gone.
sophia__alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n "$state" && "$state" != Z* ]]
}

sophia__stop_redis_pid() {
  local pidfile=$1 pid i
  [[ -f "$pidfile" ]] || return 0
  pid=$(cat "$pidfile" 2>/dev/null) || return 0
  [[ -n "$pid" ]] || return 0
  sophia__alive "$pid" || return 0
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    sophia__alive "$pid" || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

sophia__stop_pg_data() {
  local pid
  [[ -f "$SOPHIA_PG_DATA/postmaster.pid" ]] || return 0
  if ! sophia__as_pg "$SOPHIA_PG_BIN/pg_ctl" -D "$SOPHIA_PG_DATA" -m fast -w -t 20 \
    stop >/dev/null 2>&1; then
    pid=$(head -n 1 "$SOPHIA_PG_DATA/postmaster.pid" 2>/dev/null) || return 0
    if [[ -n "$pid" ]]; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
}

# Stops whatever sophia_servers_start started and removes its directory.
# Safe to call more than once, and with nothing started.
sophia_servers_stop() {
  local started=${SOPHIA__REDIS_STARTED:-} one
  SOPHIA__REDIS_STARTED=
  for one in $started; do
    redis-cli -h 127.0.0.1 -p "${one%%:*}" shutdown nosave >/dev/null 2>&1 || true
    sophia__stop_redis_pid "${one#*:}/redis.pid"
  done
  if [[ -n "${SOPHIA__PG_STARTED:-}" ]]; then
    SOPHIA__PG_STARTED=
    sophia__stop_pg_data
  fi
  if [[ -n "${SOPHIA__TMP_OWNED:-}" && -d "$SOPHIA_TEST_TMP" ]]; then
    SOPHIA__TMP_OWNED=
    rm -rf "$SOPHIA_TEST_TMP"
  fi
}

sophia__on_signal() {
  local status=$1
  trap - INT TERM
  sophia_servers_stop
  exit "$status"
}

# Starts the servers whose URL is not set yet; returns non-zero, having
# cleaned up, if one does not come up.
sophia_servers_start() {
  trap sophia_servers_stop EXIT
  trap 'sophia__on_signal 130' INT
  trap 'sophia__on_signal 143' TERM
  if [[ -z "${SOPHIA_TEST_TMP:-}" ]]; then
    SOPHIA_TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/sophia-test.XXXXXX")
    SOPHIA__TMP_OWNED=1
    # The postgres user must reach its cluster directory inside.
    chmod 755 "$SOPHIA_TEST_TMP"
  fi
  export SOPHIA_TEST_TMP
  if [[ -z "${SOPHIA_REDIS_URL+set}" ]]; then
    sophia__start_redis || { sophia_servers_stop; return 1; }
    sophia__say "redis $SOPHIA_REDIS_URL"
  else
    sophia__say "redis not started: SOPHIA_REDIS_URL=${SOPHIA_REDIS_URL}"
  fi
  if [[ -z "${SOPHIA_PG_URL+set}" ]]; then
    sophia__start_pg || { sophia_servers_stop; return 1; }
    sophia__say "postgresql $SOPHIA_PG_URL"
  else
    sophia__say "postgresql not started: SOPHIA_PG_URL=${SOPHIA_PG_URL}"
  fi
  sophia__start_slots || { sophia_servers_stop; return 1; }
}

# Slots 1..SOPHIA_TEST_SLOTS-1, only on servers of our own: a Redis each,
# and a database each on our PostgreSQL.
sophia__start_slots() {
  local want=${SOPHIA_TEST_SLOTS:-1} slot
  export SOPHIA_TEST_SLOTS_STARTED=1
  ((want > 1)) || return 0
  if [[ -z "${SOPHIA__PG_STARTED:-}" || -z "${SOPHIA__REDIS_STARTED:-}" ]]; then
    sophia__say "one server slot: a server came from outside"
    return 0
  fi
  for ((slot = 1; slot < want; slot++)); do
    sophia__start_redis "$slot" || return 1
    "$SOPHIA_PG_BIN/createdb" -h 127.0.0.1 -p "$SOPHIA_PG_PORT" -U postgres "sophia_$slot" || return 1
    export "SOPHIA_PG_URL_$slot=postgresql://postgres@127.0.0.1:$SOPHIA_PG_PORT/sophia_$slot"
  done
  SOPHIA_TEST_SLOTS_STARTED=$want
  sophia__say "$want server slots"
}
