#!/usr/bin/env bash
# consolidate.sh - runs consolidate.mjs (a full consolidation pass at
# 100k memories, or --n sizes) against SOPHIA_PG_URL when it is set, else
# a throwaway PostgreSQL from scripts/servers.sh (stopped when this script
# ends). No Redis: the memory store does not use it.
#   SOPHIAD=build/core/sophiad SOPHIA_PLUGIN_DIR=build/plugins \
#     tests/bench/consolidate.sh [--n 100000,1000000] [--batch 1000]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export SOPHIA_REDIS_URL=
# shellcheck source=../../scripts/servers.sh
source "$here/../../scripts/servers.sh"
sophia_servers_start
node "$here/consolidate.mjs" "$@"
