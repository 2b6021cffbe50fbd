#!/usr/bin/env bash
# Correlation figures (README "Correlation"): correlated events/s through
# the correlators' dispatch and the `patterns` rules, against the bare
# dispatch in the same run, and RSS per open key at 100k keys. Prints the
# load average with them: the figures mean little on a busy machine.
# Usage: tests/bench/correlate.sh [--quick]   (after a build in ./build)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${SOPHIA_BUILD_DIR:-$root/build}
cmake --build "$build" --target bench_correlate patterns >/dev/null
echo "load: $(uptime | sed 's/.*load average: //')"
"$build/tests/bench/bench_correlate" "$build/plugins" "$@"
echo "load: $(uptime | sed 's/.*load average: //')"
