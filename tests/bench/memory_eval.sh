#!/usr/bin/env bash
# memory_eval.sh - the bench target's way to run memory_eval.mjs: against
# SOPHIA_PG_URL when it is set, else a throwaway PostgreSQL from
# scripts/servers.sh (stopped when this script ends). No Redis: the memory
# store does not use it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export SOPHIA_REDIS_URL=
# shellcheck source=../../scripts/servers.sh
source "$here/../../scripts/servers.sh"
sophia_servers_start
node "$here/memory_eval.mjs" "$@"
