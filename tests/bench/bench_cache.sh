#!/usr/bin/env bash
# Runs bench_cache against throwaway Redis and PostgreSQL (started by
# scripts/servers.sh unless SOPHIA_REDIS_URL / SOPHIA_PG_URL are set).
# Usage: BENCH_CACHE=path/to/bench_cache bench_cache.sh [--quick]
#
# --compress runs bench_cache_zstd instead (BENCH_CACHE_ZSTD, default
# beside BENCH_CACHE): compression in L2/L3 on the records the bundled
# processors cache from tests/data's samples (extracted here with
# sophia-plugin-test from the same build tree) and on 10 KB documents.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../scripts/servers.sh"
sophia_servers_start >/dev/null
if [[ "${1:-}" != --compress ]]; then
  "${BENCH_CACHE:?set BENCH_CACHE to the bench_cache binary}" "$@" 2>/dev/null
  exit
fi
shift
zbench=${BENCH_CACHE_ZSTD:-$(dirname "${BENCH_CACHE:?set BENCH_CACHE or BENCH_CACHE_ZSTD}")/bench_cache_zstd}
build=$(cd "$(dirname "$zbench")/../.." && pwd)
data=$here/../data
records=$(mktemp)
trap 'rm -f "$records"' EXIT
# Each processor on its samples; every cache_put's value, one per line.
for pair in crm:crm_updates crm:crm_hubspot_ooo crm:crm_salesforce_cdc \
  gong:gong_calls slack:slack_events snowflake:snowflake_cdc \
  snowflake:snowflake_flips metrics:metrics; do
  "$build/tools/sophia-plugin-test" "$build/plugins/${pair%%:*}.so" \
    <"$data/${pair#*:}.ndjson" 2>/dev/null || true
done | node -e '
  const lines = require("fs").readFileSync(0, "utf8").split("\n");
  for (const l of lines) {
    if (!l) continue;
    const a = JSON.parse(l);
    if (a.action === "cache_put") console.log(JSON.stringify(a.value));
  }' >"$records"
"$zbench" --records "$records" "$@"
