#!/usr/bin/env bash
# Runs bench_cache against throwaway Redis and PostgreSQL (started by
# scripts/servers.sh unless SOPHIA_REDIS_URL / SOPHIA_PG_URL are set).
# Usage: BENCH_CACHE=path/to/bench_cache bench_cache.sh [--quick]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../scripts/servers.sh"
sophia_servers_start >/dev/null
"${BENCH_CACHE:?set BENCH_CACHE to the bench_cache binary}" "$@" 2>/dev/null
