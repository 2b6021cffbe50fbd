#!/usr/bin/env bash
# Correlation figures (README "Correlation"): correlated events/s through
# the correlators' dispatch and the `patterns` rules, against the bare
# dispatch in the same run, and RSS per open key at 100k keys; then, on a
# throwaway Redis (scripts/servers.sh; SOPHIA_REDIS_URL to use another),
# the same with per-key persistence and the loop's longest stall while
# 100k keys are written. Prints the load average with them: the figures
# mean little on a busy machine.
# Usage: tests/bench/correlate.sh [--quick]   (after a build in ./build)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${SOPHIA_BUILD_DIR:-$root/build}
cmake --build "$build" --target bench_correlate patterns >/dev/null
export SOPHIA_PG_URL=${SOPHIA_PG_URL-} # no PostgreSQL needed
source "$root/scripts/servers.sh"
sophia_servers_start 2>/dev/null
echo "load: $(uptime | sed 's/.*load average: //')"
"$build/tests/bench/bench_correlate" "$build/plugins" "$@"
echo "load: $(uptime | sed 's/.*load average: //')"
